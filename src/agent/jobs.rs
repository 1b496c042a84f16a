//! Running one job: a backup (then its retention policy), a prune or a
//! check, through the same library calls as the CLI commands. This module
//! holds the jobs' specs, the run around a task (hooks, notifications,
//! reports) and the last backup of each job; the tasks themselves are in
//! [`backup`] and [`maintenance`].

mod backup;
mod maintenance;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};

use super::config::{CheckJob, JobConfig, PruneJob};
use super::hooks::{self, HookEnv, SummaryFile};
use super::notify::{self, NotifyConfig, NotifyEvent};
use super::schedule::Schedule;
use crate::config::ConfigFile;
use crate::repo::{OnDamage, Repository};
use crate::session::Ctx;
use crate::store::RequestCounts;
use backup::backup;
use maintenance::{run_check, run_prune};

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
