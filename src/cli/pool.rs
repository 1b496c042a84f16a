//! `strata pool status` and `strata pool repair`.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::pool::status::{repair, status};
use crate::report::bytes;
use crate::session::Ctx;

/// Arguments of `pool`.
#[derive(Args, Debug)]
pub struct PoolArgs {
    #[command(subcommand)]
    command: PoolCommand,
}

#[derive(Subcommand, Debug)]
enum PoolCommand {
    /// Show each member's health and what it lacks; exits 1 when a member
    /// is unreachable or incomplete.
    Status,
    /// Copy to each member what it lacks, each copy verified (with the
    /// password when one is given).
    Repair {
        /// Only show what would be copied.
        #[arg(long)]
        dry_run: bool,
        /// Also read every copy each member holds, and replace the ones
        /// that fail verification with a good copy from another member
        /// (needs the password; reads the whole repository from every member).
        #[arg(long)]
        read_data: bool,
    },
}

/// Runs a pool command.
pub fn run(ctx: &Ctx, args: PoolArgs) -> Result<i32> {
    let pool = ctx.pool()?;
    match args.command {
        PoolCommand::Status => {
            let states = status(&pool);
            let mut degraded = false;
            for s in &states {
                let mut v = serde_json::to_value(s)?;
                v["message_type"] = "member".into();
                v["missing_count"] = s.missing.len().into();
                ctx.out.json(&v);
                if !s.reachable {
                    degraded = true;
                    ctx.out.line(format!(
                        "{:<12} UNREACHABLE  {}  ({})",
                        s.name,
                        s.location,
                        s.error.clone().unwrap_or_default()
                    ));
                    continue;
                }
                let counts: Vec<String> =
                    s.objects.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let health = if s.missing.is_empty()
                    && s.size_mismatch.is_empty()
                    && s.deleted_held.is_empty()
                {
                    "ok"
                } else {
                    "INCOMPLETE"
                };
                degraded |= health != "ok";
                ctx.out.line(format!(
                    "{:<12} {:<10}  {}  {} in {} objects ({})",
                    s.name,
                    health,
                    s.location,
                    bytes(s.bytes),
                    s.objects.values().sum::<u64>(),
                    counts.join(", ")
                ));
                if !s.missing.is_empty() {
                    ctx.out.line(format!(
                        "             lacks {} objects ({}), e.g. {}",
                        s.missing.len(),
                        bytes(s.missing_bytes),
                        s.missing
                            .iter()
                            .take(3)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                if !s.deleted_held.is_empty() {
                    ctx.out.line(format!(
                        "             still holds {} objects deleted on purpose while it was away, e.g. {}",
                        s.deleted_held.len(),
                        s.deleted_held[0]
                    ));
                }
                if !s.size_mismatch.is_empty() {
                    ctx.out.line(format!(
                        "             {} objects differ in size from other members' copies, e.g. {}",
                        s.size_mismatch.len(),
                        s.size_mismatch[0]
                    ));
                }
            }
            if degraded {
                ctx.out
                    .line("run `strata pool repair` to copy what is missing");
                // Non-zero, so that cron jobs and monitoring notice.
                return Ok(crate::error::exit::FAILED);
            }
            Ok(crate::error::exit::OK)
        }
        PoolCommand::Repair { dry_run, read_data } => {
            let pool = Arc::new(pool);
            if read_data && !ctx.has_password_source() {
                bail!(
                    "pool repair --read-data needs the password to verify copies: give --password-file, --password-command or STRATA_PASSWORD"
                );
            }
            // With the password, every copy is authenticated before it is
            // written to another member (the repository sets the pool's
            // verifier when it opens); without one, repair still runs.
            if ctx.has_password_source() {
                ctx.open_on(pool.clone())
                    .context("pool repair checks copies with the repository key")?;
            } else {
                ctx.out.warn(
                    "no password given: copies are checked by their names only where that is possible (key files, deletion records); give --password-file to authenticate every copy before it is written",
                );
            }
            let r = repair(&pool, dry_run, read_data);
            let mut v = serde_json::to_value(&r)?;
            v["message_type"] = "summary".into();
            ctx.out.json(&v);
            for (name, n) in &r.copied {
                let b = r.bytes.get(name).copied().unwrap_or(0);
                let verb = if dry_run { "would copy" } else { "copied" };
                ctx.out
                    .line(format!("{name}: {verb} {n} objects ({})", bytes(b)));
            }
            for (name, n) in &r.replaced {
                let verb = if dry_run { "would replace" } else { "replaced" };
                ctx.out.line(format!(
                    "{name}: {verb} {n} damaged copies with good ones from other members"
                ));
            }
            for (name, n) in &r.deletions_finished {
                let verb = if dry_run { "would remove" } else { "removed" };
                ctx.out.line(format!(
                    "{name}: {verb} {n} objects deleted on purpose while it was away"
                ));
            }
            if r.copied.is_empty()
                && r.replaced.is_empty()
                && r.deletions_finished.is_empty()
                && r.errors.is_empty()
            {
                ctx.out
                    .line("every member holds every object; nothing to repair");
            }
            for e in &r.errors {
                ctx.out.warn(e);
            }
            if !r.errors.is_empty() {
                bail!("pool repair incomplete: {} problem(s)", r.errors.len());
            }
            Ok(0)
        }
    }
}
