//! Hooks of a backup job: argument lists run before the backup, after it,
//! and when it failed (`hooks = { before = [...], after = [...],
//! on_failure = [...] }` in a `[[jobs]]` entry).
//!
//! - Each hook is a program and its arguments, run without a shell (name one
//!   to get one: `["sh", "-c", "..."]`), with standard input closed, in its
//!   own process group; its standard output and error go to the agent's log
//!   line by line.
//! - Environment: `STRATA_JOB` (the job's name), `STRATA_STATUS` (`running`
//!   for `before`, then `success` or `failure`), `STRATA_SNAPSHOT_ID` (the
//!   new snapshot's id, empty without one) and `STRATA_SUMMARY_FILE` (a
//!   file holding the run's JSON summary, removed after the hooks ran; not
//!   set for `before`).
//! - Each hook may run for `hook_timeout` (default 5 minutes); then its
//!   process group is killed and the hook counts as failed.
//! - `before` hooks run in order; the first that fails (non-zero exit, a
//!   signal, the timeout, or a program that cannot start) fails the run:
//!   no backup, no `after` hooks, and the `on_failure` hooks run.
//! - `after` hooks run after every backup that was attempted, successful
//!   or not (`STRATA_STATUS` says which); one that fails turns the run into
//!   a failure (the snapshot, if saved, stays).
//! - `on_failure` hooks run, all of them, when the run failed.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The default of `hook_timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// `hooks = { before = [...], after = [...], on_failure = [...] }`.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Run in order before the backup; the first failure fails the run.
    #[serde(default)]
    pub before: Vec<Vec<String>>,
    /// Run after the backup, whatever its outcome.
    #[serde(default)]
    pub after: Vec<Vec<String>>,
    /// Run when the run failed (a `before` hook, the backup, or an `after`
    /// hook).
    #[serde(default)]
    pub on_failure: Vec<Vec<String>>,
}

impl Hooks {
    /// Checks that every hook names a program; the error names the list.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (stage, list) in self.stages() {
            if let Some(i) = list.iter().position(|h| h.is_empty() || h[0].is_empty()) {
                return Err(format!(
                    "field `hooks.{stage}`: hook {} must be an argument list naming a program, e.g. [\"/usr/local/bin/notify\", \"done\"]",
                    i + 1
                ));
            }
        }
        Ok(())
    }

    /// True when no hook is set.
    pub fn is_empty(&self) -> bool {
        self.stages().iter().all(|(_, l)| l.is_empty())
    }

    fn stages(&self) -> [(&'static str, &Vec<Vec<String>>); 3] {
        [
            ("before", &self.before),
            ("after", &self.after),
            ("on_failure", &self.on_failure),
        ]
    }
}

/// What a hook is told about the run.
pub struct HookEnv<'a> {
    /// `STRATA_JOB`.
    pub job: &'a str,
    /// `STRATA_STATUS`.
    pub status: &'a str,
    /// `STRATA_SNAPSHOT_ID` (empty when there is none).
    pub snapshot_id: &'a str,
    /// `STRATA_SUMMARY_FILE`.
    pub summary_file: Option<&'a Path>,
}

/// Runs the hooks of one stage in order. With `stop_at_failure` the first
/// failure ends the stage; otherwise every hook runs. Returns the first
/// failure.
pub fn run_stage(
    stage: &str,
    hooks: &[Vec<String>],
    env: &HookEnv<'_>,
    timeout: Duration,
    stop_at_failure: bool,
) -> Result<()> {
    let mut first = None;
    for (i, argv) in hooks.iter().enumerate() {
        if let Err(e) = run_hook(stage, i + 1, argv, env, timeout) {
            tracing::error!(job = %env.job, hook = stage, "{}", crate::error::one_line(&e));
            if first.is_none() {
                first = Some(e);
            }
            if stop_at_failure {
                break;
            }
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Runs one hook to its end or its timeout.
fn run_hook(
    stage: &str,
    n: usize,
    argv: &[String],
    env: &HookEnv<'_>,
    timeout: Duration,
) -> Result<()> {
    let Some((program, args)) = argv.split_first() else {
        bail!("{stage} hook {n} is empty");
    };
    let what = format!("{stage} hook {n} ({program:?})");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("STRATA_JOB", env.job)
        .env("STRATA_STATUS", env.status)
        .env("STRATA_SNAPSHOT_ID", env.snapshot_id)
        .process_group(0);
    match env.summary_file {
        Some(f) => cmd.env("STRATA_SUMMARY_FILE", f),
        None => cmd.env_remove("STRATA_SUMMARY_FILE"),
    };
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{what} cannot start; check the program's path"))?;
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<()>();
    let mut readers = 0;
    for (out, is_err) in [
        (
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            false,
        ),
        (
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            true,
        ),
    ] {
        let Some(out) = out else { continue };
        let (job, hook, done) = (env.job.to_string(), stage.to_string(), done_tx.clone());
        let spawned = std::thread::Builder::new()
            .name("strata-hook-output".into())
            .spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    match is_err {
                        false => tracing::info!(job = %job, hook = %hook, "{line}"),
                        true => tracing::warn!(job = %job, hook = %hook, "{line}"),
                    }
                }
                let _ = done.send(());
            });
        if spawned.is_ok() {
            readers += 1;
        }
    }
    drop(done_tx);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() >= timeout {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let pid = child.id() as libc::pid_t;
    // The hook's process group: whatever it started in the background is
    // stopped too (on a timeout), and holds no pipe open.
    // SAFETY: kill(2) on a process group this function created.
    let kill_group = || unsafe {
        libc::kill(-pid, libc::SIGKILL);
    };
    let Some(status) = status else {
        kill_group();
        let _ = child.wait();
        bail!(
            "{what} did not finish within {}s (hook_timeout) and was killed",
            timeout.as_secs_f64()
        );
    };
    // Let the last output lines reach the log, without waiting for
    // background processes the hook left running.
    let until = Instant::now() + Duration::from_secs(1);
    for _ in 0..readers {
        if done_rx
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .is_err()
        {
            break;
        }
    }
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    tracing::debug!(job = %env.job, hook = stage, "{what} done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// A private temporary file holding a run's JSON summary, removed when
/// dropped.
pub struct SummaryFile {
    path: PathBuf,
}

impl SummaryFile {
    /// Writes `json` to a new file (mode 0600) in the temporary directory.
    pub fn write(job: &str, json: &serde_json::Value) -> Result<SummaryFile> {
        let path = std::env::temp_dir().join(format!(
            "strata-{job}-{}-{:016x}.json",
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create the summary file {}", path.display()))?;
        let file = SummaryFile { path };
        f.write_all(&serde_json::to_vec_pretty(json)?)
            .and_then(|_| f.write_all(b"\n"))
            .with_context(|| format!("cannot write {}", file.path.display()))?;
        Ok(file)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SummaryFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HookEnv<'static> {
        HookEnv {
            job: "j",
            status: "success",
            snapshot_id: "abc",
            summary_file: None,
        }
    }

    #[test]
    fn exit_codes_timeouts_and_missing_programs() {
        let t = Duration::from_secs(5);
        let ok = vec!["true".to_string()];
        let bad = vec!["false".to_string()];
        assert!(run_stage("after", std::slice::from_ref(&ok), &env(), t, true).is_ok());
        let e = run_stage("before", &[ok.clone(), bad], &env(), t, true).unwrap_err();
        assert!(e.to_string().contains("before hook 2"), "{e}");
        let missing = vec!["/nonexistent/hook".to_string()];
        let e = run_stage("after", &[missing], &env(), t, false).unwrap_err();
        assert!(e.to_string().contains("cannot start"), "{e}");
        // A shell that leaves a child behind: the whole group is killed.
        let slow = ["sh", "-c", "sleep 30 & sleep 30"]
            .map(String::from)
            .to_vec();
        let started = Instant::now();
        let e = run_stage("before", &[slow], &env(), Duration::from_millis(300), true).unwrap_err();
        assert!(e.to_string().contains("hook_timeout"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn empty_hooks_are_refused() {
        let h = Hooks {
            after: vec![vec![]],
            ..Default::default()
        };
        assert!(h.validate().unwrap_err().contains("hooks.after"));
    }
}
