//! The repository format: object names, keys, config, packs, indexes, trees
//! and snapshots, and the handle that ties them to a [`Backend`].
//!
//! [`Repository`] is the one door to the stored objects: opening and
//! unlocking (`open.rs`), key files (`keys.rs`), sealed objects
//! (`objects.rs`), listings and deletion records (`listing.rs`), index and
//! snapshot loading (`loaders.rs`), blob and tree reads (`reads.rs`).

pub mod blob;
mod cache;
mod config;
pub mod deleted;
mod early;
pub mod index;
mod keys;
pub mod layout;
mod listing;
mod loaders;
pub mod lock;
pub mod markers;
mod objects;
mod open;
pub mod pack;
mod pack_cache;
pub mod pack_read;
pub mod pack_write;
mod reads;
mod seen;
pub mod snapshot;
pub mod tree;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;

pub use config::{FORMAT_VERSION, RepoConfig};
pub use loaders::{IndexUse, Loaded, OnDamage};
pub use objects::verify_stored;
pub use open::probe_config;
pub use pack_cache::DEFAULT_LIMIT_MIB as TREE_CACHE_DEFAULT_MIB;

use crate::chunker::Chunker;
use crate::crypto::MasterKey;
use crate::id::Id;
use crate::store::Backend;
use tree::Tree;

/// Kinds of whole objects sealed with the master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// The repository config.
    Config,
    /// An index file.
    Index,
    /// A snapshot.
    Snapshot,
    /// A prune deletion marker.
    Deletion,
    /// A backup or prune lock (random id; not content-addressed).
    Lock,
}

impl ObjectKind {
    fn ad(self, id: &Id) -> Vec<u8> {
        let tag: &[u8] = match self {
            ObjectKind::Config => b"strata:config:",
            ObjectKind::Index => b"strata:index:",
            ObjectKind::Snapshot => b"strata:snapshot:",
            ObjectKind::Deletion => b"strata:deletion:",
            ObjectKind::Lock => b"strata:lock:",
        };
        let mut ad = tag.to_vec();
        ad.extend_from_slice(&id.0);
        ad
    }
}

/// An open repository.
pub struct Repository {
    backend: Arc<dyn Backend>,
    key: MasterKey,
    config: RepoConfig,
    tree_cache: Mutex<HashMap<Id, Arc<Tree>>>,
    cache_dir: Option<std::path::PathBuf>,
    use_cache: std::sync::atomic::AtomicBool,
    /// Whole tree packs kept locally (object stores only).
    tree_packs: Option<pack_cache::PackCache>,
    /// The key file that unlocked the repository.
    key_file: Id,
    /// Damaged index files and snapshots already warned about by this process.
    damaged_warned: Mutex<std::collections::HashSet<Id>>,
    /// Set by commands that delete: every listing must then come from every
    /// pool member, with each member's times moved onto one clock (the
    /// offsets, per member, in seconds).
    complete_views: Mutex<Option<HashMap<String, i64>>>,
    /// Index files and snapshots fetched while the key was derived.
    early: early::EarlyReads,
    /// Set once a probe found that these credentials may delete where prune
    /// deletes ([`Repository::prune_delete_refusal`]).
    may_delete: std::sync::atomic::AtomicBool,
}

impl Repository {
    /// Reads index files and snapshots from the repository itself, never from
    /// the local cache (for `check`, which must judge what is stored).
    pub fn bypass_cache(&self) {
        self.use_cache
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// The storage backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The master key.
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// The repository config.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The chunker for this repository's secret gear table.
    pub fn chunker(&self) -> Result<Chunker> {
        Chunker::new(self.key.gear_table(), self.config.chunker)
    }

    /// Reports a warning once per process.
    fn warn_once(&self, msg: String) {
        let key = Id(*blake3::hash(msg.as_bytes()).as_bytes());
        if self
            .damaged_warned
            .lock()
            .expect("damaged object set")
            .insert(key)
        {
            tracing::warn!("{msg}");
        }
    }

    /// Warns about a damaged object, once per process.
    fn warn_damaged(&self, kind: ObjectKind, id: &Id, why: &str, consequence: &str) {
        if self
            .damaged_warned
            .lock()
            .expect("damaged object set")
            .insert(*id)
        {
            tracing::warn!(
                "{} is damaged ({why}); {consequence}",
                layout::object(kind, id)
            );
        }
    }
}

/// Requests in flight at once when loading many small objects.
const LOAD_CONCURRENCY: usize = 8;

/// `load` applied to every id (or name), up to [`LOAD_CONCURRENCY`] at once
/// (small objects on an object store: the round trips overlap); results in
/// order.
fn each_at_once<I: Sync, T: Send>(ids: &[I], load: impl Fn(&I) -> T + Sync) -> Vec<T> {
    if ids.len() <= 1 {
        return ids.iter().map(&load).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<T>>> = ids.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..LOAD_CONCURRENCY.min(ids.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(id) = ids.get(i) else { break };
                    let out = load(id);
                    *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(out);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .expect("every id loaded")
        })
        .collect()
}

/// The result of a request run on a scoped thread.
fn joined<T>(h: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    h.join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("a request thread panicked")))
}
