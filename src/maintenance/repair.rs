//! `repair index` and `repair snapshots`.
//!
//! `repair index` indexes again, from their own headers, the packs that no
//! usable index file names (its index file was lost or damaged), then removes
//! the damaged index files.
//!
//! Every pack carries an encrypted header listing its blobs, so the index is
//! redundant: nothing but the header is read. The new index file is durable
//! before any damaged one is deleted, so a crash in between loses nothing.
//! Both run under the prune lock: a prune that loaded the index before the new
//! file existed could otherwise sweep a pack the new file names.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use crate::id::Id;
use crate::repo::index::IndexFile;
use crate::repo::pack::PackEntry;
use crate::repo::{ObjectKind, OnDamage, Repository, layout};

/// Packs per new index file (as a backup writes them, a few thousand blobs).
const PACKS_PER_INDEX: usize = 256;
/// Pack headers read at once.
const READERS: usize = 8;

/// What `repair index` did (or, in a dry run, would do).
#[derive(Debug, Default)]
pub struct RepairIndexReport {
    /// Packs in the repository.
    pub packs: usize,
    /// Packs that no usable index file named.
    pub unindexed: usize,
    /// Packs indexed again from their headers.
    pub reindexed: usize,
    /// Blobs those packs hold.
    pub blobs: usize,
    /// New index files written.
    pub index_files_written: usize,
    /// Damaged index files, removed (or to be removed).
    pub damaged_removed: Vec<String>,
    /// Packs whose header could not be read: `object: reason`.
    pub unreadable_packs: Vec<String>,
    /// Unindexed packs on fewer pool members than the write quorum (left
    /// by a backup that failed while writing them): not indexed until
    /// `pool repair` has copied them.
    pub too_few_copies: usize,
}

/// Runs `repair index`.
pub fn repair_index(repo: &Arc<Repository>, dry_run: bool) -> Result<RepairIndexReport> {
    under_prune_lock(repo, dry_run, || run(repo, dry_run))
}

/// Removes the snapshots that fail verification (nothing can be restored
/// from them, and forget and prune refuse to run while they exist); returns
/// their object names.
pub fn repair_snapshots(repo: &Arc<Repository>, dry_run: bool) -> Result<Vec<String>> {
    under_prune_lock(repo, dry_run, || {
        let damaged: Vec<Id> = repo
            .snapshots(OnDamage::Collect)?
            .damaged
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let names: Vec<String> = damaged
            .iter()
            .map(|id| layout::object(ObjectKind::Snapshot, id))
            .collect();
        if !dry_run {
            repo.delete_objects_recorded(ObjectKind::Snapshot, &damaged)
                .context("removing the damaged snapshots")?;
        }
        Ok(names)
    })
}

/// Runs `f` holding the prune lock (none in a dry run, which changes nothing).
fn under_prune_lock<T>(
    repo: &Arc<Repository>,
    dry_run: bool,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let lock = if dry_run {
        None
    } else {
        Some(crate::maintenance::prune::exclusive_prune_lock(repo)?)
    };
    let result = f();
    if let Some(l) = lock {
        l.release();
    }
    result
}

fn run(repo: &Repository, dry_run: bool) -> Result<RepairIndexReport> {
    let mut report = RepairIndexReport::default();
    let loaded = repo.index_files(OnDamage::Collect)?;
    let indexed: HashSet<Id> = loaded
        .objects
        .iter()
        .flat_map(|(_, f)| f.packs.iter().map(|(p, _)| *p))
        .collect();
    let stored = repo.list_packs()?;
    report.packs = stored.len();
    // A pack deleted on purpose that a member still holds (a delete that
    // failed there) is not lost data: indexing it again would make it live,
    // and `pool repair` then finishes its deletion under the index.
    let deleted = repo.deleted()?;

    let mut unindexed: Vec<(Id, u64)> = stored
        .into_iter()
        .filter(|(p, _)| !indexed.contains(p) && !deleted.contains_pack(p))
        .collect();
    report.unindexed = unindexed.len();
    // On a pool, a pack on fewer members than a write needs is not durable:
    // indexed, later backups would deduplicate against it, and their
    // snapshots would hang on the few members holding it.
    if let Some(durable) = repo.durable_packs() {
        unindexed.retain(|(p, _)| durable.contains(p));
        report.too_few_copies = report.unindexed - unindexed.len();
    }
    let mut recovered: Vec<(Id, Vec<PackEntry>)> = Vec::new();
    for (pack, header) in read_headers(repo, &unindexed) {
        match header {
            Ok(entries) => {
                report.blobs += entries.len();
                recovered.push((pack, entries));
            }
            Err(e) => report.unreadable_packs.push(format!(
                "{}: {}",
                layout::pack(&pack),
                crate::error::one_line(&e)
            )),
        }
    }
    report.reindexed = recovered.len();
    let index_name = |id: &Id| layout::object(ObjectKind::Index, id);
    let damaged = loaded.damaged.iter().map(|(id, _)| id);
    if dry_run {
        report.damaged_removed = damaged.map(index_name).collect();
        report.index_files_written = recovered.len().div_ceil(PACKS_PER_INDEX);
        return Ok(report);
    }
    let mut written = HashSet::new();
    for chunk in recovered.chunks(PACKS_PER_INDEX) {
        written.insert(repo.save_index(&IndexFile {
            supersedes: Vec::new(),
            packs: chunk.to_vec(),
        })?);
        report.index_files_written += 1;
    }
    // Only now that what they listed is indexed again. A rebuilt file can
    // come out byte for byte as the damaged one was, under the same name:
    // then the damaged copy has just been overwritten, and stays.
    let removed: Vec<&Id> = damaged.filter(|id| !written.contains(*id)).collect();
    report.damaged_removed = removed.iter().map(|id| index_name(id)).collect();
    for id in removed {
        repo.delete_object(ObjectKind::Index, id)
            .with_context(|| format!("removing the damaged {}", index_name(id)))?;
    }
    Ok(report)
}

/// Reads the headers of `packs` with a few requests in flight (two small
/// range reads per pack; a whole lost index on an object store is many
/// round trips); results in pack order.
#[allow(clippy::type_complexity)]
fn read_headers(repo: &Repository, packs: &[(Id, u64)]) -> Vec<(Id, Result<Vec<PackEntry>>)> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(packs.len()));
    std::thread::scope(|s| {
        for _ in 0..READERS.min(packs.len()) {
            s.spawn(|| {
                while let Some((pack, size)) = packs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let header = read_header(repo, pack, *size);
                    results.lock().expect("results").push((*pack, header));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|r| r.0);
    results
}

/// Reads and opens one pack's header: its trailer, then the sealed header.
fn read_header(repo: &Repository, pack: &Id, size: u64) -> Result<Vec<PackEntry>> {
    repo.pack_reader().read_header(pack, size)
}
