//! The agent's settings: the command line's options over the config file,
//! loaded and checked before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::jobs::JobSpec;
use super::{config, readiness};
use crate::config::load_config_text;
use crate::error::one_line;
use crate::report::Output;
use crate::session::Ctx;

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
    /// `[agent.console]`.
    pub console: crate::console::ConsoleConfig,
}

/// Reads and checks a config file. With `secrets`, the password (and the
/// token file) must be readable now: the agent never prompts.
pub fn load(path: &Path, g: &Globals, secrets: bool) -> Result<Settings> {
    let shown = path.display().to_string();
    let (file, text) = load_config_text(path)?;
    config::validate(&file, &text).with_context(|| format!("config file {shown}"))?;
    let jobs = super::jobs::specs(&file).with_context(|| format!("config file {shown}"))?;
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
    crate::console::check_exposure(
        listen,
        agent.token.is_some() || agent.token_file.is_some(),
        "set [agent] token_file (or STRATA_AGENT_TOKEN)",
    )
    .with_context(|| format!("config file {shown}"))?;
    let console = agent.console.clone().unwrap_or_default();
    console
        .validate()
        .map_err(|e| anyhow!("config file {shown}: {e}"))?;
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
        console,
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
