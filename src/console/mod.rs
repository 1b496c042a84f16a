//! The web console: a dashboard of jobs, repository and storage, snapshot
//! lists and diffs, a snapshot browser with downloads and restores, and
//! actions (run a job, run a check). Served by `strata agent` at `/`, and
//! read-only by `strata ui` for a repository without an agent.
//!
//! Server-rendered HTML with a little JS; the assets are compiled in. See
//! docs/CONSOLE.md for the pages and the access model.

pub mod assets;
pub mod auth;
pub mod charts;
pub mod config;
pub mod files;
pub mod handlers;
pub mod history;
pub mod html;
pub mod pages;
pub mod restores;
pub mod source;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

pub use config::ConsoleConfig;

/// Live progress of a running job.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Files done.
    pub files: u64,
    /// Bytes done.
    pub bytes: u64,
    /// Bytes expected (0: unknown).
    pub total_bytes: u64,
    /// Seconds since it started.
    pub elapsed_s: f64,
}

/// What the dashboard shows of one job.
#[derive(Debug, Clone, Default)]
pub struct JobView {
    /// Name.
    pub name: String,
    /// `backup`, `prune` or `check`.
    pub kind: String,
    /// Running now, with its progress.
    pub running: Option<Progress>,
    /// Unix time the last run ended (0: never).
    pub last_run: f64,
    /// The last run succeeded.
    pub last_ok: bool,
    /// Seconds the last run took.
    pub last_duration: f64,
    /// Source bytes the last successful backup read.
    pub bytes_read: u64,
    /// Bytes it added.
    pub bytes_added: u64,
    /// Its rate, bytes per second.
    pub rate: f64,
    /// The snapshot it made (full id).
    pub last_snapshot: Option<String>,
    /// Unix time of the next scheduled run (0: none).
    pub next_run: f64,
    /// Paths a backup job records (for the snapshot filter).
    pub paths: Vec<String>,
}

/// One store's health as the agent saw it.
#[derive(Debug, Clone, Default)]
pub struct MemberView {
    /// Member name.
    pub name: String,
    /// Last probe: reachable (None: not probed yet).
    pub up: Option<bool>,
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
}

/// The agent as the console sees it (absent for `strata ui`).
pub trait Scheduler: Send + Sync {
    /// Every job.
    fn jobs(&self) -> Vec<JobView>;
    /// Every store.
    fn members(&self) -> Vec<MemberView>;
    /// The host name the agent's snapshots record.
    fn host(&self) -> String;
    /// Starts job `name` now (blocking); a one-line answer either way.
    fn trigger(&self, name: &str) -> Result<String, String>;
}

/// Everything the console's handlers share.
pub struct Console {
    /// The gatekeeper.
    pub access: auth::Access,
    /// The repository.
    pub source: source::Source,
    /// The agent (None: `strata ui`, read-only).
    pub scheduler: Option<Arc<dyn Scheduler>>,
    /// Where restores may go (empty: none).
    pub restore_targets: Vec<PathBuf>,
    /// Runs and restores for the charts.
    pub history: Arc<history::History>,
    /// Restores started here.
    pub restores: restores::Restores,
}

impl Console {
    /// True for `strata ui`: no actions, no restores.
    pub fn read_only(&self) -> bool {
        self.scheduler.is_none()
    }
}

/// The console's routes (behind the login gate).
pub fn router(console: Arc<Console>) -> Router {
    use handlers as h;
    Router::new()
        .route("/", get(h::dashboard::dashboard))
        .route("/login", get(h::access::login_form).post(h::access::login))
        .route("/logout", post(h::access::logout))
        .route("/assets/{name}", get(h::access::asset))
        .route("/fragments/jobs", get(h::dashboard::jobs_fragment))
        .route("/snapshots", get(h::snapshots::snapshots))
        .route("/diff", get(h::snapshots::diff))
        .route("/snapshots/{id}/browse", get(h::browse::browse))
        .route("/snapshots/{id}/download", get(h::browse::download))
        .route(
            "/snapshots/{id}/restore",
            get(h::restore::restore_confirm).post(h::restore::restore_start),
        )
        .route("/restores/{n}", get(h::restore::restore_page))
        .route("/fragments/restores/{n}", get(h::restore::restore_fragment))
        .route("/actions/run/{name}", post(h::dashboard::run_job))
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            h::access::gate,
        ))
        .with_state(console)
}

/// Refuses a listener that is not on a loopback address when no token is
/// set: the console and the job triggers would be open to the network.
pub fn check_exposure(listen: SocketAddr, token_set: bool, how: &str) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() && !token_set {
        anyhow::bail!(
            "refusing to listen on {listen} without a token: anyone who can reach it could run jobs and read backups; {how}, or listen on 127.0.0.1"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn exposure_needs_a_token_off_loopback() {
        let open: std::net::SocketAddr = "0.0.0.0:9898".parse().unwrap();
        let local: std::net::SocketAddr = "127.0.0.1:9898".parse().unwrap();
        let v6: std::net::SocketAddr = "[::1]:9898".parse().unwrap();
        assert!(super::check_exposure(open, false, "set a token").is_err());
        assert!(super::check_exposure(open, true, "set a token").is_ok());
        assert!(super::check_exposure(local, false, "set a token").is_ok());
        assert!(super::check_exposure(v6, false, "set a token").is_ok());
    }
}
