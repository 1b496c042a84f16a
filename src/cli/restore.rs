//! `strata restore` and `strata dump`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::error::exit;
use crate::inspect::find_node;
use crate::repo::blob::BlobType;
use crate::repo::tree::NodeKind;
use crate::report::{bytes, rate};
use crate::restore::{Overwrite, RestoreOptions, preview, restore, restore_with_index};
use crate::session::{Ctx, default_threads};

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
    /// What to do with a file already in the target: `if-changed` keeps a
    /// regular file of the same size and mtime, `if-newer` one at least as
    /// new, `never` anything there, `always` writes every file.
    #[arg(long, value_enum, default_value_t = Overwrite::IfChanged)]
    overwrite: Overwrite,
    /// Make the target match the snapshot: remove what the snapshot lacks
    /// from every directory restored whole at or below a backed-up path
    /// (the directories above one, such as /home for /home/alice, are left
    /// alone).
    #[arg(long)]
    delete: bool,
    /// List what the restore would change (+ created, M replaced, - deleted)
    /// and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not restore extended attributes, POSIX ACLs and file capabilities.
    #[arg(long)]
    no_xattrs: bool,
}

/// Restores a snapshot.
pub fn run(ctx: &Ctx, args: RestoreArgs) -> Result<i32> {
    let repo = ctx.open_for_reading()?;
    // The index loads while the snapshot is found (and, on a cold open,
    // tree packs are fetched): round trips at once, not one after another.
    let (found, index) = std::thread::scope(|s| {
        s.spawn(|| repo.prefetch_trees_early());
        let index = (!args.dry_run).then(|| s.spawn(|| repo.load_index()));
        let found = repo.find_snapshot(&args.snapshot);
        let index = index.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("loading the index panicked")))
        });
        (found, index)
    });
    let (id, snap) = found?;
    let opts = RestoreOptions {
        target: args.target.clone(),
        includes: args.includes,
        verify: args.verify,
        threads: args.threads.unwrap_or_else(|| default_threads() * 2),
        progress: std::sync::Arc::new(crate::progress::Counters::default()),
        overwrite: args.overwrite,
        stop: super::interrupt::stop_on_interrupt(),
        delete: args.delete,
        xattrs: !args.no_xattrs,
    };
    if args.dry_run {
        return dry_run(ctx, &repo, &id, &snap, &opts);
    }
    let display = crate::progress::Display::start("restore", opts.progress.clone(), ctx.out);
    let result = match index {
        Some(index) => restore_with_index(&repo, &snap, index?, &opts),
        None => restore(&repo, &snap, &opts),
    };
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
    if let Some(w) = &r.xattr_warning {
        ctx.out.warn(w);
    }
    for path in &r.skipped_sockets {
        ctx.out.json(
            &serde_json::json!({"message_type": "skipped", "path": path, "reason": "socket"}),
        );
        if !ctx.out.quiet && !ctx.out.json {
            eprintln!(
                "notice: {path}: a Unix socket, not restored (the program that listens on it creates it)"
            );
        }
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
        "files_skipped": r.files_skipped,
        "bytes_skipped": r.bytes_skipped,
        "skipped_sockets": r.skipped_sockets.len(),
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
    if !r.deleted.is_empty() {
        for d in &r.deleted {
            ctx.out
                .json(&serde_json::json!({"message_type": "deleted", "path": d}));
        }
        ctx.out.line(format!(
            "deleted {} entries the snapshot lacks",
            r.deleted.len()
        ));
    }
    if r.files_skipped > 0 {
        ctx.out.line(format!(
            "kept {} files ({}) already in the target and identical",
            r.files_skipped,
            bytes(r.bytes_skipped)
        ));
    }
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

/// `restore --dry-run`: lists the changes, writes nothing.
fn dry_run(
    ctx: &Ctx,
    repo: &crate::repo::Repository,
    id: &crate::id::Id,
    snap: &crate::repo::snapshot::Snapshot,
    opts: &RestoreOptions,
) -> Result<i32> {
    let p = preview(repo, snap, opts)?;
    for c in &p.changes {
        if ctx.out.json {
            let mut v = serde_json::json!({
                "message_type": "change", "modifier": c.action.to_string(),
            });
            super::inspect::put_name(&mut v, "path", &c.raw);
            ctx.out.json(&v);
        }
        ctx.out.line(format!("{}  {}", c.action, c.path));
    }
    ctx.out.json(&serde_json::json!({
        "message_type": "summary", "dry_run": true, "snapshot_id": id.to_hex(),
        "files_new": p.files_new, "files_replaced": p.files_replaced,
        "files_kept": p.files_kept, "bytes_to_restore": p.bytes, "deleted": p.deleted,
    }));
    ctx.out.line(format!(
        "dry run: would create {} files, replace {}, keep {}, write {}, delete {} entries in {}; nothing written",
        p.files_new,
        p.files_replaced,
        p.files_kept,
        bytes(p.bytes),
        p.deleted,
        opts.target.display()
    ));
    Ok(exit::OK)
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
    let repo = ctx.open_for_reading()?;
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
