//! `strata repair index` and `strata repair snapshots`.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use crate::error::exit;
use crate::maintenance::repair::{repair_index, repair_snapshots};
use crate::session::Ctx;

/// Arguments of `repair`.
#[derive(Args, Debug)]
pub struct RepairArgs {
    #[command(subcommand)]
    command: RepairCommand,
}

#[derive(Subcommand, Debug)]
enum RepairCommand {
    /// Index again, from their headers, the packs no usable index file
    /// names (after an index file was lost or damaged), then remove the
    /// damaged index files.
    Index {
        /// Only show what would be done.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove the snapshots that fail verification (nothing can be
    /// restored from them; forget and prune refuse to run while they exist).
    Snapshots {
        /// Only show what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs a repair command.
pub fn run(ctx: &Ctx, args: RepairArgs) -> Result<i32> {
    match args.command {
        RepairCommand::Index { dry_run } => index(ctx, dry_run),
        RepairCommand::Snapshots { dry_run } => snapshots(ctx, dry_run),
    }
}

fn snapshots(ctx: &Ctx, dry_run: bool) -> Result<i32> {
    let repo = ctx.open()?;
    let result = repair_snapshots(&repo, dry_run);
    ctx.report_notices(repo.backend().as_ref());
    let removed = result?;
    let would = if dry_run { "would be " } else { "" };
    ctx.out.json(&serde_json::json!({
        "message_type": "summary", "dry_run": dry_run, "damaged_snapshots_removed": removed,
    }));
    if removed.is_empty() {
        ctx.out.line("no damaged snapshots");
    }
    for name in &removed {
        ctx.out.line(format!("damaged {name} {would}removed"));
    }
    Ok(exit::OK)
}

fn index(ctx: &Ctx, dry_run: bool) -> Result<i32> {
    let repo = ctx.open()?;
    let result = repair_index(&repo, dry_run);
    ctx.report_notices(repo.backend().as_ref());
    let r = result?;
    for p in &r.unreadable_packs {
        ctx.out.warn(format!("cannot index {p}"));
    }
    let would = if dry_run { "would be " } else { "" };
    ctx.out.json(&serde_json::json!({
        "message_type": "summary", "dry_run": dry_run,
        "packs": r.packs, "unindexed": r.unindexed, "reindexed": r.reindexed,
        "blobs": r.blobs, "index_files_written": r.index_files_written,
        "damaged_index_files_removed": r.damaged_removed,
        "unreadable_packs": r.unreadable_packs,
        "packs_on_too_few_members": r.too_few_copies,
    }));
    ctx.out.line(format!(
        "{} of {} packs were in no usable index; {} {}indexed again ({} blobs, {} new index files)",
        r.unindexed, r.packs, r.reindexed, would, r.blobs, r.index_files_written
    ));
    for name in &r.damaged_removed {
        ctx.out.line(format!("damaged {name} {would}removed"));
    }
    if r.too_few_copies > 0 {
        ctx.out.warn(format!(
            "{} unindexed packs are on fewer pool members than write_quorum and were not indexed: run `strata pool repair` to copy them, then `strata repair index` again",
            r.too_few_copies
        ));
    }
    if r.unreadable_packs.is_empty() {
        Ok(exit::OK)
    } else {
        bail!(
            "{} packs have unreadable headers and were left as they are (see the warnings; `strata check --read-data` tells what they affect)",
            r.unreadable_packs.len()
        )
    }
}
