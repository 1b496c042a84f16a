//! Reads made while the password's key is derived.
//!
//! On a machine with no cache for the repository (a new pod, a restarted
//! container), every command would fetch the index files and snapshots one
//! round trip after the key derivation. They are listed and fetched during
//! it instead, newest first within a bound, and kept as the sealed bytes
//! the store sent. Nothing is trusted early: a command still lists each
//! folder when it needs to (after its lock, for a backup) and takes from
//! here only objects that listing names, verified like any read
//! ([`Repository::open_object`](super::Repository::open_object)).
//!
//! Commands that only read (restore, `ls`, `snapshots`, `diff`, `stats`,
//! `dump`) may also take the listings themselves
//! ([`open_for_reading`](super::Repository::open_for_reading)): each is
//! used once, by the first listing of its folder, never once the handle
//! needs complete views; such a command sees the repository as it was when
//! it opened, as if it had started 100 ms earlier.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{ObjectKind, layout};
use crate::store::{Backend, ObjectInfo};

/// At most this many objects are fetched early...
const MAX_OBJECTS: usize = 64;
/// ...and at most this many bytes (by their listed sizes).
const MAX_BYTES: u64 = 32 << 20;

/// Sealed objects fetched early, by object name, and listings kept for
/// reading commands, by folder; each is taken once.
#[derive(Default)]
pub(super) struct EarlyReads {
    objects: Mutex<HashMap<String, Vec<u8>>>,
    listings: Mutex<HashMap<&'static str, Vec<ObjectInfo>>>,
}

/// What to do early.
#[derive(Clone, Copy)]
pub(super) struct EarlyPlan {
    /// Fetch index files and snapshots (no local cache here).
    pub objects: bool,
    /// Keep the listings for the command (it only reads).
    pub listings: bool,
}

impl EarlyReads {
    /// Lists the index files and snapshots (and, to keep the listings, the
    /// deletion records) and fetches the newest objects within the bounds.
    /// Failures only mean nothing was done early.
    pub(super) fn fetch(backend: &dyn Backend, plan: EarlyPlan) -> EarlyReads {
        let mut folders = vec![
            layout::prefix(ObjectKind::Index),
            layout::prefix(ObjectKind::Snapshot),
        ];
        if plan.listings {
            folders.push(layout::DELETED);
        }
        let lists: Vec<(&'static str, Option<Vec<ObjectInfo>>)> = std::thread::scope(|s| {
            let lists: Vec<_> = folders
                .iter()
                .map(|f| s.spawn(move || backend.list(f).ok()))
                .collect();
            folders
                .iter()
                .zip(lists)
                .map(|(f, h)| (*f, h.join().ok().flatten()))
                .collect()
        });
        let listings: HashMap<&'static str, Vec<ObjectInfo>> = match plan.listings {
            true => lists
                .iter()
                .filter_map(|(f, l)| Some((*f, l.clone()?)))
                .collect(),
            false => HashMap::new(),
        };
        let mut listed: Vec<ObjectInfo> = match plan.objects {
            true => lists
                .into_iter()
                .filter(|(f, _)| *f != layout::DELETED)
                .flat_map(|(_, l)| l.unwrap_or_default())
                .collect(),
            false => Vec::new(),
        };
        listed.sort_by_key(|o| std::cmp::Reverse(o.modified));
        let mut total = 0u64;
        let wanted: Vec<String> = listed
            .into_iter()
            .take_while(|o| {
                total = total.saturating_add(o.size);
                total <= MAX_BYTES
            })
            .take(MAX_OBJECTS)
            .map(|o| o.key)
            .collect();
        let fetched = super::each_at_once(&wanted, |name| backend.get(name).ok());
        let objects = wanted
            .into_iter()
            .zip(fetched)
            .filter_map(|(name, bytes)| Some((name, bytes?)))
            .collect();
        EarlyReads {
            objects: Mutex::new(objects),
            listings: Mutex::new(listings),
        }
    }

    /// The listing of `folder` made at open, if kept (and not taken before).
    pub(super) fn take_listing(&self, folder: &str) -> Option<Vec<ObjectInfo>> {
        self.listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(folder)
    }

    /// The sealed bytes of `name`, if fetched early (and not taken before).
    pub(super) fn take(&self, name: &str) -> Option<Vec<u8>> {
        self.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }

    /// Copies of what was fetched of a folder, left in place.
    pub(super) fn peek(&self, folder: &str) -> Vec<(String, Vec<u8>)> {
        self.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(name, _)| name.starts_with(folder))
            .map(|(name, bytes)| (name.clone(), bytes.clone()))
            .collect()
    }

    /// Drops what is left of a folder once its objects were loaded (objects
    /// the command's own listing did not name).
    pub(super) fn drop_folder(&self, folder: &str) {
        self.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|name, _| !name.starts_with(folder));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::crypto::keyfile::KdfParams;
    use crate::repo::index::IndexFile;
    use crate::repo::{OnDamage, Repository};
    use crate::store::memory::{MemStore, SimClock};

    const KDF: KdfParams = KdfParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };

    /// A repository on a store with one index file, opened again (no key
    /// file of it known on this machine, so the index was fetched early).
    fn reopened() -> (Arc<MemStore>, Repository, String) {
        let store = MemStore::new("m", SimClock::new(), 0);
        let repo = Repository::init(store.clone(), b"pw", KDF).unwrap();
        let id = repo
            .save_index(&IndexFile {
                supersedes: vec![crate::id::Id([7; 32])],
                packs: Vec::new(),
            })
            .unwrap();
        let name = layout::object(ObjectKind::Index, &id);
        let repo = Repository::open(store.clone(), b"pw").unwrap();
        repo.bypass_cache();
        (store, repo, name)
    }

    #[test]
    fn index_files_are_fetched_while_the_key_is_derived() {
        let (store, repo, name) = reopened();
        // Gone from the store since: only the early copy can serve it.
        let sealed = store.get(&name).unwrap();
        store.put(&name, b"not the sealed object".to_vec()).unwrap();
        let loaded = repo.index_files(OnDamage::Refuse).unwrap();
        assert_eq!(loaded.objects.len(), 1);
        assert_eq!(loaded.objects[0].1.supersedes, vec![crate::id::Id([7; 32])]);
        store.put(&name, sealed).unwrap();
    }

    #[test]
    fn an_object_the_listing_no_longer_names_is_not_used() {
        let (store, repo, name) = reopened();
        store.delete(&name).unwrap();
        let loaded = repo.index_files(OnDamage::Refuse).unwrap();
        assert!(loaded.objects.is_empty(), "a deleted index file came back");
    }

    #[test]
    fn damaged_early_bytes_are_not_trusted() {
        let (_store, repo, name) = reopened();
        repo.early
            .objects
            .lock()
            .unwrap()
            .insert(name, b"planted".to_vec());
        let loaded = repo.index_files(OnDamage::Refuse).unwrap();
        assert_eq!(loaded.objects.len(), 1, "read again from the store");
    }

    /// A reading command lists at open, once per folder; other commands
    /// and complete views always list when they load.
    #[test]
    fn listings_made_at_open_serve_only_a_reading_command_once() {
        let store = MemStore::new("m", SimClock::new(), 0);
        let repo = Repository::init(store.clone(), b"pw", KDF).unwrap();
        repo.save_index(&IndexFile::default()).unwrap();
        let reading = Repository::open_for_reading(store.clone(), b"pw").unwrap();
        let writing = Repository::open(store.clone(), b"pw").unwrap();
        let deleting = Repository::open_for_reading(store.clone(), b"pw").unwrap();
        deleting.require_complete_views(None).unwrap();
        // Written after they opened.
        repo.save_index(&IndexFile {
            supersedes: vec![crate::id::Id([9; 32])],
            packs: Vec::new(),
        })
        .unwrap();
        let count = |r: &Repository| r.index_files(OnDamage::Refuse).unwrap().objects.len();
        assert_eq!(count(&reading), 1, "the listing made at open");
        assert_eq!(count(&reading), 2, "taken once: the next listing is new");
        assert_eq!(count(&writing), 2);
        assert_eq!(count(&deleting), 2, "complete views list anew");
    }

    #[test]
    fn at_most_the_bounds_are_fetched_newest_first() {
        let clock = SimClock::new();
        let store = MemStore::new("m", clock.clone(), 0);
        for i in 0..MAX_OBJECTS + 6 {
            clock.advance(1);
            store.put(&format!("index/{i:064x}"), vec![0; 16]).unwrap();
        }
        let plan = EarlyPlan {
            objects: true,
            listings: false,
        };
        let early = EarlyReads::fetch(store.as_ref(), plan);
        let got = early.objects.lock().unwrap().len();
        assert_eq!(got, MAX_OBJECTS);
        let newest = format!("index/{:064x}", MAX_OBJECTS + 5);
        assert!(early.take(&newest).is_some());
        assert!(early.take(&newest).is_none(), "taken twice");
        assert!(early.take(&format!("index/{:064x}", 0)).is_none());
    }
}
