//! `strata snapshots`, `ls`, `diff` and `stats`.

use std::path::Path;

use anyhow::Result;
use clap::Args;

use crate::inspect::{diff as diff_trees, stats as repo_stats, tree_at, walk};
use crate::repo::OnDamage;
use crate::repo::tree::NodeKind;
use crate::report::bytes;
use crate::session::Ctx;

/// Arguments of `snapshots`.
#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Only snapshots of this host.
    #[arg(long)]
    host: Option<String>,
    /// Only snapshots with this tag.
    #[arg(long)]
    tag: Option<String>,
}

/// Lists snapshots.
pub fn snapshots(ctx: &Ctx, args: SnapshotsArgs) -> Result<i32> {
    let repo = ctx.open_for_reading()?;
    let all = repo.snapshots(OnDamage::Skip)?.objects;
    let shown: Vec<_> = all
        .iter()
        .filter(|(_, s)| args.host.as_ref().is_none_or(|h| &s.hostname == h))
        .filter(|(_, s)| args.tag.as_ref().is_none_or(|t| s.tags.contains(t)))
        .collect();
    ctx.out.line(format!(
        "{:<8}  {:<19}  {:<12}  {:<12}  {:<8}  {:>10}  {:<10}  paths",
        "id", "time", "host", "mode", "parent", "size", "tags"
    ));
    for (id, s) in &shown {
        ctx.out.json(&serde_json::json!({
            "message_type": "snapshot", "id": id.to_hex(), "short_id": id.short(),
            "time": s.time, "hostname": s.hostname, "username": s.username, "paths": s.paths,
            "tags": s.tags, "mode": s.mode, "parent": s.parent.map(|p| p.to_hex()),
            "tree": s.tree.to_hex(), "summary": s.summary, "original": s.original,
        }));
        ctx.out.line(format!(
            "{:<8}  {:<19}  {:<12}  {:<12}  {:<8}  {:>10}  {:<10}  {}",
            id.short(),
            s.time
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S"),
            s.hostname,
            s.mode.to_string(),
            s.parent.map(|p| p.short()).unwrap_or_else(|| "-".into()),
            bytes(s.summary.total_bytes),
            s.tags.join(","),
            s.paths.join(" ")
        ));
    }
    ctx.out.line(format!("{} snapshots", shown.len()));
    Ok(0)
}

/// Arguments of `ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id, unique id prefix, or `latest`.
    snapshot: String,
    /// Directory inside the snapshot to list (default: everything).
    path: Option<std::path::PathBuf>,
    /// Show mode, owner, size and time.
    #[arg(long, short)]
    long: bool,
}

/// Lists a snapshot's files.
pub fn ls(ctx: &Ctx, args: LsArgs) -> Result<i32> {
    let repo = ctx.open_for_reading()?;
    let (_, snap) = repo.find_snapshot(&args.snapshot)?;
    let index = repo.load_index()?;
    let (tree, dir) = tree_at(
        &repo,
        &index,
        &snap.tree,
        args.path.as_deref().unwrap_or(Path::new("/")),
    )?;
    walk(&repo, &index, &tree, &dir, &mut |path: &Path, node| {
        use std::os::unix::ffi::OsStrExt;
        let raw = path.as_os_str().as_bytes();
        let shown = crate::repo::tree::escape_bytes(raw);
        let mtime = chrono::DateTime::from_timestamp(node.mtime, node.mtime_ns).unwrap_or_default();
        if ctx.out.json {
            let mut v = serde_json::json!({
                "message_type": "node", "type": node.kind, "size": node.size,
                "mode": node.mode, "uid": node.uid, "gid": node.gid, "mtime": mtime,
            });
            put_name(&mut v, "path", raw);
            if let Some(t) = &node.target {
                put_name(&mut v, "target", &t.0);
            }
            ctx.out.json(&v);
        }
        if args.long {
            let kind = match node.kind {
                NodeKind::Dir => 'd',
                NodeKind::Symlink => 'l',
                NodeKind::File => '-',
                NodeKind::Fifo => 'p',
                NodeKind::Socket => 's',
                NodeKind::Blockdev => 'b',
                NodeKind::Chardev => 'c',
            };
            let target = node
                .target
                .as_ref()
                .map(|t| format!(" -> {}", t.display()))
                .unwrap_or_default();
            ctx.out.line(format!(
                "{kind}{:04o} {:>5} {:>5} {:>12} {} {shown}{target}",
                node.mode,
                node.uid,
                node.gid,
                node.size,
                mtime
                    .with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S")
            ));
        } else {
            ctx.out.line(shown);
        }
    })?;
    Ok(0)
}

/// Sets `key` in a JSON object to a name: the exact text when the bytes are
/// UTF-8; otherwise the escaped text (see `escape_bytes`) for reading, and
/// `KEY_b64` with the standard base64 of the raw bytes, which round-trips.
pub(crate) fn put_name(v: &mut serde_json::Value, key: &str, raw: &[u8]) {
    use base64::Engine;
    match std::str::from_utf8(raw) {
        Ok(text) => v[key] = text.into(),
        Err(_) => {
            v[key] = crate::repo::tree::escape_bytes(raw).into();
            v[format!("{key}_b64")] = base64::engine::general_purpose::STANDARD.encode(raw).into();
        }
    }
}

/// Arguments of `diff`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The older snapshot.
    a: String,
    /// The newer snapshot.
    b: String,
}

/// Shows changes between two snapshots.
pub fn diff(ctx: &Ctx, args: DiffArgs) -> Result<i32> {
    let repo = ctx.open_for_reading()?;
    let (_, a) = repo.find_snapshot(&args.a)?;
    let (_, b) = repo.find_snapshot(&args.b)?;
    let index = repo.load_index()?;
    let changes = diff_trees(&repo, &index, &a.tree, &b.tree)?;
    let count = |k: char| changes.iter().filter(|c| c.kind == k).count();
    for c in &changes {
        if ctx.out.json {
            let mut v =
                serde_json::json!({"message_type": "change", "modifier": c.kind.to_string()});
            put_name(&mut v, "path", &c.raw);
            ctx.out.json(&v);
        }
        ctx.out.line(format!("{}  {}", c.kind, c.path));
    }
    ctx.out.json(&serde_json::json!({
        "message_type": "summary", "added": count('+'), "removed": count('-'),
        "modified": count('M'), "metadata_changed": count('U'), "type_changed": count('T'),
    }));
    ctx.out.line(format!(
        "{} added, {} removed, {} modified, {} metadata only, {} type changed",
        count('+'),
        count('-'),
        count('M'),
        count('U'),
        count('T')
    ));
    Ok(0)
}

/// Arguments of `stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// One snapshot (default: all).
    snapshot: Option<String>,
}

/// Prints statistics.
pub fn stats(ctx: &Ctx, args: StatsArgs) -> Result<i32> {
    let repo = ctx.open_for_reading()?;
    let roots: Vec<_> = match &args.snapshot {
        Some(spec) => vec![repo.find_snapshot(spec)?.1.tree],
        None => repo
            .snapshots(OnDamage::Skip)?
            .objects
            .into_iter()
            .map(|(_, s)| s.tree)
            .collect(),
    };
    let index = repo.load_index()?;
    let s = repo_stats(&repo, &index, &roots)?;
    let mut v = serde_json::to_value(&s)?;
    v["message_type"] = "stats".into();
    ctx.out.json(&v);
    ctx.out.line(format!("snapshots:          {}", s.snapshots));
    ctx.out
        .line(format!("files:              {}", s.total_files));
    ctx.out
        .line(format!("restore size:       {}", bytes(s.total_size)));
    ctx.out.line(format!(
        "unique data:        {} in {} blobs",
        bytes(s.unique_size),
        s.unique_blobs
    ));
    ctx.out
        .line(format!("stored (encrypted): {}", bytes(s.stored_size)));
    ctx.out
        .line(format!("repository packs:   {}", bytes(s.repository_size)));
    ctx.out
        .line(format!("compression ratio:  {:.2}x", s.compression_ratio));
    ctx.out
        .line(format!("space saving ratio: {:.2}x", s.dedup_ratio));
    Ok(0)
}
