//! The one pack writer: sealed blobs into packs of the configured size,
//! data and trees apart (a pack never mixes them: the tree pack cache
//! relies on it), stored with one PUT each. Backup's packer and prune's
//! repacking write packs through it; a local backup streams its packs to
//! spool files instead (`backup/saver.rs`), with the same builder.

use anyhow::Result;

use super::Repository;
use super::blob::{BlobType, SealedBlob};
use super::layout;
use super::pack::{FinishedPack, PackBuilder};

/// Open packs, one for data and one for trees.
pub struct PackWriter {
    target: usize,
    open: [PackBuilder; 2],
}

impl PackWriter {
    /// Packs handed over once they hold `target` bytes of blobs.
    pub fn new(target: usize) -> PackWriter {
        PackWriter {
            target,
            open: [PackBuilder::new(), PackBuilder::new()],
        }
    }

    /// Adds a sealed blob; returns the pack it filled, finished.
    pub fn add(&mut self, repo: &Repository, blob: SealedBlob) -> Option<FinishedPack> {
        let slot = usize::from(blob.kind == BlobType::Tree);
        let builder = &mut self.open[slot];
        builder.add(blob);
        (builder.len() >= self.target).then(|| std::mem::take(builder).finish(repo.key()))
    }

    /// Finishes the packs still open (none when empty).
    pub fn finish(self, repo: &Repository) -> Vec<FinishedPack> {
        self.open
            .into_iter()
            .filter(|b| !b.is_empty())
            .map(|b| b.finish(repo.key()))
            .collect()
    }
}

/// Stores a finished pack with one PUT of its pieces; a pack of trees also
/// goes to the local tree pack cache, so the next walk over its trees needs
/// no request.
pub fn store_pack(repo: &Repository, pack: &FinishedPack) -> Result<()> {
    repo.backend()
        .put_parts(&layout::pack(&pack.id), &pack.parts)?;
    if pack.entries.iter().all(|e| e.kind == BlobType::Tree) {
        repo.cache_tree_pack(&pack.id, &pack.parts);
    }
    Ok(())
}
