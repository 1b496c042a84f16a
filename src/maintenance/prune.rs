//! `prune`: reclaims space without ever breaking a snapshot, while backups
//! from other hosts keep running. Two phases (see docs/PRUNE.md):
//!
//! 1. **Mark.** Packs no snapshot needs (and packs mostly unused, after their
//!    used blobs are copied into new packs) are listed in a deletion marker.
//!    Nothing is deleted; backups that start later see the marker and do not
//!    deduplicate against those packs.
//! 2. **Sweep** (a later run, after the grace period): a marker is swept only
//!    when every live backup lock says its holder had seen the marker before
//!    loading the index. Marked packs that a snapshot needs after all are
//!    kept; then a compacted index superseding all index files read is
//!    written, the packs are deleted, the superseded index files, and last
//!    the marker. Each step is idempotent, so a prune killed at any point is
//!    finished by the next one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::id::Id;
use crate::repo::blob::SealedBlob;
use crate::repo::index::IndexFile;
use crate::repo::lock::{Lock, is_live, list_locks};
use crate::repo::markers::{DeletionMarker, load_markers};
use crate::repo::pack::{FinishedPack, PackEntry};
use crate::repo::pack_write::{PackWriter, store_pack};
use crate::repo::tree::NodeKind;
use crate::repo::{ObjectKind, OnDamage, Repository, layout};

/// Options of a prune run.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Repack packs whose unused share is above this percentage.
    pub max_unused_pct: f64,
    /// How long a marker must exist before its packs are deleted.
    pub grace: Duration,
    /// Report only.
    pub dry_run: bool,
    /// Set on the immediate second pass after marking with no grace period.
    pub finishing: bool,
}

/// What prune did (or would do).
#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    /// Packs deleted in this run.
    pub packs_deleted: u64,
    /// Bytes freed in this run.
    pub bytes_freed: u64,
    /// Packs newly marked for deletion.
    pub packs_marked: u64,
    /// Bytes they hold.
    pub bytes_marked: u64,
    /// Of the packs marked, those no index names (left by a killed backup).
    pub orphans_marked: u64,
    /// Packs whose used blobs were copied into new packs.
    pub packs_repacked: u64,
    /// Bytes copied by repacking.
    pub bytes_repacked: u64,
    /// Marked packs kept because a snapshot needs them after all.
    pub packs_rescued: u64,
    /// Markers waiting for their grace period or for running backups.
    pub markers_waiting: u64,
    /// Why markers are waiting.
    pub waiting_reasons: Vec<String>,
    /// Index files replaced by one compacted index.
    pub index_files_compacted: u64,
    /// Deletion records merged into one.
    pub deletion_records_merged: u64,
}

struct PackUse {
    entries: Vec<PackEntry>,
    size: u64,
    used_bytes: u64,
}

/// Every blob reachable from any snapshot.
///
/// `roots` must be listed before `index` is loaded: a backup writes its index
/// before its snapshot, so every snapshot listed earlier is fully indexed.
fn used_blobs(
    repo: &Repository,
    roots: Vec<Id>,
    index: &crate::repo::index::Index,
) -> Result<HashSet<Id>> {
    let mut used = HashSet::new();
    let mut stack = roots;
    while let Some(tree_id) = stack.pop() {
        if !used.insert(tree_id) {
            continue;
        }
        let tree = repo
            .load_tree(index, &tree_id)
            .with_context(|| format!("reading tree {tree_id}"))?;
        for node in &tree.nodes {
            match node.kind {
                NodeKind::Dir => stack.extend(node.subtree),
                NodeKind::File => used.extend(node.content.iter().copied()),
                _ => {}
            }
        }
    }
    Ok(used)
}

/// Runs prune.
pub fn prune(repo: &Arc<Repository>, opts: &PruneOptions) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    let lock = if opts.dry_run {
        repo.require_complete_views(None)?;
        None
    } else {
        // Before writing anything: append-only credentials cannot prune.
        crate::maintenance::append_only::check_prune_may_delete(repo)?;
        Some(exclusive_prune_lock(repo)?)
    };
    let result = run(repo, opts, &mut report);
    if let Some(l) = lock {
        l.release();
    }
    result.map(|_| report)
}

/// Takes the prune lock, refusing if another live prune holds one.
pub(crate) fn exclusive_prune_lock(repo: &Arc<Repository>) -> Result<Lock> {
    let lock = Lock::acquire(repo, "prune")?;
    // Everything from here on acts on every member's listing, on one clock.
    if let Err(e) = repo.require_complete_views(Some(lock.id())) {
        lock.release();
        return Err(e);
    }
    let locks = list_locks(repo)?;
    // Clear away locks left by processes killed on this host.
    for l in &locks {
        if l.info.as_ref().is_some_and(crate::repo::lock::is_dead_here) {
            let _ = repo.delete_object(ObjectKind::Lock, &l.id);
        }
    }
    let now = locks
        .iter()
        .find(|l| l.id == lock.id())
        .and_then(|l| l.modified)
        .unwrap_or_else(crate::entropy::now);
    // Any other live prune wins: a running one never re-checks, so the
    // newcomer must back off (two starting at once both do; try again).
    let rival = locks.iter().find(|l| {
        l.id != lock.id() && is_live(l, now) && l.info.as_ref().is_none_or(|i| i.kind == "prune")
    });
    if let Some(r) = rival {
        let who = r
            .info
            .as_ref()
            .map(|i| format!("{} (pid {})", i.hostname, i.pid))
            .unwrap_or_default();
        lock.release();
        bail!("another prune is running on {who}; try again when it is done");
    }
    Ok(lock)
}

fn run(repo: &Arc<Repository>, opts: &PruneOptions, report: &mut PruneReport) -> Result<()> {
    // Server time, from our own freshly written lock (or now, in a dry run).
    let locks = list_locks(repo)?;
    let server_now = locks
        .iter()
        .filter_map(|l| l.modified)
        .max()
        .unwrap_or_else(crate::entropy::now);
    let live_backups: Vec<_> = locks
        .iter()
        .filter(|l| is_live(l, server_now))
        .filter(|l| l.info.as_ref().is_none_or(|i| i.kind == "backup"))
        .collect();

    // Snapshots before index files: see `used_blobs`.
    let roots: Vec<Id> = repo
        .snapshots(OnDamage::Refuse)?
        .objects
        .into_iter()
        .map(|(_, s)| s.tree)
        .collect();
    // Listed before loading: what is listed now but not loaded below was
    // superseded (left by a prune that was interrupted) and can go, but only
    // when a loaded file says so. A file listed once and missing from the
    // next listing (a store that lists late) is not known to be superseded:
    // treating it as such would delete a running backup's index file.
    let listed_index = repo.list_ids(ObjectKind::Index)?;
    let index_files = repo.index_files(OnDamage::Refuse)?.objects;
    let loaded: HashSet<Id> = index_files.iter().map(|(id, _)| *id).collect();
    let superseded: HashSet<Id> = index_files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    let (stale_index, unexplained): (Vec<Id>, Vec<Id>) = listed_index
        .into_iter()
        .filter(|id| !loaded.contains(id))
        .partition(|id| superseded.contains(id));
    if let Some(id) = unexplained.first() {
        bail!(
            "index file {} was listed and then not found by the next listing (the store lists late, or it was deleted meanwhile); nothing was deleted: run prune again",
            id.short()
        );
    }
    let mut full_index = crate::repo::index::Index::default();
    for (_, f) in &index_files {
        full_index.add_file(f);
    }
    let used = used_blobs(repo, roots, &full_index)?;
    // Packs no index names would be swept as orphans: when snapshots need
    // blobs only such packs may hold (an index file was lost), stop.
    let unindexed = used.iter().filter(|b| !full_index.contains(b)).count();
    if unindexed > 0 {
        bail!(
            "{unindexed} blobs that snapshots use are in no index file (was one lost?): \
             run `strata repair index`, then prune again; nothing was deleted"
        );
    }
    let markers = load_markers(repo)?;

    // Packs and what they hold (a blob may sit in several packs).
    let mut packs: BTreeMap<Id, PackUse> = BTreeMap::new();
    for (_, f) in &index_files {
        for (pack, entries) in &f.packs {
            packs.entry(*pack).or_insert_with(|| PackUse {
                size: entries.iter().map(|e| e.stored_len as u64).sum(),
                entries: entries.clone(),
                used_bytes: 0,
            });
        }
    }
    let listed_packs = repo.list_pack_objects()?;
    let stored: HashMap<Id, u64> = listed_packs.iter().map(|(id, o)| (*id, o.size)).collect();
    // Packs no index names, older than the grace period by server time: left
    // by killed backups. They go through the same marker protocol as any
    // other pack, so one a live backup is still about to index is rescued.
    let orphans: Vec<Id> = listed_packs
        .iter()
        .filter_map(|(id, o)| {
            let id = *id;
            let age = server_now
                .signed_duration_since(o.modified?)
                .to_std()
                .ok()?;
            (!packs.contains_key(&id) && age >= opts.grace).then_some(id)
        })
        .collect();

    // --- Sweep phase ---
    let mut sweep_markers = Vec::new();
    let mut to_delete: BTreeSet<Id> = BTreeSet::new();
    for m in &markers {
        let age = m
            .modified
            .map(|t| {
                server_now
                    .signed_duration_since(t)
                    .to_std()
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        let blockers: Vec<String> = live_backups
            .iter()
            .filter(|l| {
                l.info
                    .as_ref()
                    .is_none_or(|i| !i.seen_markers.contains(&m.id))
            })
            .map(|l| {
                l.info
                    .as_ref()
                    .map(|i| format!("{} pid {}", i.hostname, i.pid))
                    .unwrap_or_else(|| "unknown".into())
            })
            .collect();
        if age < opts.grace {
            report.markers_waiting += 1;
            report.waiting_reasons.push(format!(
                "marker {}: {} packs wait for the grace period ({}s of {}s)",
                m.id.short(),
                m.marker.packs.len(),
                age.as_secs(),
                opts.grace.as_secs()
            ));
        } else if !blockers.is_empty() {
            report.markers_waiting += 1;
            report.waiting_reasons.push(format!(
                "marker {}: {} packs wait for backups that started before it: {}",
                m.id.short(),
                m.marker.packs.len(),
                blockers.join(", ")
            ));
        } else {
            sweep_markers.push(m.id);
            to_delete.extend(m.marker.packs.iter().copied());
        }
    }
    // A marked pack holding a used blob that no surviving pack holds is kept.
    let mut holders: HashMap<Id, Vec<Id>> = HashMap::new();
    for (pack, u) in &packs {
        for e in &u.entries {
            holders.entry(e.id).or_default().push(*pack);
        }
    }
    let mut rescued: HashSet<Id> = HashSet::new();
    for (pack, u) in &packs {
        if !to_delete.contains(pack) {
            continue;
        }
        let needed = u.entries.iter().any(|e| {
            used.contains(&e.id)
                && !holders[&e.id]
                    .iter()
                    .any(|h| !to_delete.contains(h) || rescued.contains(h))
        });
        if needed {
            rescued.insert(*pack);
        }
    }
    for p in &rescued {
        to_delete.remove(p);
    }
    report.packs_rescued = rescued.len() as u64;
    if !opts.dry_run
        && (!sweep_markers.is_empty() || index_files.len() > 1 || !stale_index.is_empty())
    {
        sweep(
            repo,
            &index_files,
            &stale_index,
            &to_delete,
            &stored,
            &sweep_markers,
            report,
        )?;
    } else if opts.dry_run {
        report.packs_deleted = to_delete.len() as u64;
        report.bytes_freed = to_delete.iter().filter_map(|p| stored.get(p)).sum();
    }
    if !opts.dry_run {
        // One deletion record per forget and sweep adds up: merge them,
        // forgetting packs no member holds any more.
        let deleted = repo.deleted()?;
        let merged = repo.compact_deletion_records(&deleted, |p| stored.contains_key(p))?;
        if merged {
            report.deletion_records_merged = deleted.records.len() as u64;
        }
    }

    // --- Mark phase ---
    let already_marked: HashSet<Id> = markers
        .iter()
        .filter(|m| !sweep_markers.contains(&m.id))
        .flat_map(|m| m.marker.packs.iter().copied())
        .chain(to_delete.iter().copied())
        .collect();
    // Each used blob counts once, in the first surviving pack holding it.
    let mut counted: HashSet<Id> = HashSet::new();
    for (pack, u) in packs.iter_mut() {
        if already_marked.contains(pack) {
            continue;
        }
        for e in &u.entries {
            if used.contains(&e.id) && counted.insert(e.id) {
                u.used_bytes += e.stored_len as u64;
            }
        }
    }
    let mut mark: Vec<Id> = Vec::new();
    let mut repack: Vec<Id> = Vec::new();
    for (pack, u) in &packs {
        if already_marked.contains(pack) {
            continue;
        }
        if u.used_bytes == 0 {
            mark.push(*pack);
        } else {
            let unused_pct = 100.0 * (u.size - u.used_bytes) as f64 / u.size.max(1) as f64;
            if unused_pct > opts.max_unused_pct {
                repack.push(*pack);
            }
        }
    }
    let orphans: Vec<Id> = orphans
        .into_iter()
        .filter(|p| !already_marked.contains(p))
        .collect();
    report.orphans_marked = orphans.len() as u64;
    mark.extend(orphans);
    report.packs_marked = (mark.len() + repack.len()) as u64;
    report.bytes_marked = mark
        .iter()
        .chain(&repack)
        .filter_map(|p| stored.get(p))
        .sum();
    report.packs_repacked = repack.len() as u64;
    if opts.dry_run || (mark.is_empty() && repack.is_empty()) {
        report.bytes_repacked = repack.iter().map(|p| packs[p].used_bytes).sum();
        return Ok(());
    }
    if !repack.is_empty() {
        // Blobs a pack that stays already holds are not copied again: a copy
        // would make the survivor "partly unused" in turn, and the next run
        // would repack it back, and so on forever.
        let leaving: HashSet<&Id> = already_marked.iter().chain(&mark).chain(&repack).collect();
        let kept_elsewhere: HashSet<Id> = packs
            .iter()
            .filter(|(p, _)| !leaving.contains(p))
            .flat_map(|(_, u)| u.entries.iter().map(|e| e.id))
            .collect();
        report.bytes_repacked = repack_packs(repo, &repack, &packs, &used, &kept_elsewhere)?;
    }
    mark.extend(repack);
    let marker = DeletionMarker {
        created: crate::entropy::now(),
        packs: mark,
    };
    repo.save_object(ObjectKind::Deletion, &serde_json::to_vec(&marker)?)?;

    // With no grace period and no backup running, finish at once (one more
    // pass; whatever that pass marks waits for the next prune).
    if opts.grace.is_zero() && live_backups.is_empty() && !opts.finishing {
        let mut again = PruneReport::default();
        run(
            repo,
            &PruneOptions {
                dry_run: false,
                finishing: true,
                ..opts.clone()
            },
            &mut again,
        )?;
        report.packs_deleted += again.packs_deleted;
        report.bytes_freed += again.bytes_freed;
        report.index_files_compacted += again.index_files_compacted;
        report.packs_rescued += again.packs_rescued;
        report.markers_waiting = again.markers_waiting;
        report.waiting_reasons = again.waiting_reasons;
    }
    Ok(())
}

/// Writes the compacted index, then deletes packs, old index files and markers.
fn sweep(
    repo: &Repository,
    index_files: &[(Id, IndexFile)],
    stale_index: &[Id],
    to_delete: &BTreeSet<Id>,
    stored: &HashMap<Id, u64>,
    markers: &[Id],
    report: &mut PruneReport,
) -> Result<()> {
    let mut seen_packs = HashSet::new();
    // Supersession is carried forward: the new index names every file the
    // loaded ones superseded too, so a file deleted long ago that comes back
    // (a failed delete, a crash before the stale files went, a restored
    // bucket version) stays dead instead of making gone packs live again.
    let supersedes: std::collections::BTreeSet<Id> = index_files
        .iter()
        .flat_map(|(id, f)| std::iter::once(*id).chain(f.supersedes.iter().copied()))
        .chain(stale_index.iter().copied())
        .collect();
    let mut compacted = IndexFile {
        supersedes: supersedes.into_iter().collect(),
        packs: Vec::new(),
    };
    for (_, f) in index_files {
        for (pack, entries) in &f.packs {
            if !to_delete.contains(pack) && seen_packs.insert(*pack) {
                compacted.packs.push((*pack, entries.clone()));
            }
        }
    }
    // 1. The new index first: from here on the old ones are ignored.
    repo.save_index(&compacted)?;
    // A pool member that missed it would be left with no index at all once
    // the old ones go: stop here; a re-run finishes once the member is back.
    if !repo.backend().replicated().is_none_or(|r| r.heal_lagging()) {
        bail!(
            "a pool member missed the compacted index; nothing was deleted. Run `strata pool repair` when it is reachable, then prune again"
        );
    }
    report.index_files_compacted = index_files.len() as u64;
    // 2. The packs nobody references any more, recorded first so that a
    //    member that misses a delete does not get them back from `pool repair`.
    repo.record_deleted_packs(to_delete)?;
    for pack in to_delete {
        repo.delete_pack(pack)?;
        report.packs_deleted += 1;
        report.bytes_freed += stored.get(pack).copied().unwrap_or(0);
    }
    // 3. The superseded index files (the ones already hidden first), and
    //    last the markers.
    for id in stale_index
        .iter()
        .chain(index_files.iter().map(|(id, _)| id))
    {
        repo.delete_object(ObjectKind::Index, id)?;
    }
    for m in markers {
        repo.delete_object(ObjectKind::Deletion, m)?;
    }
    Ok(())
}

/// Copies the used blobs of `victims` into new packs (ciphertext as is: a
/// blob's encryption binds its type and id, not its pack), then indexes them.
fn repack_packs(
    repo: &Repository,
    victims: &[Id],
    packs: &BTreeMap<Id, PackUse>,
    used: &HashSet<Id>,
    kept_elsewhere: &HashSet<Id>,
) -> Result<u64> {
    let target = repo.config().pack_size as usize;
    let mut index = IndexFile::default();
    let mut writer = PackWriter::new(target);
    let mut copied = 0u64;
    let mut done: HashSet<Id> = HashSet::new();
    let flush = |pack: FinishedPack, index: &mut IndexFile| -> Result<()> {
        store_pack(repo, &pack)?;
        index.packs.push((pack.id, pack.entries));
        Ok(())
    };
    let reader = repo.pack_reader();
    for victim in victims {
        let name = layout::pack(victim);
        let wanted = |e: &PackEntry| {
            used.contains(&e.id)
                && !kept_elsewhere.contains(&e.id)
                && packs[victim].entries.iter().any(|x| x.id == e.id)
        };
        // The blobs to copy, sealed as stored, each verified first (a pool
        // takes another member's copy of a pack with a damaged one).
        let mut sealed: Vec<(PackEntry, Vec<u8>)> = Vec::new();
        reader
            .read_whole(victim, &wanted, &mut |bytes, header, bad| {
                if let Some((k, err)) = bad.first() {
                    bail!(
                        "blob {} is damaged ({}); not repacking it",
                        header[*k].id.short(),
                        crate::error::one_line(err)
                    );
                }
                sealed = header
                    .iter()
                    .filter(|e| wanted(e))
                    .map(|e| {
                        let at = e.offset as usize..(e.offset + e.stored_len) as usize;
                        (*e, bytes[at].to_vec())
                    })
                    .collect();
                Ok(())
            })
            .with_context(|| format!("repacking {name}"))?;
        for (e, bytes) in sealed {
            if !done.insert(e.id) {
                continue;
            }
            copied += e.stored_len as u64;
            let blob = SealedBlob {
                kind: e.kind,
                id: e.id,
                compression: e.compression,
                raw_len: e.raw_len,
                bytes,
            };
            if let Some(pack) = writer.add(repo, blob) {
                flush(pack, &mut index)?;
            }
        }
    }
    for pack in writer.finish(repo) {
        flush(pack, &mut index)?;
    }
    if !index.packs.is_empty() {
        repo.save_index(&index)?;
    }
    Ok(copied)
}
