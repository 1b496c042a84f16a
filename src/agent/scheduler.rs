//! The scheduler: the calling thread of `strata agent`. It alone starts
//! jobs (so a job never overlaps with itself), reacts to triggers, reloads
//! and shutdown, and schedules probes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{DateTime, Local, Utc};
use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::jobs::JobSpec;
use super::metrics::{JobMetrics, Metrics};
use super::probe::{Probe, member_name, probe};
use super::settings::{Globals, Settings, load};
use super::{AgentState, Event, TriggerReply, readiness, schedule};
use crate::error::one_line;
use crate::session::Ctx;

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

/// Now, in seconds since the epoch.
pub(super) fn unix_now() -> f64 {
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
            e.next_run = s.next.map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0);
            e.paths = match &s.spec.task {
                super::jobs::Task::Backup(c) => c.snapshot_paths(),
                _ => Vec::new(),
            };
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
                let report = super::jobs::missed_json(
                    &spec,
                    &self.settings.host,
                    "a scheduled run was skipped: the previous run was still going",
                );
                super::notify::send_in_background(
                    spec.notify.clone(),
                    spec.name.clone(),
                    super::notify::NotifyEvent::Missed,
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
                self.sync_metrics();
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
                    let report = super::jobs::missed_json(
                        &slot.spec,
                        &self.settings.host,
                        "a scheduled run was missed while the agent was not running",
                    );
                    super::notify::send_in_background(
                        slot.spec.notify.clone(),
                        slot.spec.name.clone(),
                        super::notify::NotifyEvent::Missed,
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
                *self.shared.host.write().expect("host") = s.host.clone();
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
    let progress = Arc::new(crate::progress::Counters::default());
    {
        let mut m = shared.metrics.lock().expect("metrics");
        let j = m.jobs.entry(spec.name.clone()).or_default();
        j.kind = spec.kind();
        j.running = true;
        j.runs += 1;
        j.progress = Some(progress.clone());
        j.started = Some(Instant::now());
    }
    tracing::info!(job = %spec.name, kind = spec.kind(), "{why} run started");
    let started = Instant::now();
    let (result, counts) = super::jobs::run(spec, ctx, host, cancel, &progress);
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
        j.progress = None;
        j.started = None;
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
        if let Ok(o) = &result
            && o.snapshot_id.is_some()
        {
            j.last_snapshot = o.snapshot_id.clone();
        }
    }
    let figures = result.as_ref().ok().and_then(|o| o.backup.clone());
    shared.history.record_run(crate::console::history::Run {
        job: spec.name.clone(),
        kind: spec.kind().into(),
        end: unix_now(),
        duration_s: took,
        ok: result.is_ok(),
        bytes_read: figures.as_ref().map_or(0, |b| b.bytes_read),
        bytes_added: figures.as_ref().map_or(0, |b| b.bytes_added),
        rate: figures.as_ref().map_or(0.0, |b| b.rate),
        snapshot: result.as_ref().ok().and_then(|o| o.snapshot_id.clone()),
    });
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

/// Runs the scheduler on the calling thread until shutdown; returns the
/// exit code.
pub(super) fn schedule(
    config_path: PathBuf,
    globals: Globals,
    settings: Settings,
    shared: Arc<AgentState>,
    rx: &Receiver<Event>,
) -> Result<i32> {
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
            Ok(Event::Shutdown(signal)) => return Ok(agent.shutdown(rx, signal)),
            Ok(Event::Reload) => agent.reload(),
            Ok(Event::Trigger { name, reply }) => {
                let r = agent.trigger(&name);
                let _ = reply.send(r);
            }
            Ok(Event::Done(name, signal)) => agent.reap(&name, signal),
            Ok(Event::Probed(p)) => agent.probed(*p),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(agent.shutdown(rx, "exit")),
        }
        agent.run_due();
    }
}
