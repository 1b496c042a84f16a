//! The command line: global options and dispatch to one module per command.

mod agent;
mod backup;
mod check;
mod copy;
mod forget;
mod init;
mod inspect;
mod interrupt;
mod key;
mod logging;
mod pool;
mod repair;
mod restore;
mod ui;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::{exit, exit_code, one_line};
use crate::report::Output;
use crate::session::Ctx;

/// strata: deduplicating, encrypted backups to object storage.
#[derive(Parser, Debug)]
#[command(name = "strata", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Repository: a path, file:///path (s3://, az://, gs:// with a pool config).
    #[arg(
        long,
        short = 'r',
        global = true,
        env = "STRATA_REPO",
        value_name = "URL"
    )]
    repo: Option<String>,
    /// TOML config file.
    #[arg(long, global = true, env = "STRATA_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// File holding the repository password (or STRATA_PASSWORD in the environment).
    #[arg(long, global = true, env = "STRATA_PASSWORD_FILE", value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Shell command that prints the repository password (e.g. `pass show backup`).
    #[arg(
        long,
        global = true,
        env = "STRATA_PASSWORD_COMMAND",
        value_name = "COMMAND"
    )]
    password_command: Option<String>,
    /// Upload limit per second for the whole repository, e.g. 2MiB (a pool: the total).
    #[arg(long, global = true, env = "STRATA_LIMIT_UPLOAD", value_name = "RATE")]
    limit_upload: Option<String>,
    /// Download limit per second, e.g. 10MiB.
    #[arg(
        long,
        global = true,
        env = "STRATA_LIMIT_DOWNLOAD",
        value_name = "RATE"
    )]
    limit_download: Option<String>,
    /// Print one JSON object per line.
    #[arg(long, global = true)]
    json: bool,
    /// Print only errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Print more detail.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new repository.
    Init(init::InitArgs),
    /// Back up files, directories or standard input.
    Backup(backup::BackupArgs),
    /// List snapshots.
    Snapshots(inspect::SnapshotsArgs),
    /// List the files in a snapshot.
    Ls(inspect::LsArgs),
    /// Show what changed between two snapshots.
    Diff(inspect::DiffArgs),
    /// Restore a snapshot into a directory.
    Restore(restore::RestoreArgs),
    /// Write one file of a snapshot to standard output.
    Dump(restore::DumpArgs),
    /// Verify the repository's integrity.
    Check(check::CheckArgs),
    /// Show sizes, deduplication and compression figures.
    Stats(inspect::StatsArgs),
    /// Remove snapshots by a retention policy (and optionally prune).
    Forget(forget::ForgetArgs),
    /// Reclaim space from data no snapshot needs (safe during backups).
    Prune(forget::PruneCmdArgs),
    /// Inspect and repair the members of a storage pool.
    Pool(pool::PoolArgs),
    /// Re-index packs whose index file was lost, remove damaged snapshots.
    Repair(repair::RepairArgs),
    /// Copy snapshots from another repository (other password or provider)
    /// into this one; deduplicated, resumable, the original id recorded.
    Copy(copy::CopyArgs),
    /// Manage the passwords (key files) that open the repository.
    Key(key::KeyArgs),
    /// Run scheduled backups, prune and check as a long-running process,
    /// with /healthz, /readyz and /metrics (config from --config / STRATA_CONFIG).
    Agent(agent::AgentArgs),
    /// Serve the web console for a repository, read-only (no agent needed).
    Ui(ui::UiArgs),
    /// GET the agent's /healthz and exit 0 when it answers (for container
    /// HEALTHCHECKs in images without curl).
    Healthcheck(agent::HealthcheckArgs),
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::FAILED
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    let out = Output {
        json: cli.json,
        quiet: cli.quiet,
    };
    let password_command = cli.password_command;
    let rate = |v: &Option<String>, flag: &str| {
        v.as_deref()
            .map(crate::store::throttle::parse_rate)
            .transpose()
            .map(Option::flatten)
            .map_err(|e| e.context(format!("--{flag}")))
    };
    let limits = rate(&cli.limit_upload, "limit-upload")
        .and_then(|up| Ok((up, rate(&cli.limit_download, "limit-download")?)));
    let (limit_upload, limit_download) = match limits {
        Ok(l) => l,
        Err(e) => return finish(Err(e), out),
    };
    // The agent reads (and re-reads) its config itself; a health check
    // needs no config at all.
    let command = match cli.command {
        Command::Agent(a) => {
            let g = agent::AgentGlobals {
                config: cli.config,
                globals: crate::agent::Globals {
                    repo: cli.repo,
                    password_file: cli.password_file,
                    password_command,
                    listen: None,
                    limit_upload,
                    limit_download,
                },
                verbose: cli.verbose,
                quiet: cli.quiet,
            };
            return finish(agent::run(g, a), out);
        }
        Command::Healthcheck(a) => return finish(agent::healthcheck(a), out),
        other => other,
    };
    logging::init(out, cli.verbose);
    let result = Ctx::new(cli.repo, cli.config, cli.password_file, out)
        .map(|mut ctx| {
            ctx.password_command = password_command;
            if cli.limit_upload.is_some() {
                ctx.limit_upload = limit_upload;
            }
            if cli.limit_download.is_some() {
                ctx.limit_download = limit_download;
            }
            ctx
        })
        .and_then(|ctx| match command {
            Command::Init(a) => init::run(&ctx, a),
            Command::Backup(a) => backup::run(&ctx, a),
            Command::Snapshots(a) => inspect::snapshots(&ctx, a),
            Command::Ls(a) => inspect::ls(&ctx, a),
            Command::Diff(a) => inspect::diff(&ctx, a),
            Command::Restore(a) => restore::run(&ctx, a),
            Command::Dump(a) => restore::dump(&ctx, a),
            Command::Check(a) => check::run(&ctx, a),
            Command::Stats(a) => inspect::stats(&ctx, a),
            Command::Pool(a) => pool::run(&ctx, a),
            Command::Repair(a) => repair::run(&ctx, a),
            Command::Copy(a) => copy::run(&ctx, a),
            Command::Key(a) => key::run(&ctx, a),
            Command::Forget(a) => forget::forget(&ctx, a),
            Command::Prune(a) => forget::run_prune(&ctx, a),
            Command::Ui(a) => ui::run(ctx, a),
            Command::Agent(_) | Command::Healthcheck(_) => unreachable!("dispatched above"),
        });
    finish(result, out)
}

/// The exit code of a command's result; errors are printed as one line.
fn finish(result: anyhow::Result<i32>, out: Output) -> i32 {
    // What the command cost in requests, for benchmarks and budgets.
    if std::env::var_os("STRATA_REQUEST_STATS").is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!("strata: {}", crate::store::request_tally());
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = exit_code(&e);
            if out.json {
                out.json(&serde_json::json!({"message_type": "error", "message": one_line(&e), "exit_code": code}));
            }
            eprintln!("strata: {}", one_line(&e));
            code
        }
    }
}
