//! Running one job: a backup (then its retention policy), a prune or a
//! check, through the same library calls as the CLI commands.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};

use super::config::{CheckJob, JobConfig, PruneJob};
use super::hooks::{self, HookEnv, SummaryFile};
use super::notify::{self, NotifyConfig, NotifyEvent};
use super::schedule::Schedule;
use crate::backup::{BackupOptions, Source, run_backup};
use crate::config::ConfigFile;
use crate::maintenance::check::{ReadData, check};
use crate::maintenance::prune::{PruneOptions, prune};
use crate::maintenance::retention::{Grouping, apply};
use crate::repo::{OnDamage, Repository};
use crate::session::{Ctx, default_threads};
use crate::store::RequestCounts;

/// What a job does.
#[derive(Debug, Clone)]
pub enum Task {
    /// A backup, then its retention policy.
    Backup(Box<JobConfig>),
    /// `prune`.
    Prune(PruneJob),
    /// `check`, optionally reading a share of the data.
    Check(CheckJob),
}

/// A scheduled job.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Unique name (the prune and check jobs are named `prune` and `check`).
    pub name: String,
    /// What it does.
    pub task: Task,
    /// When it runs.
    pub schedule: Schedule,
    /// Up to this much random delay per run.
    pub jitter: Duration,
    /// Run once at start-up when a scheduled run was missed.
    pub run_missed: bool,
    /// The `[[agent.notify]]` entries that want this job's runs.
    pub notify: Vec<NotifyConfig>,
}

impl JobSpec {
    /// `backup`, `prune` or `check` (a metrics label).
    pub fn kind(&self) -> &'static str {
        match self.task {
            Task::Backup(_) => "backup",
            Task::Prune(_) => "prune",
            Task::Check(_) => "check",
        }
    }
}

/// The notification entries that apply to job `name`.
fn notify_for(agent: &super::config::AgentConfig, name: &str) -> Vec<NotifyConfig> {
    agent
        .notify
        .iter()
        .filter(|n| n.jobs.is_empty() || n.jobs.iter().any(|j| j == name))
        .cloned()
        .collect()
}

/// The jobs a config describes.
pub fn specs(file: &ConfigFile) -> Result<Vec<JobSpec>> {
    let agent = file.agent.clone().unwrap_or_default();
    let mut out = Vec::new();
    for job in file.jobs.as_deref().unwrap_or_default() {
        out.push(JobSpec {
            name: job.name().to_string(),
            schedule: job.schedule.clone(),
            jitter: job.jitter.unwrap_or_default().0,
            run_missed: job.run_missed.unwrap_or(agent.run_missed),
            notify: notify_for(&agent, job.name()),
            task: Task::Backup(Box::new(job.clone())),
        });
    }
    for (name, sched, jitter, task) in [
        agent
            .prune
            .clone()
            .map(|p| ("prune", p.schedule.clone(), p.jitter, Task::Prune(p))),
        agent
            .check
            .clone()
            .map(|c| ("check", c.schedule.clone(), c.jitter, Task::Check(c))),
    ]
    .into_iter()
    .flatten()
    {
        if out.iter().any(|j| j.name == name) {
            bail!(
                "a [[jobs]] entry is named {name:?}, the name of the [agent.{name}] job; rename it"
            );
        }
        out.push(JobSpec {
            name: name.into(),
            schedule: sched,
            jitter: jitter.unwrap_or_default().0,
            run_missed: false,
            notify: notify_for(&agent, name),
            task,
        });
    }
    Ok(out)
}

/// Figures of a finished backup.
#[derive(Debug, Clone, Default)]
pub struct BackupFigures {
    /// Source bytes read.
    pub bytes_read: u64,
    /// Bytes added to the repository.
    pub bytes_added: u64,
    /// Files in the snapshot.
    pub files: u64,
    /// Total size over duration, bytes per second.
    pub rate: f64,
    /// Source files that could not be read completely.
    pub warnings: u64,
}

/// What a successful run reports.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// One line for the log.
    pub message: String,
    /// For backups.
    pub backup: Option<BackupFigures>,
    /// The new snapshot's id (backups).
    pub snapshot_id: Option<String>,
    /// The backup's figures, as in `backup --json`'s summary.
    pub figures: Option<serde_json::Value>,
}

/// The JSON summary of a run, for hooks (`STRATA_SUMMARY_FILE`) and
/// notifications: job, kind, status, host, start, duration, snapshot id,
/// figures, message and error.
pub fn summary_json(
    spec: &JobSpec,
    host: &str,
    started: DateTime<Utc>,
    duration_s: f64,
    result: &Result<Outcome>,
) -> serde_json::Value {
    let (status, outcome, error) = match result {
        Ok(o) => ("success", Some(o), None),
        Err(e) => ("failure", None, Some(crate::error::one_line(e))),
    };
    serde_json::json!({
        "job": spec.name,
        "kind": spec.kind(),
        "status": status,
        "host": host,
        "started": started,
        "duration_s": duration_s,
        "snapshot_id": outcome.and_then(|o| o.snapshot_id.clone()),
        "figures": outcome.and_then(|o| o.figures.clone()),
        "message": outcome.map(|o| o.message.clone()),
        "error": error,
    })
}

/// The JSON summary of a run that did not happen (`status: missed`).
pub fn missed_json(spec: &JobSpec, host: &str, why: &str) -> serde_json::Value {
    serde_json::json!({
        "job": spec.name,
        "kind": spec.kind(),
        "status": "missed",
        "host": host,
        "started": Utc::now(),
        "duration_s": 0.0,
        "snapshot_id": null,
        "figures": null,
        "message": why,
        "error": null,
    })
}

/// Runs a job once with its hooks, then sends its notifications. Returns
/// its outcome and the requests it sent per store (also when it failed).
/// A backup updates `progress` as it goes.
pub fn run(
    spec: &JobSpec,
    ctx: &Ctx,
    host: &str,
    cancel: &Arc<AtomicBool>,
    progress: &Arc<crate::progress::Counters>,
) -> (Result<Outcome>, Vec<RequestCounts>) {
    let started = Utc::now();
    let clock = std::time::Instant::now();
    let hooks = match &spec.task {
        Task::Backup(job) => job
            .hooks
            .clone()
            .filter(|h| !h.is_empty())
            .map(|h| (h, job.hook_timeout.map_or(hooks::DEFAULT_TIMEOUT, |t| t.0))),
        _ => None,
    };
    let before = match &hooks {
        Some((h, timeout)) => {
            let env = HookEnv {
                job: &spec.name,
                status: "running",
                snapshot_id: "",
                summary_file: None,
            };
            hooks::run_stage("before", &h.before, &env, *timeout, true)
                .context("the backup did not run")
        }
        None => Ok(()),
    };
    let ran = before.is_ok();
    let (mut result, counts) = match before {
        Ok(()) => run_task(spec, ctx, host, cancel, progress),
        Err(e) => (Err(e), Vec::new()),
    };
    if let Some((h, timeout)) = &hooks {
        let stage = |stage: &str, list: &[Vec<String>], result: &Result<Outcome>| {
            let report = summary_json(spec, host, started, clock.elapsed().as_secs_f64(), result);
            let file = SummaryFile::write(&spec.name, &report)
                .map_err(|e| tracing::error!(job = %spec.name, "{}", crate::error::one_line(&e)))
                .ok();
            let id = result
                .as_ref()
                .ok()
                .and_then(|o| o.snapshot_id.clone())
                .unwrap_or_default();
            let env = HookEnv {
                job: &spec.name,
                status: if result.is_ok() { "success" } else { "failure" },
                snapshot_id: &id,
                summary_file: file.as_ref().map(|f| f.path()),
            };
            hooks::run_stage(stage, list, &env, *timeout, false)
        };
        if ran
            && !h.after.is_empty()
            && let Err(e) = stage("after", &h.after, &result)
            && let Ok(o) = &result
        {
            let saved = o
                .snapshot_id
                .as_deref()
                .map(|id| format!("snapshot {} saved, but ", &id[..8.min(id.len())]))
                .unwrap_or_default();
            result = Err(e.context(format!("{saved}an after hook failed")));
        }
        if result.is_err() && !h.on_failure.is_empty() {
            let _ = stage("on_failure", &h.on_failure, &result);
        }
    }
    if !spec.notify.is_empty() {
        let event = match result {
            Ok(_) => NotifyEvent::Success,
            Err(_) => NotifyEvent::Failure,
        };
        let report = summary_json(spec, host, started, clock.elapsed().as_secs_f64(), &result);
        notify::send(&spec.notify, &spec.name, event, &report);
    }
    (result, counts)
}

/// Runs the job's task (no hooks).
fn run_task(
    spec: &JobSpec,
    ctx: &Ctx,
    host: &str,
    cancel: &Arc<AtomicBool>,
    progress: &Arc<crate::progress::Counters>,
) -> (Result<Outcome>, Vec<RequestCounts>) {
    let backend = match ctx.backend() {
        Ok(b) => b,
        Err(e) => return (Err(e), Vec::new()),
    };
    let result = ctx
        .open_on(backend.clone())
        .and_then(|repo| match &spec.task {
            Task::Backup(job) => backup(&repo, job, host, cancel, ctx.compression, progress),
            Task::Prune(p) => run_prune(&repo, p),
            Task::Check(c) => run_check(&repo, c),
        });
    for n in backend
        .replicated()
        .map(|r| r.take_notices())
        .unwrap_or_default()
    {
        tracing::warn!(job = %spec.name, "{n}");
    }
    (result, backend.request_counts())
}

fn backup(
    repo: &Arc<Repository>,
    job: &JobConfig,
    host: &str,
    cancel: &Arc<AtomicBool>,
    compression: Option<crate::backup::CompressionSetting>,
    progress: &Arc<crate::progress::Counters>,
) -> Result<Outcome> {
    let source = match &job.command {
        Some(cmd) => Source::Stdin {
            name: job.stdin_file_name(),
            reader: Box::new(ChildReader::spawn(job.name(), cmd, cancel.clone())?),
        },
        None => Source::Paths(job.paths.clone()),
    };
    let opts = BackupOptions {
        time: None,
        source,
        mode: job.mode,
        tags: job.tags.clone(),
        host: host.to_string(),
        excludes: job.exclude_patterns()?,
        filters: job.filters(),
        compression: job.compression.or(compression).unwrap_or_default(),
        threads: job.threads.unwrap_or_else(default_threads),
        uploads: job
            .uploads
            .unwrap_or_else(|| repo.backend().default_uploads()),
        progress: progress.clone(),
        scan_totals: false,
        cancel: Some(cancel.clone()),
    };
    let report = run_backup(repo.clone(), opts)?;
    for w in &report.warnings {
        tracing::warn!(job = %job.name(), "{w}");
    }
    let s = &report.snapshot.summary;
    let figures = BackupFigures {
        bytes_read: s.bytes_read,
        bytes_added: s.data_added,
        files: s.files_new + s.files_changed + s.files_unmodified,
        rate: crate::report::rate(s.total_bytes, s.duration_s),
        warnings: report.warnings.len() as u64,
    };
    let figures_json = serde_json::json!({
        "files_new": s.files_new,
        "files_changed": s.files_changed,
        "files_unmodified": s.files_unmodified,
        "dirs": s.dirs,
        "bytes_read": s.bytes_read,
        "total_bytes": s.total_bytes,
        "data_added": s.data_added,
        "excluded": s.excluded,
        "total_duration_s": s.duration_s,
        "backup_rate_bytes_per_s": figures.rate,
        "mode": report.snapshot.mode,
        "parent": report.snapshot.parent.map(|p| p.to_hex()),
        "warnings": figures.warnings,
        "compression": s.compression,
    });
    let mut message = format!(
        "snapshot {} saved: {} files ({} new, {} changed), read {}, added {} in {:.1}s",
        report.snapshot_id.short(),
        figures.files,
        s.files_new,
        s.files_changed,
        crate::report::bytes(s.bytes_read),
        crate::report::bytes(s.data_added),
        s.duration_s
    );
    if let Some(r) = &job.retention {
        let removed = forget(repo, r, host, &report.snapshot.paths, &report.snapshot_id)
            .context("snapshot saved, but applying the retention policy failed")?;
        message.push_str(&format!("; retention removed {removed} snapshot(s)"));
    }
    Ok(Outcome {
        message,
        backup: Some(figures),
        snapshot_id: Some(report.snapshot_id.to_hex()),
        figures: Some(figures_json),
    })
}

/// Applies a job's retention policy to its snapshots (this host, these
/// paths); never removes `keep`. Returns how many were removed.
fn forget(
    repo: &Repository,
    retention: &super::config::Retention,
    host: &str,
    paths: &[String],
    keep: &crate::id::Id,
) -> Result<usize> {
    // As `strata forget`: decided on every pool member's listing, and
    // recorded, so a member that misses a delete does not bring the
    // snapshot back.
    repo.require_complete_views(None)?;
    let mut paths = paths.to_vec();
    paths.sort();
    let mine: Vec<_> = repo
        .snapshots(OnDamage::Refuse)?
        .objects
        .into_iter()
        .filter(|(_, s)| {
            let mut p = s.paths.clone();
            p.sort();
            s.hostname == host && p == paths
        })
        .collect();
    let decisions = apply(
        &mine,
        &retention.policy(),
        Grouping {
            host: true,
            paths: true,
            tags: false,
        },
    );
    let remove: Vec<crate::id::Id> = decisions
        .iter()
        .filter(|d| !d.keep && d.id != *keep)
        .map(|d| d.id)
        .collect();
    crate::maintenance::forget::forget_snapshots(repo, &remove)?;
    Ok(remove.len())
}

fn run_prune(repo: &Arc<Repository>, p: &PruneJob) -> Result<Outcome> {
    let opts = PruneOptions {
        max_unused_pct: p.max_unused.map_or(5.0, |v| v.0),
        grace: p.grace.map_or(Duration::from_secs(3600), |g| g.0),
        dry_run: false,
        finishing: false,
    };
    let r = prune(repo, &opts)?;
    let mut message = format!(
        "deleted {} packs ({}), marked {} ({}), repacked {}",
        r.packs_deleted,
        crate::report::bytes(r.bytes_freed),
        r.packs_marked,
        crate::report::bytes(r.bytes_marked),
        r.packs_repacked
    );
    for w in &r.waiting_reasons {
        message.push_str(&format!("; waiting: {w}"));
    }
    // Incomplete multipart uploads left by killed backups.
    match crate::maintenance::uploads::abort_stale(repo.backend().as_ref(), opts.grace, false) {
        Ok(u) if u.aborted > 0 => message.push_str(&format!(
            "; aborted {} incomplete multipart upload(s)",
            u.aborted
        )),
        Ok(_) => {}
        Err(e) => message.push_str(&format!(
            "; cannot list incomplete multipart uploads: {}",
            crate::error::one_line(&e)
        )),
    }
    Ok(Outcome {
        message,
        backup: None,
        ..Default::default()
    })
}

fn run_check(repo: &Repository, c: &CheckJob) -> Result<Outcome> {
    let read = match c.read_data_subset {
        Some(p) if p.0 > 0.0 => ReadData::Subset(p.0),
        _ => ReadData::None,
    };
    let r = check(repo, read)?;
    for w in &r.warnings {
        tracing::warn!(job = "check", "{w}");
    }
    for e in &r.errors {
        tracing::error!(job = "check", "{e}");
    }
    if !r.errors.is_empty() {
        bail!(
            "check found {} error(s): the repository is damaged",
            r.errors.len()
        );
    }
    Ok(Outcome {
        message: format!(
            "checked {} snapshots, {} trees, {} packs ({} read, {} blobs verified): no errors",
            r.snapshots, r.trees, r.packs, r.packs_read, r.blobs_read
        ),
        backup: None,
        ..Default::default()
    })
}

/// When each backup job last saved a snapshot (its host and paths), for
/// catching up missed runs.
pub fn last_backups(
    repo: &Repository,
    jobs: &[JobSpec],
    host: &str,
) -> Result<Vec<(String, Option<DateTime<Utc>>)>> {
    let snaps = repo.snapshots(OnDamage::Skip)?.objects;
    Ok(jobs
        .iter()
        .filter_map(|j| match &j.task {
            Task::Backup(cfg) => Some((j.name.clone(), cfg.snapshot_paths())),
            _ => None,
        })
        .map(|(name, paths)| {
            let last = snaps
                .iter()
                .filter(|(_, s)| {
                    let mut p = s.paths.clone();
                    p.sort();
                    s.hostname == host && p == paths
                })
                .map(|(_, s)| s.time)
                .max();
            (name, last)
        })
        .collect())
}

/// The standard output of a command, as a backup source. A command that
/// fails (non-zero exit) fails the backup, so a broken dump never becomes a
/// snapshot; a cancelled backup kills the command.
struct ChildReader {
    name: String,
    child: Child,
    stdout: ChildStdout,
    cancel: Arc<AtomicBool>,
    done: bool,
}

impl ChildReader {
    fn spawn(job: &str, argv: &[String], cancel: Arc<AtomicBool>) -> Result<ChildReader> {
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run the job's command {:?}", argv[0]))?;
        let stdout = child.stdout.take().context("command has no stdout")?;
        if let Some(stderr) = child.stderr.take() {
            let (job, program) = (job.to_string(), argv[0].clone());
            let _ = std::thread::Builder::new()
                .name("strata-cmd-stderr".into())
                .spawn(move || {
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        tracing::warn!(job = %job, command = %program, "{line}");
                    }
                });
        }
        Ok(ChildReader {
            name: argv[0].clone(),
            child,
            stdout,
            cancel,
            done: false,
        })
    }
}

impl Read for ChildReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            let _ = self.child.kill();
            // Not ErrorKind::Interrupted: readers retry on that.
            return Err(std::io::Error::other("backup cancelled"));
        }
        let n = self.stdout.read(buf)?;
        if n == 0 && !self.done {
            self.done = true;
            let status = self.child.wait()?;
            if !status.success() {
                return Err(std::io::Error::other(format!(
                    "command {:?} failed ({status})",
                    self.name
                )));
            }
        }
        Ok(n)
    }
}

impl Drop for ChildReader {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
