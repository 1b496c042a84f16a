//! A bounded local cache of whole tree packs, so that walking a snapshot
//! (a backup's parent, restore, `ls`, `diff`, `check`, prune's used set)
//! costs one request per tree pack instead of one per directory, and none
//! once the packs are cached.
//!
//! Packs are stored as fetched (sealed) under
//! `<cache dir>/<repository id>/treepacks/<pack id>`. A pack is written
//! there only after its header and every blob in it authenticated, and each
//! blob read from the cache is authenticated again ([`open_blob`]), so a
//! damaged or planted file is dropped and fetched anew, never trusted.
//! Only packs that the index lists as holding trees and nothing else are
//! cached; a local repository is not cached at all (its reads are already
//! local).
//!
//! The cache is bounded: when it holds more than its limit
//! (`STRATA_TREE_CACHE_MIB`, default [`DEFAULT_LIMIT_MIB`] MiB), the least
//! recently used packs are removed (a pack's file time is set when a
//! process first uses it); 0 turns the cache off. Packs the index no longer names (pruned) are
//! removed when a command prefetches.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};

use super::blob::open_blob;
use super::index::Index;
use super::pack::PackEntry;
use super::pack_read::PackReader;
use crate::crypto::MasterKey;
use crate::id::Id;

/// The default bound of a repository's tree pack cache, in MiB.
pub const DEFAULT_LIMIT_MIB: u64 = 256;
/// Packs fetched at once when filling the cache.
const FETCHES: usize = 8;
/// Bytes of packs held in memory at once while filling (one pack larger
/// than this is still fetched, alone).
const MAX_IN_FLIGHT: u64 = 64 << 20;
/// A cached pack the index does not name is kept this long after its last
/// use (another process may have cached it from a newer index).
const UNNAMED_GRACE: Duration = Duration::from_secs(600);

/// The tree pack cache of one repository, for one process.
pub struct PackCache {
    dir: PathBuf,
    limit: u64,
    /// Packs fetched by this process, or whose file time it already set.
    used: Mutex<HashSet<Id>>,
    /// Packs that could not be fetched whole and verified: their trees are
    /// read blob by blob, as without a cache.
    failed: Mutex<HashSet<Id>>,
    /// Serializes fetches of single packs (two walkers missing one pack
    /// fetch it once).
    fetching: Mutex<()>,
    /// Whether every tree pack was fetched ahead already.
    prefetched: std::sync::atomic::AtomicBool,
}

/// The bound from `STRATA_TREE_CACHE_MIB`, else the default, in bytes.
fn limit_from_env() -> u64 {
    std::env::var("STRATA_TREE_CACHE_MIB")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_LIMIT_MIB)
        .saturating_mul(1 << 20)
}

impl PackCache {
    /// The tree pack cache under a repository's cache directory; `None`
    /// when its bound is 0 (`STRATA_TREE_CACHE_MIB=0` turns it off).
    pub fn new(repo_cache_dir: &Path) -> Option<PackCache> {
        let limit = limit_from_env();
        (limit > 0).then(|| PackCache::with_limit(repo_cache_dir, limit))
    }

    /// The cache under a repository's cache directory, bounded to `limit` bytes.
    fn with_limit(repo_cache_dir: &Path, limit: u64) -> PackCache {
        PackCache {
            dir: repo_cache_dir.join("treepacks"),
            limit,
            used: Mutex::default(),
            failed: Mutex::default(),
            fetching: Mutex::new(()),
            prefetched: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn path(&self, pack: &Id) -> PathBuf {
        self.dir.join(pack.to_hex())
    }

    /// Reads a blob of a tree pack through the cache: from the cached file
    /// when there is one (and `trusted`, or this process fetched it), else
    /// by fetching the whole pack first. `None` when the pack cannot be
    /// fetched whole and verified, or the blob does not open from it: the
    /// caller then reads the blob on its own (which reports why it fails).
    ///
    /// On the first call, every tree pack of `index` not cached yet is
    /// fetched ahead, concurrently (see [`PackCache::prefetch`]).
    pub fn read_blob(
        &self,
        reader: PackReader<'_>,
        key: &MasterKey,
        index: &Index,
        pack: &Id,
        entry: &PackEntry,
        trusted: bool,
    ) -> Option<Vec<u8>> {
        if !self.prefetched.load(std::sync::atomic::Ordering::SeqCst) {
            self.prefetch_once(reader, index, trusted);
        }
        if self.failed.lock().ok()?.contains(pack) {
            return None;
        }
        if let Some(plain) = self.read_cached(key, pack, entry, trusted) {
            return Some(plain);
        }
        let _one = self.fetching.lock().ok()?;
        // Another thread may have fetched it meanwhile.
        if let Some(plain) = self.read_cached(key, pack, entry, trusted) {
            return Some(plain);
        }
        match self.fetch(reader, pack) {
            Ok(()) => {
                self.evict(None);
                self.read_cached(key, pack, entry, true)
                    .or_else(|| self.give_up(pack))
            }
            Err(e) => {
                tracing::debug!("tree pack {} not cached: {e:#}", pack.short());
                self.give_up(pack)
            }
        }
    }

    fn give_up(&self, pack: &Id) -> Option<Vec<u8>> {
        if let Ok(mut f) = self.failed.lock() {
            f.insert(*pack);
        }
        None
    }

    /// The blob from the cached pack file; a file that does not yield it
    /// is removed.
    fn read_cached(
        &self,
        key: &MasterKey,
        pack: &Id,
        entry: &PackEntry,
        trusted: bool,
    ) -> Option<Vec<u8>> {
        let first_use = !self.used.lock().ok()?.contains(pack);
        if first_use && !trusted {
            return None;
        }
        let path = self.path(pack);
        let file = std::fs::File::open(&path).ok()?;
        let mut sealed = vec![0u8; entry.stored_len as usize];
        let opened = file
            .read_exact_at(&mut sealed, entry.offset as u64)
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                open_blob(
                    key,
                    entry.kind,
                    &entry.id,
                    entry.compression,
                    entry.raw_len,
                    &sealed,
                )
            });
        match opened {
            Ok(plain) => {
                if first_use {
                    // Least recently used goes first when the cache is full.
                    let _ = file.set_modified(SystemTime::now());
                    if let Ok(mut u) = self.used.lock() {
                        u.insert(*pack);
                    }
                }
                Some(plain)
            }
            Err(e) => {
                tracing::debug!("cached tree pack {} dropped: {e:#}", pack.short());
                let _ = std::fs::remove_file(&path);
                if let Ok(mut u) = self.used.lock() {
                    u.remove(pack);
                }
                None
            }
        }
    }

    /// Fetches a whole pack with one read, verifies its header and every
    /// blob in it (a pool tries the next member when this fails), and
    /// stores it.
    fn fetch(&self, reader: PackReader<'_>, pack: &Id) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let mut stored = Ok(());
        reader.read_whole(pack, &|_| true, &mut |bytes, header, bad| {
            if let Some((k, err)) = bad.first() {
                bail!("blob {} is damaged: {err:#}", header[*k].id.short());
            }
            // Stored outside verification's verdict: a full local disk
            // must not make a pool reject a good copy.
            stored = self.store(pack, &[bytes]);
            Ok(())
        })?;
        stored?;
        if let Ok(mut u) = self.used.lock() {
            u.insert(*pack);
        }
        Ok(())
    }

    /// Stores a pack this process wrote, given as its pieces (every blob
    /// is still authenticated when read), then keeps the cache within its
    /// bound.
    pub fn insert(&self, pack: &Id, parts: &[bytes::Bytes]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len as u64 > self.limit || std::fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        let pieces: Vec<&[u8]> = parts.iter().map(|p| p.as_ref()).collect();
        if self.store(pack, &pieces).is_ok() {
            if let Ok(mut u) = self.used.lock() {
                u.insert(*pack);
            }
            self.evict(None);
        }
    }

    /// Writes a verified pack into the cache (a temporary file renamed into
    /// place, so readers never see part of one).
    fn store(&self, pack: &Id, pieces: &[&[u8]]) -> Result<()> {
        let path = self.path(pack);
        let tmp = path.with_extension(format!(
            "tmp{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| pieces.iter().try_for_each(|p| f.write_all(p)))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            bail!("writing {}: {e}", path.display());
        }
        Ok(())
    }

    /// [`PackCache::prefetch`] unless this process did it already (or is
    /// doing it: then this waits for it).
    pub fn prefetch_once(&self, reader: PackReader<'_>, index: &Index, trusted: bool) {
        let Ok(_one) = self.fetching.lock() else {
            return;
        };
        if !self.prefetched.load(std::sync::atomic::Ordering::SeqCst) {
            self.prefetch(reader, index, trusted);
        }
    }

    /// Fetches every tree pack `index` names that is not cached (or, when
    /// not `trusted`, every one not fetched by this process), up to the
    /// cache's bound, [`FETCHES`] at a time with at most [`MAX_IN_FLIGHT`]
    /// bytes in memory; then drops cached packs the index no longer names
    /// and evicts down to the bound.
    pub fn prefetch(&self, reader: PackReader<'_>, index: &Index, trusted: bool) {
        self.prefetched
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let cached: HashSet<Id> = self.listing().into_iter().map(|c| c.0).collect();
        let used = self.used.lock().map(|u| u.clone()).unwrap_or_default();
        let mut want: Vec<(Id, u64)> = Vec::new();
        let mut total = 0u64;
        for (pack, len) in index.tree_packs() {
            let have = match trusted {
                true => cached.contains(&pack),
                false => used.contains(&pack),
            };
            if have || total.saturating_add(len) > self.limit {
                continue;
            }
            total += len;
            want.push((pack, len));
        }
        if !want.is_empty() {
            if std::fs::create_dir_all(&self.dir).is_err() {
                return;
            }
            let queue = Mutex::new(want);
            let budget = Budget::new(MAX_IN_FLIGHT);
            std::thread::scope(|s| {
                for _ in 0..FETCHES {
                    s.spawn(|| {
                        loop {
                            let next = queue.lock().ok().and_then(|mut q| q.pop());
                            let Some((pack, len)) = next else { break };
                            budget.take(len);
                            if let Err(e) = self.fetch(reader, &pack) {
                                tracing::debug!("tree pack {} not cached: {e:#}", pack.short());
                                if let Ok(mut f) = self.failed.lock() {
                                    f.insert(pack);
                                }
                            }
                            budget.give(len);
                        }
                    });
                }
            });
        }
        self.evict(Some(index));
    }

    /// Cached packs: id, size and file time.
    fn listing(&self) -> Vec<(Id, u64, SystemTime)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                let meta = e.metadata().ok()?;
                match name.parse::<Id>() {
                    Ok(id) => Some((id, meta.len(), meta.modified().ok()?)),
                    Err(_) => {
                        // A temporary file left by a killed process.
                        let old = meta
                            .modified()
                            .ok()
                            .and_then(|t| t.elapsed().ok())
                            .is_some_and(|age| age > UNNAMED_GRACE);
                        if old {
                            let _ = std::fs::remove_file(e.path());
                        }
                        None
                    }
                }
            })
            .collect()
    }

    /// Removes packs `index` does not name (when given) and unused a while,
    /// then the least recently used ones until the cache is within bounds.
    fn evict(&self, index: Option<&Index>) {
        let mut cached = self.listing();
        if let Some(index) = index {
            let named: HashSet<Id> = index.pack_ids().iter().copied().collect();
            cached.retain(|(id, _, time)| {
                let stale = time.elapsed().is_ok_and(|age| age > UNNAMED_GRACE);
                if !named.contains(id) && stale {
                    let _ = std::fs::remove_file(self.path(id));
                    return false;
                }
                true
            });
        }
        let mut size: u64 = cached.iter().map(|c| c.1).sum();
        if size <= self.limit {
            return;
        }
        cached.sort_by_key(|c| c.2);
        for (id, len, _) in cached {
            if size <= self.limit {
                break;
            }
            if std::fs::remove_file(self.path(&id)).is_ok() {
                size = size.saturating_sub(len);
                if let Ok(mut u) = self.used.lock() {
                    u.remove(&id);
                }
            }
        }
    }
}

/// Bytes that may be held at once by concurrent fetches.
struct Budget {
    free: Mutex<u64>,
    cap: u64,
    freed: Condvar,
}

impl Budget {
    fn new(cap: u64) -> Budget {
        Budget {
            free: Mutex::new(cap),
            cap,
            freed: Condvar::new(),
        }
    }

    /// Waits until `n` bytes (at most the whole budget) are free, and takes them.
    fn take(&self, n: u64) {
        let n = n.min(self.cap);
        let Ok(mut free) = self.free.lock() else {
            return;
        };
        while *free < n {
            free = match self.freed.wait(free) {
                Ok(f) => f,
                Err(_) => return,
            };
        }
        *free -= n;
    }

    /// Gives back what [`Budget::take`] took.
    fn give(&self, n: u64) {
        let n = n.min(self.cap);
        if let Ok(mut free) = self.free.lock() {
            *free += n;
        }
        self.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::repo::blob::{BlobType, seal_blob};
    use crate::repo::layout;
    use crate::repo::pack::PackBuilder;
    use crate::store::memory::{MemStore, SimClock};
    use crate::store::{Backend, ObjectInfo};

    /// A memory store that counts reads.
    struct Counting {
        inner: Arc<MemStore>,
        reads: AtomicU64,
    }

    impl Backend for Counting {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
            self.inner.put(key, bytes)
        }
        fn get(&self, key: &str) -> Result<Vec<u8>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.get(key)
        }
        fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.get_range(key, range)
        }
        fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
            self.inner.list(prefix)
        }
        fn size(&self, key: &str) -> Result<u64> {
            self.inner.size(key)
        }
        fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key)
        }
        fn exists(&self) -> Result<bool> {
            self.inner.exists()
        }
        fn create(&self) -> Result<()> {
            self.inner.create()
        }
    }

    /// A pack's trees: plaintext and entry.
    type Trees = Vec<(Vec<u8>, PackEntry)>;

    struct Fixture {
        key: MasterKey,
        store: Counting,
        index: Index,
        /// Per pack: its id and its trees (plaintext, entry).
        packs: Vec<(Id, Trees)>,
        dir: tempfile::TempDir,
    }

    /// `n` tree packs of 50 trees each, stored and indexed.
    fn fixture(n: usize) -> Fixture {
        let key = MasterKey::generate();
        let store = Counting {
            inner: MemStore::new("m", SimClock::new(), 0),
            reads: AtomicU64::new(0),
        };
        let mut index = Index::default();
        let mut packs = Vec::new();
        for p in 0..n {
            let mut b = PackBuilder::new();
            let mut plains = Vec::new();
            for t in 0..50 {
                let plain = format!("{{\"tree\":{p},\"n\":{t}}}")
                    .repeat(t + 1)
                    .into_bytes();
                b.add(seal_blob(
                    &key,
                    BlobType::Tree,
                    key.id_of(&plain),
                    &plain,
                    3,
                ));
                plains.push(plain);
            }
            let pack = b.finish(&key);
            store.put(&layout::pack(&pack.id), pack.to_vec()).unwrap();
            index.add_pack(pack.id, &pack.entries);
            packs.push((pack.id, plains.into_iter().zip(pack.entries).collect()));
        }
        Fixture {
            key,
            store,
            index,
            packs,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    impl Fixture {
        fn reader(&self) -> PackReader<'_> {
            PackReader::new(&self.store, &self.key)
        }

        fn cache(&self) -> PackCache {
            PackCache::with_limit(self.dir.path(), 1 << 30)
        }

        /// Reads every tree through `cache`, checking each.
        fn read_all(&self, cache: &PackCache, trusted: bool) {
            for (pack, trees) in &self.packs {
                for (plain, e) in trees {
                    let got =
                        cache.read_blob(self.reader(), &self.key, &self.index, pack, e, trusted);
                    assert_eq!(got.as_deref(), Some(plain.as_slice()));
                }
            }
        }

        fn reads(&self) -> u64 {
            self.store.reads.load(Ordering::SeqCst)
        }

        fn file(&self, pack: &Id) -> PathBuf {
            self.dir.path().join("treepacks").join(pack.to_hex())
        }
    }

    #[test]
    fn one_read_per_pack_cold_none_warm() {
        let f = fixture(3);
        assert_eq!(f.index.tree_packs().count(), 3);
        f.read_all(&f.cache(), true);
        assert_eq!(f.reads(), 3, "one whole read per tree pack");
        // A later process: everything from disk.
        f.read_all(&f.cache(), true);
        assert_eq!(f.reads(), 3);
        // Untrusted (check): each pack is read from the store once more.
        f.read_all(&f.cache(), false);
        assert_eq!(f.reads(), 6);
    }

    #[test]
    fn packs_written_by_this_process_need_no_read() {
        let f = fixture(2);
        let cache = f.cache();
        for (pack, _) in &f.packs {
            let bytes = f.store.inner.get(&layout::pack(pack)).unwrap();
            let (a, b) = bytes.split_at(100);
            cache.insert(
                pack,
                &[
                    bytes::Bytes::from(a.to_vec()),
                    bytes::Bytes::from(b.to_vec()),
                ],
            );
        }
        f.read_all(&f.cache(), true);
        assert_eq!(f.reads(), 0);
    }

    #[test]
    fn damaged_cache_files_are_dropped_and_fetched_again() {
        let f = fixture(2);
        f.read_all(&f.cache(), true);
        let (a, b) = (f.packs[0].0, f.packs[1].0);
        // Flipped bytes, and a file cut short.
        let mut bytes = std::fs::read(f.file(&a)).unwrap();
        for x in bytes.iter_mut().step_by(13) {
            *x ^= 1;
        }
        std::fs::write(f.file(&a), bytes).unwrap();
        std::fs::write(f.file(&b), b"short").unwrap();
        f.read_all(&f.cache(), true);
        assert_eq!(f.reads(), 4, "both packs fetched again, once each");
        assert!(std::fs::metadata(f.file(&b)).unwrap().len() > 1000);
        f.read_all(&f.cache(), true);
        assert_eq!(f.reads(), 4);
    }

    #[test]
    fn a_damaged_stored_pack_is_not_cached() {
        let f = fixture(1);
        let (pack, trees) = &f.packs[0];
        let name = layout::pack(pack);
        let mut bytes = f.store.inner.get(&name).unwrap();
        bytes[5] ^= 1;
        f.store.inner.put(&name, bytes).unwrap();
        let cache = f.cache();
        for (_, e) in trees {
            assert!(
                cache
                    .read_blob(f.reader(), &f.key, &f.index, pack, e, true)
                    .is_none()
            );
        }
        assert_eq!(f.reads(), 1, "a pack that failed is not fetched again");
        assert!(!f.file(pack).exists());
    }

    #[test]
    fn the_cache_stays_within_its_bound_and_forgets_unnamed_packs() {
        let f = fixture(4);
        let len = f.index.tree_packs().next().unwrap().1;
        let mut cache = f.cache();
        cache.limit = len * 5 / 2;
        f.read_all(&cache, true);
        let held: u64 = cache.listing().iter().map(|c| c.1).sum();
        assert!(held <= cache.limit, "{held} > {}", cache.limit);
        assert!(cache.listing().len() >= 2);
        // A pack no index names, unused for longer than the grace period.
        let gone = Id([7; 32]);
        let old = SystemTime::now() - 2 * UNNAMED_GRACE;
        std::fs::write(f.file(&gone), b"x").unwrap();
        std::fs::File::options()
            .write(true)
            .open(f.file(&gone))
            .unwrap()
            .set_modified(old)
            .unwrap();
        cache.evict(Some(&f.index));
        assert!(!f.file(&gone).exists());
    }
}
