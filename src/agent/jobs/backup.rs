//! A backup job: its source (paths, or a command's output), the backup, then
//! the job's retention policy.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

use crate::agent::config::JobConfig;
use crate::backup::{BackupOptions, Source, run_backup};
use crate::maintenance::retention::{Grouping, apply};
use crate::repo::{OnDamage, Repository};
use crate::session::default_threads;

use super::{BackupFigures, Outcome};

/// Backs up the job's paths or command output as one snapshot, then
/// applies its retention policy (never to the snapshot just made).
pub(super) fn backup(
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
    retention: &crate::agent::config::Retention,
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
