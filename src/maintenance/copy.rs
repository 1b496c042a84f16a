//! `strata copy`: snapshots from another repository (another password,
//! another provider) into this one.
//!
//! Each file's chunks are read from the source, given this repository's ids
//! (keyed by its own key) and stored only when new here, so a copy
//! deduplicates against everything already in the target. Trees are written
//! again with the new ids; the snapshot keeps its metadata and records
//! where it came from (`original`). A copy that stops part-way leaves
//! indexed packs that the next run re-uses, and snapshots already copied are
//! recognised by their `original` and skipped, so running it again resumes.
//! The source's chunk boundaries are kept (the target's secret gear table
//! would cut elsewhere), so later backups into the target deduplicate
//! against copied data only where files are unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::backup::saver::Saver;
use crate::id::Id;
use crate::repo::blob::BlobType;
use crate::repo::index::Index;

use crate::repo::markers::lock_and_load_dedup_index;
use crate::repo::snapshot::{OriginalSnapshot, Snapshot};
use crate::repo::tree::NodeKind;
use crate::repo::{ObjectKind, OnDamage, Repository};

/// Options of a copy.
#[derive(Debug, Clone, Copy)]
pub struct CopyOptions {
    /// Seal and compress threads.
    pub threads: usize,
    /// Concurrent pack uploads.
    pub uploads: usize,
}

/// One snapshot copied.
#[derive(Debug, Serialize)]
pub struct Copied {
    /// Its id in the source.
    pub source: Id,
    /// Its id here.
    pub target: Id,
    /// Bytes added to this repository (packs as stored).
    pub data_added: u64,
}

/// What a copy did.
#[derive(Debug, Default, Serialize)]
pub struct CopyReport {
    /// Snapshots copied.
    pub copied: Vec<Copied>,
    /// Source snapshots already here (copied before), with their id here.
    pub skipped: Vec<(Id, Id)>,
}

/// Source ids mapped to target ids, kept across the snapshots of one run
/// (a tree or chunk shared by several snapshots is translated once).
#[derive(Default)]
struct Translation {
    blobs: HashMap<Id, Id>,
    trees: HashMap<Id, Id>,
}

/// Copies `wanted` (snapshots of `src`) into `dst`, oldest first.
pub fn copy_snapshots(
    src: &Repository,
    dst: &Arc<Repository>,
    wanted: &[(Id, Snapshot)],
    opts: CopyOptions,
) -> Result<CopyReport> {
    let mut report = CopyReport::default();
    let source_repo = src.config().id.clone();
    let here: HashMap<Id, Id> = dst
        .snapshots(OnDamage::Skip)?
        .objects
        .into_iter()
        .filter_map(|(id, s)| {
            let o = s.original?;
            (o.repository == source_repo).then_some((o.snapshot, id))
        })
        .collect();
    let src_index = src.load_index()?;
    let mut translation = Translation::default();
    for (id, snap) in wanted {
        if let Some(there) = here.get(id) {
            report.skipped.push((*id, *there));
            continue;
        }
        let copied = copy_one(src, &src_index, dst, *id, snap, opts, &mut translation)
            .with_context(|| format!("copying snapshot {}", id.short()))?;
        report.copied.push(copied);
    }
    Ok(report)
}

fn copy_one(
    src: &Repository,
    src_index: &Index,
    dst: &Arc<Repository>,
    id: Id,
    snap: &Snapshot,
    opts: CopyOptions,
    translation: &mut Translation,
) -> Result<Copied> {
    // As a backup does: lock, the markers it has seen, then the index
    // without the packs they doom (docs/PRUNE.md).
    let (lock, index) = lock_and_load_dedup_index(dst)?;
    let index = Arc::new(index);
    // Translated ids are only good while their blobs are indexed here.
    translation.blobs.retain(|_, t| index.contains(t));
    translation.trees.retain(|_, t| index.contains(t));
    let saver = Saver::start(dst.clone(), index, opts.threads.max(1), opts.uploads.max(1));
    let root = Copier {
        src,
        src_index,
        saver: &saver,
        dst,
        translation,
    }
    .tree(&snap.tree);
    let totals = saver.finish().context("saving data to the repository")?;
    let root = root?;
    let mut copy = snap.clone();
    copy.tree = root;
    // The parent is an id of the source repository.
    copy.parent = None;
    copy.original = Some(OriginalSnapshot {
        repository: src.config().id.clone(),
        snapshot: id,
    });
    if let Some(pool) = dst.backend().replicated() {
        pool.heal_lagging();
    }
    lock.check_fresh()?;
    let target = dst.save_object(ObjectKind::Snapshot, &copy.encode())?;
    lock.release();
    Ok(Copied {
        source: id,
        target,
        data_added: totals.stored_added,
    })
}

/// Copies trees and data blobs of one snapshot from the source repository
/// into this one, remembering what it translated.
struct Copier<'a> {
    src: &'a Repository,
    src_index: &'a Index,
    saver: &'a Saver,
    dst: &'a Repository,
    translation: &'a mut Translation,
}

impl Copier<'_> {
    /// Writes the tree `id` of the source (and everything below it) here;
    /// returns its id here.
    fn tree(&mut self, id: &Id) -> Result<Id> {
        if let Some(t) = self.translation.trees.get(id) {
            return Ok(*t);
        }
        let mut tree = self.src.read_tree(self.src_index, id)?;
        for node in &mut tree.nodes {
            match node.kind {
                NodeKind::Dir => {
                    let sub = node
                        .subtree
                        .with_context(|| format!("a directory without a tree in tree {id}"))?;
                    node.subtree = Some(self.tree(&sub)?);
                }
                NodeKind::File => {
                    for blob in &mut node.content {
                        *blob = self.blob(blob)?;
                    }
                }
                _ => {}
            }
        }
        let (new, _) = self.saver.save_if_new(BlobType::Tree, &tree.encode())?;
        self.translation.trees.insert(*id, new);
        Ok(new)
    }

    /// Writes the data blob `id` of the source here (re-keyed); returns its
    /// id here.
    fn blob(&mut self, id: &Id) -> Result<Id> {
        if let Some(t) = self.translation.blobs.get(id) {
            return Ok(*t);
        }
        let plain = self.src.read_blob(self.src_index, BlobType::Data, id)?;
        let new = self.dst.key().id_of(&plain);
        if self.saver.claim(&new) {
            self.saver.save(BlobType::Data, new, plain)?;
        }
        self.translation.blobs.insert(*id, new);
        Ok(new)
    }
}
