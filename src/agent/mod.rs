//! `strata agent`: a long-running process that runs backups, prune and
//! check on cron schedules, serves `/healthz`, `/readyz` and `/metrics`,
//! reloads its config on SIGHUP and stops cleanly on SIGTERM/SIGINT.
//!
//! Threads: the calling thread is the scheduler (it alone starts jobs, so a
//! job never overlaps with itself); each run gets a thread of its own; a
//! probe thread refreshes readiness and member health when no job has done
//! so lately (see [`readiness`]); the HTTP listener and
//! the signal handlers run on a small tokio runtime and talk to the
//! scheduler through [`Event`]s.

/// The agent's settings (`[agent]`, `[[jobs]]`), defined with the rest of
/// the config file.
pub use crate::config::agent as config;
pub mod hooks;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod notify;
pub mod readiness;
pub mod schedule;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Local, Utc};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::config::load_config_text;
use crate::error::{Fatal, one_line};
use crate::report::Output;
use crate::session::Ctx;
use jobs::JobSpec;
use metrics::{JobMetrics, Metrics};

/// What the HTTP side and the job threads tell the scheduler.
pub enum Event {
    /// `POST /jobs/NAME/run`.
    Trigger {
        /// Job name.
        name: String,
        /// Where the answer goes.
        reply: tokio::sync::oneshot::Sender<TriggerReply>,
    },
    /// SIGHUP.
    Reload,
    /// SIGTERM or SIGINT (the signal's name).
    Shutdown(&'static str),
    /// A job's thread finished: its name, and what it showed of the
    /// store (nothing when it was interrupted or failed for other reasons).
    Done(String, Option<readiness::JobSignal>),
    /// A probe finished.
    Probed(Box<Probe>),
}

/// The answer to a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerReply {
    /// The job started.
    Started,
    /// It was already running.
    Running,
    /// No such job.
    Unknown,
    /// The agent is stopping.
    Stopping,
}

/// State shared with the HTTP handlers and job threads.
pub struct AgentState {
    /// Figures for `/metrics`.
    pub metrics: Mutex<Metrics>,
    /// Bearer token required by every endpoint but `/healthz`.
    pub token: RwLock<Option<String>>,
    /// To the scheduler.
    pub events: Sender<Event>,
    /// Ready, or why not.
    pub readiness: Mutex<(bool, String)>,
    stopping: AtomicBool,
}

impl AgentState {
    /// True once a shutdown began.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// Options given on the command line (they win over the config file).
#[derive(Debug, Clone, Default)]
pub struct Globals {
    /// `--repo` / STRATA_REPO.
    pub repo: Option<String>,
    /// `--password-file` / STRATA_PASSWORD_FILE.
    pub password_file: Option<PathBuf>,
    /// `--password-command` / STRATA_PASSWORD_COMMAND.
    pub password_command: Option<String>,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--limit-upload` / STRATA_LIMIT_UPLOAD, bytes per second (over the config's).
    pub limit_upload: Option<u64>,
    /// `--limit-download` / STRATA_LIMIT_DOWNLOAD, bytes per second.
    pub limit_download: Option<u64>,
}

/// A loaded and checked config.
pub struct Settings {
    /// Repository access, as for every command.
    pub ctx: Arc<Ctx>,
    /// The jobs.
    pub jobs: Vec<JobSpec>,
    /// Host name recorded in snapshots.
    pub host: String,
    /// SIGTERM grace period.
    pub grace: Duration,
    /// Probe interval when the store answers (default:
    /// [`readiness::default_interval`]).
    pub probe_interval: Duration,
    /// Create a missing repository.
    pub init: bool,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Bearer token.
    pub token: Option<String>,
    /// `[agent] log_format`.
    pub log_format: config::LogFormat,
}

/// Reads and checks a config file. With `secrets`, the password (and the
/// token file) must be readable now: the agent never prompts.
pub fn load(path: &Path, g: &Globals, secrets: bool) -> Result<Settings> {
    let shown = path.display().to_string();
    let (file, text) = load_config_text(path)?;
    config::validate(&file, &text).with_context(|| format!("config file {shown}"))?;
    let jobs = jobs::specs(&file).with_context(|| format!("config file {shown}"))?;
    let agent = file.agent.clone().unwrap_or_default();
    let mut ctx = Ctx::new(
        g.repo.clone(),
        Some(path.to_path_buf()),
        g.password_file.clone(),
        Output {
            json: false,
            quiet: true,
        },
    )?;
    ctx.password_command = g.password_command.clone();
    if g.limit_upload.is_some() {
        ctx.limit_upload = g.limit_upload;
    }
    if g.limit_download.is_some() {
        ctx.limit_download = g.limit_download;
    }
    if ctx.repo_url.as_deref().unwrap_or_default().is_empty() && ctx.pool.is_none() {
        bail!(
            "config file {shown}: no repository: set `url` in [repository], describe a [pool], or set STRATA_REPO"
        );
    }
    let members = ctx.pool.as_ref().map_or(1, |p| p.members.len());
    let listen = g
        .listen
        .or(agent.listen.map(|l| l.0))
        .unwrap_or_else(|| config::DEFAULT_LISTEN.parse().expect("default address"));
    let token = if secrets {
        config::read_token(&agent, &text).with_context(|| format!("config file {shown}"))?
    } else {
        None
    };
    if secrets {
        check_password(&ctx, &text).with_context(|| format!("config file {shown}"))?;
    }
    Ok(Settings {
        ctx: Arc::new(ctx),
        jobs,
        host: agent.host.clone().unwrap_or_else(crate::sysinfo::hostname),
        grace: agent.grace_period.map_or(Duration::from_secs(30), |d| d.0),
        probe_interval: agent
            .probe_interval
            .map_or_else(|| readiness::default_interval(members), |d| d.0)
            .max(Duration::from_secs(1)),
        init: agent.init,
        listen,
        token,
        log_format: agent.log_format.unwrap_or_default(),
    })
}

/// The password must come from a file, a command or STRATA_PASSWORD, and
/// be readable now: a missing password is a start-up error, never a prompt.
fn check_password(ctx: &Ctx, text: &str) -> Result<()> {
    let from_env = std::env::var_os("STRATA_PASSWORD").is_some_and(|v| !v.is_empty());
    if ctx.password_file.is_none() && ctx.password_command.is_none() && !from_env {
        bail!(
            "[repository] field `password_file` is missing and neither STRATA_PASSWORD nor STRATA_PASSWORD_FILE is set: the agent needs a password and never prompts"
        );
    }
    ctx.password(false).map(drop).map_err(|e| {
        let line = crate::config::text::key_line(text, "repository", "password_file")
            .filter(|_| std::env::var_os("STRATA_PASSWORD_FILE").is_none())
            .filter(|_| ctx.password_file.is_some())
            .map(|l| format!("line {l}, [repository] field `password_file`: "))
            .unwrap_or_default();
        anyhow!("{line}{}", one_line(&e))
    })
}

/// A probe's findings.
pub struct Probe {
    /// Reachable (write quorum of members up) and, when asked, unlocked.
    pub ready: bool,
    /// Why not.
    pub why: String,
    /// The password opened the repository (None: not tried this time).
    pub unlocked: Option<bool>,
    /// Member health.
    pub members: Vec<(String, bool)>,
    /// Requests the probe sent.
    pub counts: Vec<crate::store::RequestCounts>,
    /// When each backup job last saved a snapshot (only on unlocking).
    pub last_backups: Option<Vec<(String, Option<DateTime<Utc>>)>>,
}

fn member_name(m: &str) -> String {
    if m.is_empty() {
        "repository".into()
    } else {
        m.to_string()
    }
}

/// Checks that the store answers and (with `unlock`) that the password
/// opens the repository; creates it first when `init` and it is missing.
fn probe(ctx: &Ctx, unlock: bool, init: bool, jobs: &[JobSpec], host: &str) -> Probe {
    let mut p = Probe {
        ready: false,
        why: String::new(),
        unlocked: None,
        members: Vec::new(),
        counts: Vec::new(),
        last_backups: None,
    };
    let backend: Arc<dyn crate::store::Backend> = if ctx.pool.is_some() {
        let pool = match ctx.pool() {
            Ok(pool) => pool,
            Err(e) => {
                p.why = one_line(&e);
                return p;
            }
        };
        let quorum = ctx
            .pool
            .as_ref()
            .and_then(|c| c.validate().ok())
            .unwrap_or(1);
        let key = crate::repo::layout::CONFIG;
        for m in pool.members() {
            let up = m.backend.size(key).is_ok();
            p.members.push((m.name.clone(), up));
        }
        let up = p.members.iter().filter(|(_, up)| *up).count();
        if up < quorum {
            p.why = format!(
                "{up} of {} pool members reachable with the repository, {quorum} needed",
                p.members.len()
            );
        }
        pool.rank_members(key);
        ctx.throttled(Arc::new(pool))
    } else {
        match ctx.backend() {
            Ok(b) => {
                let up = b.size(crate::repo::layout::CONFIG);
                if let Err(e) = &up {
                    p.why = one_line(e);
                }
                p.members.push(("repository".into(), up.is_ok()));
                b
            }
            Err(e) => {
                p.why = one_line(&e);
                return p;
            }
        }
    };
    if unlock && (p.why.is_empty() || init) {
        let mut opened = ctx.open_on(backend.clone());
        if init
            && let Err(e) = &opened
            && e.downcast_ref::<Fatal>()
                .is_some_and(|f| matches!(f, Fatal::NoRepository(_)))
        {
            opened = ctx.password(false).and_then(|pw| {
                let repo = crate::repo::Repository::init(
                    backend.clone(),
                    &pw,
                    crate::crypto::keyfile::KdfParams::default(),
                )?;
                tracing::info!(repository = %backend.location(), "created the repository");
                Ok(Arc::new(repo))
            });
            if opened.is_ok() {
                p.why.clear();
                for m in &mut p.members {
                    m.1 = true;
                }
            }
        }
        match opened {
            Ok(repo) => {
                p.unlocked = Some(true);
                match jobs::last_backups(&repo, jobs, host) {
                    Ok(l) => p.last_backups = Some(l),
                    Err(e) => p.why = format!("listing snapshots: {}", one_line(&e)),
                }
            }
            Err(e) => {
                p.unlocked = Some(false);
                p.why = one_line(&e);
            }
        }
    }
    for n in backend
        .replicated()
        .map(|r| r.take_notices())
        .unwrap_or_default()
    {
        tracing::warn!("{n}");
    }
    p.counts = backend.request_counts();
    p.ready = p.why.is_empty();
    p
}

struct Running {
    cancel: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

struct Slot {
    spec: JobSpec,
    next: Option<DateTime<Local>>,
}

/// The scheduler's state.
struct Agent {
    config_path: PathBuf,
    globals: Globals,
    settings: Settings,
    shared: Arc<AgentState>,
    slots: Vec<Slot>,
    running: HashMap<String, Running>,
    unlocked: bool,
    caught_up: bool,
    probing: bool,
    probes: readiness::ProbeClock,
}

/// Adds a run's requests to the member counters.
fn add_counts(m: &mut Metrics, counts: &[crate::store::RequestCounts]) {
    for c in counts {
        let e = m.members.entry(member_name(&c.member)).or_default();
        e.requests += c.requests;
        e.errors += c.errors;
    }
}

fn unix_now() -> f64 {
    Utc::now().timestamp_millis() as f64 / 1000.0
}

fn next_run(spec: &JobSpec, after: DateTime<Local>) -> Option<DateTime<Local>> {
    let t = spec.schedule.next_after(after)?;
    let j = chrono::Duration::from_std(schedule::jitter(spec.jitter)).unwrap_or_default();
    Some(t + j)
}

impl Agent {
    fn slots_for(jobs: &[JobSpec]) -> Vec<Slot> {
        let now = Local::now();
        jobs.iter()
            .map(|spec| Slot {
                next: next_run(spec, now),
                spec: spec.clone(),
            })
            .collect()
    }

    fn sync_metrics(&self) {
        let mut m = self.shared.metrics.lock().expect("metrics");
        let names: Vec<&str> = self.slots.iter().map(|s| s.spec.name.as_str()).collect();
        m.jobs
            .retain(|k, _| names.contains(&k.as_str()) || self.running.contains_key(k));
        for s in &self.slots {
            let e = m
                .jobs
                .entry(s.spec.name.clone())
                .or_insert_with(|| JobMetrics {
                    kind: s.spec.kind(),
                    ..Default::default()
                });
            e.kind = s.spec.kind();
        }
    }

    fn start(&mut self, i: usize, why: &str) -> TriggerReply {
        if self.shared.stopping() {
            return TriggerReply::Stopping;
        }
        let spec = self.slots[i].spec.clone();
        if self.running.contains_key(&spec.name) {
            tracing::warn!(job = %spec.name, "{why} run skipped: the previous run is still going");
            if why == "scheduled" {
                let report = jobs::missed_json(
                    &spec,
                    &self.settings.host,
                    "a scheduled run was skipped: the previous run was still going",
                );
                notify::send_in_background(
                    spec.notify.clone(),
                    spec.name.clone(),
                    notify::NotifyEvent::Missed,
                    report,
                );
            }
            let mut m = self.shared.metrics.lock().expect("metrics");
            if let Some(j) = m.jobs.get_mut(&spec.name) {
                j.skipped += 1;
            }
            return TriggerReply::Running;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let (ctx, host, shared) = (
            self.settings.ctx.clone(),
            self.settings.host.clone(),
            self.shared.clone(),
        );
        let flag = cancel.clone();
        let name = spec.name.clone();
        let why = why.to_string();
        let handle = std::thread::Builder::new()
            .name(format!("strata-job-{name}"))
            .spawn(move || run_job(&spec, &ctx, &host, &flag, &shared, &why));
        match handle {
            Ok(handle) => {
                self.running.insert(name, Running { cancel, handle });
                TriggerReply::Started
            }
            Err(e) => {
                tracing::error!(job = %name, "cannot start a thread: {e}");
                TriggerReply::Stopping
            }
        }
    }

    fn trigger(&mut self, name: &str) -> TriggerReply {
        match self.slots.iter().position(|s| s.spec.name == name) {
            Some(i) => self.start(i, "triggered"),
            None => TriggerReply::Unknown,
        }
    }

    fn run_due(&mut self) {
        if self.shared.stopping() {
            return;
        }
        let now = Local::now();
        for i in 0..self.slots.len() {
            if self.slots[i].next.is_some_and(|t| t <= now) {
                self.slots[i].next = next_run(&self.slots[i].spec, now);
                self.start(i, "scheduled");
            }
        }
        if !self.probing && self.probes.due(Instant::now()) {
            self.start_probe();
        }
    }

    fn start_probe(&mut self) {
        self.probing = true;
        let (ctx, shared) = (self.settings.ctx.clone(), self.shared.clone());
        let (unlock, init) = (!self.unlocked, self.settings.init);
        let (jobs, host) = (self.settings.jobs.clone(), self.settings.host.clone());
        let spawned = std::thread::Builder::new()
            .name("strata-probe".into())
            .spawn(move || {
                let p = probe(&ctx, unlock, init, &jobs, &host);
                let _ = shared.events.send(Event::Probed(Box::new(p)));
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the probe thread: {e}");
            self.probing = false;
        }
    }

    /// Sets readiness (for /readyz and the metrics), logging a change.
    fn set_readiness(&self, ready: bool, why: String) {
        {
            let mut r = self.shared.readiness.lock().expect("readiness");
            if r.0 != ready || (!ready && r.1 != why) {
                if ready {
                    tracing::info!("repository ready");
                } else {
                    tracing::warn!("repository not ready: {why}");
                }
            }
            *r = (ready, why);
        }
        self.shared.metrics.lock().expect("metrics").ready = ready;
    }

    fn probed(&mut self, p: Probe) {
        self.probing = false;
        if let Some(u) = p.unlocked {
            self.unlocked = u;
        }
        let ready = p.ready && self.unlocked;
        self.probes.probed(ready, Instant::now());
        let why = if !p.why.is_empty() {
            p.why.clone()
        } else if !self.unlocked {
            "the repository has not been opened yet".into()
        } else {
            String::new()
        };
        self.set_readiness(ready, why);
        {
            let mut m = self.shared.metrics.lock().expect("metrics");
            add_counts(&mut m, &p.counts);
            for (name, up) in &p.members {
                m.members.entry(name.clone()).or_default().up = Some(*up);
            }
        }
        if let Some(last) = p.last_backups
            && !self.caught_up
        {
            self.caught_up = true;
            let now = Local::now();
            for slot in &mut self.slots {
                if !slot.spec.run_missed && slot.spec.notify.is_empty() {
                    continue;
                }
                let Some((_, last)) = last.iter().find(|(n, _)| *n == slot.spec.name) else {
                    continue;
                };
                let due = slot.spec.schedule.previous_before(now);
                let missed = match (last, due) {
                    (None, _) => true,
                    (Some(l), Some(d)) => *l < d.with_timezone(&Utc),
                    (Some(_), None) => false,
                };
                // A job that never ran has not missed anything to notify.
                if missed && last.is_some() {
                    let report = jobs::missed_json(
                        &slot.spec,
                        &self.settings.host,
                        "a scheduled run was missed while the agent was not running",
                    );
                    notify::send_in_background(
                        slot.spec.notify.clone(),
                        slot.spec.name.clone(),
                        notify::NotifyEvent::Missed,
                        report,
                    );
                }
                if missed && slot.spec.run_missed {
                    tracing::info!(job = %slot.spec.name, "a scheduled run was missed: running it now");
                    slot.next = Some(now);
                }
            }
        }
    }

    fn reap(&mut self, name: &str, signal: Option<readiness::JobSignal>) {
        if let Some(r) = self.running.remove(name) {
            let _ = r.handle.join();
        }
        self.sync_metrics();
        // The job's outcome stands in for a probe.
        match signal {
            Some(readiness::JobSignal::Reachable) if self.unlocked => {
                self.probes
                    .job_done(&readiness::JobSignal::Reachable, Instant::now());
                self.set_readiness(true, String::new());
            }
            Some(s @ readiness::JobSignal::Unreachable(_)) => {
                self.probes.job_done(&s, Instant::now());
                if let readiness::JobSignal::Unreachable(why) = s {
                    self.set_readiness(false, why);
                }
            }
            _ => {}
        }
    }

    fn reload(&mut self) {
        match load(&self.config_path, &self.globals, true) {
            Ok(s) => {
                if s.listen != self.settings.listen {
                    tracing::warn!(
                        "the listen address changed to {}; it takes effect after a restart",
                        s.listen
                    );
                }
                *self.shared.token.write().expect("token") = s.token.clone();
                self.slots = Self::slots_for(&s.jobs);
                self.settings = s;
                self.unlocked = false;
                self.sync_metrics();
                self.probes =
                    readiness::ProbeClock::new(self.settings.probe_interval, Instant::now());
                tracing::info!(jobs = self.slots.len(), "config reloaded");
            }
            Err(e) => {
                self.shared.metrics.lock().expect("metrics").reload_errors += 1;
                tracing::error!(
                    "config reload refused, the running config stays: {}",
                    one_line(&e)
                );
            }
        }
    }

    fn next_wake(&self) -> Duration {
        let now = Local::now();
        let mut wait = Duration::from_secs(60);
        for s in &self.slots {
            if let Some(t) = s.next {
                wait = wait.min((t - now).to_std().unwrap_or(Duration::ZERO));
            }
        }
        if !self.probing {
            wait = wait.min(self.probes.next().saturating_duration_since(Instant::now()));
        }
        wait
    }

    fn shutdown(mut self, rx: &Receiver<Event>, signal: &str) -> i32 {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let grace = self.settings.grace;
        let deadline = Instant::now() + grace;
        let cancel_at = deadline - (grace / 2).min(Duration::from_secs(20));
        let mut cancelled = false;
        if self.running.is_empty() {
            tracing::info!("{signal}: stopping");
        } else {
            tracing::info!(
                running = self.running.len(),
                "{signal}: no new jobs; waiting up to {}s for running jobs",
                grace.as_secs()
            );
        }
        while !self.running.is_empty() {
            let now = Instant::now();
            if !cancelled && now >= cancel_at {
                cancelled = true;
                tracing::info!(
                    "asking running jobs to stop: what they uploaded is indexed and re-used by the next run"
                );
                for r in self.running.values() {
                    r.cancel.store(true, Ordering::SeqCst);
                }
            }
            if now >= deadline {
                let names: Vec<&String> = self.running.keys().collect();
                tracing::warn!("grace period over; exiting with jobs still running: {names:?}");
                break;
            }
            let until = if cancelled { deadline } else { cancel_at };
            match rx.recv_timeout(until.saturating_duration_since(now)) {
                Ok(Event::Done(name, _)) => {
                    if let Some(r) = self.running.remove(&name) {
                        let _ = r.handle.join();
                    }
                }
                Ok(Event::Trigger { reply, .. }) => {
                    let _ = reply.send(TriggerReply::Stopping);
                }
                Ok(Event::Shutdown(s)) if !cancelled => {
                    tracing::info!("{s} again: stopping running jobs now");
                    cancelled = true;
                    for r in self.running.values() {
                        r.cancel.store(true, Ordering::SeqCst);
                    }
                }
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        crate::repo::lock::release_all_held();
        tracing::info!("stopped");
        crate::error::exit::OK
    }
}

/// One run of a job, on its own thread; reports to the metrics and the log.
fn run_job(
    spec: &JobSpec,
    ctx: &Ctx,
    host: &str,
    cancel: &Arc<AtomicBool>,
    shared: &AgentState,
    why: &str,
) {
    {
        let mut m = shared.metrics.lock().expect("metrics");
        let j = m.jobs.entry(spec.name.clone()).or_default();
        j.kind = spec.kind();
        j.running = true;
        j.runs += 1;
    }
    tracing::info!(job = %spec.name, kind = spec.kind(), "{why} run started");
    let started = Instant::now();
    let (result, counts) = jobs::run(spec, ctx, host, cancel);
    let took = started.elapsed().as_secs_f64();
    let signal = match &result {
        Ok(_) => Some(readiness::JobSignal::Reachable),
        Err(e) if readiness::unreachable_error(e) => {
            Some(readiness::JobSignal::Unreachable(one_line(e)))
        }
        Err(_) => None,
    };
    {
        let mut m = shared.metrics.lock().expect("metrics");
        add_counts(&mut m, &counts);
        let j = m.jobs.entry(spec.name.clone()).or_default();
        j.running = false;
        j.last_run = unix_now();
        j.last_duration = took;
        match &result {
            Ok(outcome) => {
                j.last_success = j.last_run;
                if let Some(b) = &outcome.backup {
                    j.last_bytes_read = b.bytes_read;
                    j.last_bytes_added = b.bytes_added;
                    j.last_files = b.files;
                    j.last_rate = b.rate;
                    j.last_warnings = b.warnings;
                    j.bytes_read_total += b.bytes_read;
                    j.bytes_added_total += b.bytes_added;
                }
            }
            Err(_) => j.errors += 1,
        }
    }
    match result {
        Ok(outcome) => {
            tracing::info!(job = %spec.name, kind = spec.kind(), duration_s = took, "{}", outcome.message)
        }
        Err(e) if crate::error::exit_code(&e) == crate::error::exit::INTERRUPTED => {
            tracing::warn!(
                job = %spec.name,
                duration_s = took,
                "stopped for shutdown before its snapshot: what was uploaded is indexed and re-used by the next run"
            );
        }
        Err(e) => {
            tracing::error!(job = %spec.name, kind = spec.kind(), duration_s = took, "failed: {}", one_line(&e));
        }
    }
    let _ = shared.events.send(Event::Done(spec.name.clone(), signal));
}

/// Runs the agent until SIGTERM/SIGINT; returns the exit code.
pub fn run(config_path: PathBuf, globals: Globals, settings: Settings) -> Result<i32> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let listener = std::net::TcpListener::bind(settings.listen)
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let shared = Arc::new(AgentState {
        metrics: Mutex::new(Metrics {
            started: unix_now(),
            ..Default::default()
        }),
        token: RwLock::new(settings.token.clone()),
        events: tx,
        readiness: Mutex::new((false, "starting".into())),
        stopping: AtomicBool::new(false),
    });
    http::start(listener, shared.clone())?;
    tracing::info!(
        listen = %settings.listen,
        version = env!("CARGO_PKG_VERSION"),
        jobs = settings.jobs.len(),
        host = %settings.host,
        "agent started"
    );
    for j in &settings.jobs {
        tracing::info!(job = %j.name, kind = j.kind(), schedule = %j.schedule, "scheduled");
    }
    let settings_interval = settings.probe_interval;
    let mut agent = Agent {
        config_path,
        globals,
        slots: Agent::slots_for(&settings.jobs),
        settings,
        shared,
        running: HashMap::new(),
        unlocked: false,
        caught_up: false,
        probing: false,
        probes: readiness::ProbeClock::new(settings_interval, Instant::now()),
    };
    agent.sync_metrics();
    agent.start_probe();
    loop {
        match rx.recv_timeout(agent.next_wake()) {
            Ok(Event::Shutdown(signal)) => return Ok(agent.shutdown(&rx, signal)),
            Ok(Event::Reload) => agent.reload(),
            Ok(Event::Trigger { name, reply }) => {
                let r = agent.trigger(&name);
                let _ = reply.send(r);
            }
            Ok(Event::Done(name, signal)) => agent.reap(&name, signal),
            Ok(Event::Probed(p)) => agent.probed(*p),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(agent.shutdown(&rx, "exit")),
        }
        agent.run_due();
    }
}
