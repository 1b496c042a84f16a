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
pub mod console_link;
pub mod hooks;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod notify;
mod probe;
pub mod readiness;
pub mod schedule;
mod scheduler;
mod settings;

pub use probe::Probe;
pub use settings::{Globals, Settings, load};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, Result};
use crossbeam_channel::Sender;

use metrics::Metrics;
use scheduler::unix_now;

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
    /// Finished runs, for the console's charts.
    pub history: Arc<crate::console::history::History>,
    /// Host name recorded in snapshots.
    pub host: RwLock<String>,
    stopping: AtomicBool,
}

impl AgentState {
    /// True once a shutdown began.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
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
        history: Arc::new(crate::console::history::History::load(
            settings.console.history_path(),
        )),
        host: RwLock::new(settings.host.clone()),
        stopping: AtomicBool::new(false),
    });
    let console = settings
        .console
        .enabled
        .then(|| console_link::console(&shared, &settings));
    http::start(listener, shared.clone(), console)?;
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
    scheduler::schedule(config_path, globals, settings, shared, &rx)
}
