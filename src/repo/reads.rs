//! Reading blobs and trees through the index (and the tree pack cache).

use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::blob::BlobType;
use super::index::{Index, IndexFile};
use super::tree::Tree;
use super::{ObjectKind, Repository, layout};
use crate::id::Id;

impl Repository {
    /// Reads one blob, verifying it; when it is in several packs and one
    /// read fails, the next location is tried.
    ///
    /// Trees come from the local tree pack cache when the repository is on
    /// an object store: the first miss fetches every tree pack not cached
    /// yet, each whole with one read, and the rest are local reads.
    pub fn read_blob(&self, index: &Index, kind: BlobType, id: &Id) -> Result<Vec<u8>> {
        if kind == BlobType::Tree
            && let Some(plain) = self.read_cached_tree(index, id)
        {
            return Ok(plain);
        }
        let locations = index.locations(id);
        if locations.is_empty() {
            bail!(
                "blob {id} is not in the index (repository damaged? `strata check` tells; `strata repair index` re-indexes packs whose index file was lost)"
            );
        }
        let mut first_error = None;
        for (pack, e) in locations {
            if e.kind != kind {
                bail!("blob {id} has the wrong type");
            }
            let read = self
                .pack_reader()
                .read_blob(&pack, &e)
                .with_context(|| format!("blob {} in pack {}", id.short(), layout::pack(&pack)));
            match read {
                Ok(plain) => return Ok(plain),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        Err(first_error.expect("at least one location was tried"))
    }

    /// Fetches every tree pack the index names that is not in the local
    /// tree pack cache yet, concurrently, before a walk over trees (each
    /// command does it anyway at its first tree read; calling it earlier
    /// only moves the wait). Nothing happens for a local repository or
    /// without a cache.
    pub fn prefetch_trees(&self, index: &Index) {
        if let Some(packs) = &self.tree_packs {
            packs.prefetch_once(
                self.pack_reader(),
                index,
                self.use_cache.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
    }

    /// On a cold open (index files fetched while the key was derived, see
    /// `early.rs`), fetches the tree packs those index files name into the
    /// tree pack cache, so a command can do it while it takes its lock and
    /// lists; nothing otherwise. Only a head start: reads still go by the
    /// index the command loads itself, and every blob is verified.
    pub fn prefetch_trees_early(&self) {
        if self.tree_packs.is_none() {
            return;
        }
        let files = self.early.peek(layout::prefix(ObjectKind::Index));
        if files.is_empty() {
            return;
        }
        let mut index = Index::default();
        for (name, sealed) in files {
            let Some(id) = layout::object_id_of(ObjectKind::Index, &name) else {
                continue;
            };
            if let Ok(plain) = self.open_object(ObjectKind::Index, &id, &sealed)
                && let Ok(file) = IndexFile::decode(&plain)
            {
                index.add_file(&file);
            }
        }
        self.prefetch_trees(&index);
    }

    /// Puts a tree pack this process just wrote (as the pieces it was
    /// uploaded in) into the tree pack cache, so the next walk over its
    /// trees needs no request; nothing without a cache. Best effort.
    pub fn cache_tree_pack(&self, pack: &Id, parts: &[bytes::Bytes]) {
        if let Some(packs) = &self.tree_packs {
            packs.insert(pack, parts);
        }
    }

    /// Reads a tree blob through the tree pack cache, from the first of its
    /// locations that is a tree pack; `None` when there is no cache or it
    /// cannot serve the blob (then it is read on its own).
    fn read_cached_tree(&self, index: &Index, id: &Id) -> Option<Vec<u8>> {
        let packs = self.tree_packs.as_ref()?;
        let trusted = self.use_cache.load(std::sync::atomic::Ordering::Relaxed);
        index
            .locations(id)
            .into_iter()
            .filter(|(pack, e)| e.kind == BlobType::Tree && index.is_tree_pack(pack))
            .find_map(|(pack, e)| {
                packs.read_blob(self.pack_reader(), &self.key, index, &pack, &e, trusted)
            })
    }

    /// Reads and decodes a tree, bypassing the cache: for walks that visit
    /// each tree once, where the cache would only hold memory.
    pub fn read_tree(&self, index: &Index, id: &Id) -> Result<Tree> {
        let plain = self.read_blob(index, BlobType::Tree, id)?;
        Tree::decode(&plain).with_context(|| format!("tree {id}"))
    }

    /// Loads a tree, cached.
    pub fn load_tree(&self, index: &Index, id: &Id) -> Result<Arc<Tree>> {
        if let Some(t) = self.tree_cache.lock().expect("tree cache").get(id) {
            return Ok(t.clone());
        }
        let tree = Arc::new(self.read_tree(index, id)?);
        let mut cache = self.tree_cache.lock().expect("tree cache");
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(*id, tree.clone());
        Ok(tree)
    }
}
