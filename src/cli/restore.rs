//! `strata restore` and `strata dump`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::context::{Ctx, default_threads};
use crate::error::exit;
use crate::inspect::find_node;
use crate::repo::blob::BlobType;
use crate::repo::tree::NodeKind;
use crate::report::{bytes, rate};
use crate::restore::{RestoreOptions, restore};

/// Arguments of `restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id, unique id prefix, or `latest`.
    snapshot: String,
    /// Directory to restore into.
    #[arg(long, short)]
    target: PathBuf,
    /// Only restore paths matching a glob (repeatable), with what is below them.
    #[arg(long = "include", value_name = "GLOB")]
    includes: Vec<String>,
    /// Re-read restored files and check them against the snapshot.
    #[arg(long)]
    verify: bool,
    /// Parallel pack readers (default: two per core).
    #[arg(long)]
    threads: Option<usize>,
}

/// Restores a snapshot.
pub fn run(ctx: &Ctx, args: RestoreArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let (id, snap) = repo.find_snapshot(&args.snapshot)?;
    let opts = RestoreOptions {
        target: args.target.clone(),
        includes: args.includes,
        verify: args.verify,
        threads: args.threads.unwrap_or_else(|| default_threads() * 2),
        progress: std::sync::Arc::new(crate::progress::Counters::default()),
    };
    let display = crate::progress::Display::start("restore", opts.progress.clone(), ctx.out);
    let result = restore(&repo, &snap, &opts);
    display.finish();
    ctx.report_notices(repo.backend().as_ref());
    // A pool member that served a damaged copy gets the good one.
    for healed in repo
        .backend()
        .replicated()
        .map(|r| r.heal_bad_copies())
        .unwrap_or_default()
    {
        ctx.out.warn(&healed);
    }
    let r = result?;
    let served = repo
        .backend()
        .replicated()
        .map(|r| r.served())
        .unwrap_or_default();
    for e in &r.errors {
        ctx.out.warn(e);
    }
    let recovery_rate = rate(r.bytes_restored, r.duration_s);
    ctx.out.json(&serde_json::json!({
        "message_type": "summary",
        "snapshot_id": id.to_hex(),
        "files_restored": r.files_restored,
        "dirs_restored": r.dirs_restored,
        "bytes_restored": r.bytes_restored,
        "total_duration_s": r.duration_s,
        "recovery_rate_bytes_per_s": recovery_rate,
        "verified_files": r.verified_files,
        "errors": r.errors.len(),
        "damaged_files": r.damaged_files,
        "served_by": served.iter().cloned().collect::<std::collections::BTreeMap<String, u64>>(),
        "requests": crate::store::request_tally(),
    }));
    ctx.out.line(format!(
        "restored {} files, {} directories, {} in {:.2}s ({}/s) to {}",
        r.files_restored,
        r.dirs_restored,
        bytes(r.bytes_restored),
        r.duration_s,
        bytes(recovery_rate as u64),
        args.target.display()
    ));
    if !served.is_empty() {
        let parts: Vec<String> = served
            .iter()
            .map(|(n, b)| format!("{n} {}", bytes(*b)))
            .collect();
        ctx.out
            .line(format!("served by pool members: {}", parts.join(", ")));
    }
    if args.verify {
        ctx.out.line(format!("verified {} files", r.verified_files));
    }
    if r.errors.is_empty() {
        return Ok(exit::OK);
    }
    if !r.damaged_files.is_empty() && !ctx.out.json {
        eprintln!("files not restored correctly ({}):", r.damaged_files.len());
        for f in &r.damaged_files {
            eprintln!("  {f}");
        }
    }
    bail!(
        "restore incomplete: {} problem(s); run `strata check --read-data` for details",
        r.errors.len()
    )
}

/// Arguments of `dump`.
#[derive(Args, Debug)]
pub struct DumpArgs {
    /// Snapshot id, unique id prefix, or `latest`.
    snapshot: String,
    /// Path of a file inside the snapshot (any bytes, as the file system has them).
    path: std::path::PathBuf,
}

/// Writes one file's content to stdout.
pub fn dump(ctx: &Ctx, args: DumpArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let (_, snap) = repo.find_snapshot(&args.snapshot)?;
    let index = repo.load_index()?;
    let node = find_node(&repo, &index, &snap.tree, &args.path)?.with_context(|| {
        format!(
            "{}: the snapshot root is a directory; dump takes a file",
            args.path.display()
        )
    })?;
    if node.kind != NodeKind::File {
        bail!(
            "{} is not a regular file; dump takes a file (use restore --include for directories)",
            args.path.display()
        );
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for id in &node.content {
        let data = repo.read_blob(&index, BlobType::Data, id)?;
        if let Err(e) = out.write_all(&data) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(exit::OK);
            }
            return Err(e).context("writing to standard output");
        }
    }
    out.flush().ok();
    Ok(exit::OK)
}
