//! `strata agent` and `strata healthcheck`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::agent::{Globals, jobs::Task};
use crate::config::agent::{LogFormat, parse_listen};

/// Arguments of `agent`.
#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Check this config file (syntax, fields, cron expressions) and exit:
    /// 0 when it is valid, 1 with the line and field at fault otherwise.
    /// Without FILE, checks the file of --config (or STRATA_CONFIG).
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    check_config: Option<Option<PathBuf>>,
    /// Log format: auto is JSON unless standard error is a terminal
    /// (default: [agent] log_format, else auto).
    #[arg(long, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// HTTP listen address (overrides [agent] listen and STRATA_AGENT_LISTEN).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

/// Arguments of `healthcheck`.
#[derive(Args, Debug)]
pub struct HealthcheckArgs {
    /// URL to GET (default: /healthz on STRATA_AGENT_LISTEN's port, else
    /// http://127.0.0.1:9898/healthz).
    #[arg(long, env = "STRATA_HEALTHCHECK_URL", value_name = "URL")]
    url: Option<String>,
    /// Give up after this long.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    timeout: String,
}

/// What the agent needs from the global options.
pub struct AgentGlobals {
    /// `--config` / STRATA_CONFIG.
    pub config: Option<PathBuf>,
    /// `--repo`, `--password-file`, `--password-command`.
    pub globals: Globals,
    /// `-v` count.
    pub verbose: u8,
    /// `-q`.
    pub quiet: bool,
}

/// Runs `strata agent`.
pub fn run(g: AgentGlobals, args: AgentArgs) -> Result<i32> {
    let mut globals = g.globals;
    if let Some(l) = &args.listen {
        globals.listen = Some(
            parse_listen(l)
                .map_err(|e| anyhow::anyhow!("--listen: {e}"))?
                .0,
        );
    }
    if let Some(path) = &args.check_config {
        let Some(path) = path.as_ref().or(g.config.as_ref()) else {
            bail!(
                "--check-config needs a config file: give --check-config FILE, or --config FILE (or STRATA_CONFIG) with it"
            );
        };
        return check_config(path, &globals);
    }
    let Some(path) = g.config else {
        bail!("strata agent needs a config file: give --config FILE or set STRATA_CONFIG");
    };
    let settings = crate::agent::load(&path, &globals, true)?;
    init_logging(
        args.log_format.unwrap_or(settings.log_format),
        g.verbose,
        g.quiet,
    );
    crate::agent::run(path, globals, settings)
}

fn check_config(path: &std::path::Path, globals: &Globals) -> Result<i32> {
    let s = crate::agent::load(path, globals, false)?;
    println!("config file {} is valid", path.display());
    println!(
        "  listen {}; host {}; grace period {}s",
        s.listen,
        s.host,
        s.grace.as_secs()
    );
    if s.jobs.is_empty() {
        println!("  no jobs: the agent would only serve its endpoints");
    }
    for j in &s.jobs {
        let what = match &j.task {
            Task::Backup(c) => match &c.command {
                Some(cmd) => format!("backup of the output of {:?}", cmd[0]),
                None => format!("backup of {}", c.snapshot_paths().join(", ")),
            },
            Task::Prune(_) => "prune".into(),
            Task::Check(_) => "check".into(),
        };
        let next = j
            .schedule
            .next_after(chrono::Local::now())
            .map(|t| t.format("%Y-%m-%d %H:%M:%S %Z").to_string())
            .unwrap_or_default();
        println!(
            "  job {}: {what}, schedule {:?} (next {next})",
            j.name,
            j.schedule.to_string()
        );
    }
    Ok(crate::error::exit::OK)
}

fn init_logging(format: LogFormat, verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "warn,strata=info",
        (false, 1) => "info,strata=debug",
        _ => "debug",
    };
    let filter = std::env::var("STRATA_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}

/// The URL `healthcheck` uses by default.
fn default_health_url() -> String {
    let port = std::env::var("STRATA_AGENT_LISTEN")
        .ok()
        .and_then(|l| parse_listen(&l).ok())
        .map_or(9898, |l| l.0.port());
    format!("http://127.0.0.1:{port}/healthz")
}

/// Runs `strata healthcheck`: exit 0 when the URL answers 2xx, else 1.
pub fn healthcheck(args: HealthcheckArgs) -> Result<i32> {
    let url = args.url.unwrap_or_else(default_health_url);
    let timeout = humantime::parse_duration(&args.timeout)
        .with_context(|| {
            format!(
                "--timeout takes a duration such as 5s, got {:?}",
                args.timeout
            )
        })?
        .max(Duration::from_millis(100));
    let status = crate::agent::http::get_status(&url, timeout)?;
    if (200..300).contains(&status) {
        Ok(crate::error::exit::OK)
    } else {
        bail!("{url} answered HTTP {status}")
    }
}
