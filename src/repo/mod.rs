//! The repository format: object names, keys, config, packs, indexes, trees
//! and snapshots, and the handle that ties them to a [`Backend`].

pub mod blob;
mod cache;
mod config;
pub mod deleted;
pub mod index;
pub mod layout;
pub mod lock;
pub mod markers;
pub mod pack;
mod pack_cache;
pub mod pack_read;
pub mod pack_write;
mod seen;
pub mod snapshot;
pub mod tree;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};

pub use config::{FORMAT_VERSION, RepoConfig};
pub use pack_cache::DEFAULT_LIMIT_MIB as TREE_CACHE_DEFAULT_MIB;

use crate::chunker::Chunker;
use crate::crypto::keyfile::{KdfParams, KeyFile};
use crate::crypto::{self, MasterKey};
use crate::error::Fatal;
use crate::id::Id;
use crate::store::{Backend, is_not_found};
use blob::{BlobType, open_blob};
use index::{Index, IndexFile};
use snapshot::Snapshot;
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
}

/// Index files as loaded, damaged ones set aside.
#[derive(Default)]
pub struct LoadedIndexFiles {
    /// Usable index files that no other index file supersedes.
    pub files: Vec<(Id, IndexFile)>,
    /// Index files that failed verification or decoding, with the reason.
    pub damaged: Vec<(Id, String)>,
}

impl Repository {
    /// Creates a new repository at the backend's location with default settings.
    pub fn init(backend: Arc<dyn Backend>, password: &[u8], kdf: KdfParams) -> Result<Repository> {
        Self::init_with(backend, password, kdf, RepoConfig::new())
    }

    /// Creates a new repository with the given config.
    pub fn init_with(
        backend: Arc<dyn Backend>,
        password: &[u8],
        kdf: KdfParams,
        config: RepoConfig,
    ) -> Result<Repository> {
        if backend.exists()? {
            match backend.size(layout::CONFIG) {
                Ok(_) => bail!(
                    "a repository already exists at {}; use it, or choose another location",
                    backend.location()
                ),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        backend.create()?;
        let key = MasterKey::generate();
        RepoConfig::decode(&config.encode())?;
        let kf = KeyFile::create(&key, &config.id, password, kdf)?;
        let kf_bytes = kf.encode();
        let kf_id = Id(*blake3::hash(&kf_bytes).as_bytes());
        backend.put(&layout::key(&kf_id), kf_bytes)?;
        let key_file = kf_id;
        let plain = config.encode();
        let sealed = crypto::seal(
            key.encryption_key(),
            &ObjectKind::Config.ad(&Id::default()),
            &plain,
        );
        backend.put(layout::CONFIG, sealed)?;
        if let Some(pool) = backend.replicated() {
            let key = key.clone();
            pool.set_verifier(Arc::new(move |name, bytes| {
                verify_stored(&key, name, bytes)
            }));
        }
        Ok(Repository {
            tree_packs: tree_pack_cache(backend.as_ref(), &config.id),
            backend,
            key,
            cache_dir: cache::dir_for(&config.id),
            use_cache: std::sync::atomic::AtomicBool::new(true),
            config,
            tree_cache: Mutex::default(),
            key_file,
            damaged_warned: Mutex::default(),
            complete_views: Mutex::default(),
        })
    }

    /// Opens an existing repository with a password.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Repository> {
        // The config, the key listing and the key file that opened last are
        // fetched at once (one round trip instead of four on an object
        // store); the config is authenticated once the key is known.
        let hints = cache::key_hints();
        let store = backend.as_ref();
        let (config, keys, prefetched) = std::thread::scope(|s| {
            let config = s.spawn(|| store.get(layout::CONFIG));
            let keys = s.spawn(|| store.list(layout::KEYS));
            // More hints than this: other repositories' keys, not worth a
            // request each.
            let prefetched: HashMap<String, Vec<u8>> = match hints.len() {
                1..=2 => std::thread::scope(|s| {
                    let gets: Vec<_> = hints
                        .iter()
                        .map(|h| {
                            let name = format!("{}{}", layout::KEYS, h.to_hex());
                            s.spawn(move || store.get(&name).ok().map(|b| (name, b)))
                        })
                        .collect();
                    gets.into_iter()
                        .filter_map(|g| g.join().ok().flatten())
                        .collect()
                }),
                _ => HashMap::new(),
            };
            (joined(config), joined(keys), prefetched)
        });
        let sealed_config = match config {
            Ok(bytes) => Some(bytes),
            Err(e) if is_not_found(&e) => {
                return Err(Fatal::NoRepository(backend.location()).into());
            }
            // Read again below, with the pool's failover.
            Err(_) => None,
        };
        let (key, repo_id, key_file) =
            Self::unlock(backend.as_ref(), password, keys?, &prefetched)?;
        let ad = ObjectKind::Config.ad(&Id::default());
        let mut plain = sealed_config
            .and_then(|sealed| crypto::open(key.encryption_key(), &ad, &sealed).ok())
            .unwrap_or_default();
        if plain.is_empty() {
            backend
                .read(layout::CONFIG, &mut |sealed| {
                    plain = crypto::open(key.encryption_key(), &ad, sealed)?;
                    Ok(())
                })
                .context(
                    "the repository config does not authenticate (corrupted, or not this repository's key)",
                )?;
        }
        let config = RepoConfig::decode(&plain)?;
        if config.id != repo_id {
            bail!(
                "the key file belongs to repository {repo_id}, not {}",
                config.id
            );
        }
        if let Some(pool) = backend.replicated() {
            let key = key.clone();
            pool.set_verifier(Arc::new(move |name, bytes| {
                verify_stored(&key, name, bytes)
            }));
        }
        Ok(Repository {
            tree_packs: tree_pack_cache(backend.as_ref(), &config.id),
            backend,
            key,
            cache_dir: cache::dir_for(&config.id),
            use_cache: std::sync::atomic::AtomicBool::new(true),
            config,
            tree_cache: Mutex::default(),
            key_file,
            damaged_warned: Mutex::default(),
            complete_views: Mutex::default(),
        })
    }

    /// Tries the key files with the password; returns the master key, the
    /// repository id and the key file's id.
    ///
    /// Anyone who can write `keys/` can add key files, so trying one must
    /// cost little: a file listed as larger than a key file is skipped
    /// unread, and a key is derived only within
    /// [`OPEN_BOUNDS`](crate::crypto::keyfile::OPEN_BOUNDS). The key file that
    /// unlocked the repository last on this machine (the key hint in the
    /// local cache) is tried first, within the format's wider bounds (its
    /// bytes hash to its name, so it is the file that opened before); then
    /// the others, oldest first (planted files are newer than the one `init`
    /// wrote). Skipped and broken files are named in one warning.
    fn unlock(
        backend: &dyn Backend,
        password: &[u8],
        mut keys: Vec<crate::store::ObjectInfo>,
        prefetched: &HashMap<String, Vec<u8>>,
    ) -> Result<(MasterKey, String, Id)> {
        use crate::crypto::keyfile::{FORMAT_BOUNDS, MAX_KEYFILE_BYTES, OPEN_BOUNDS};
        if keys.is_empty() {
            bail!("the repository has no key files (keys/ is empty or missing)");
        }
        // A key file removed with `key remove` stays removed even when an
        // old copy turns up again (a member that was down, a restored bucket
        // version): the password it held may be the reason it was removed.
        if keys.len() > 1 {
            let deleted = deleted::load(backend, backend.list(layout::DELETED)?)?;
            let before = keys.len();
            keys.retain(|k| !deleted.contains(&k.key));
            if keys.len() < before {
                tracing::warn!(
                    "{} removed key file(s) turned up again and are ignored",
                    before - keys.len()
                );
            }
        }
        let total = keys.len();
        let hints = cache::key_hints();
        let hinted = |key: &str| layout::key_id_of(key).is_some_and(|id| hints.contains(&id));
        keys.sort_by(|a, b| {
            (!hinted(&a.key), a.modified, &a.key).cmp(&(!hinted(&b.key), b.modified, &b.key))
        });
        let (oversized, keys): (Vec<_>, Vec<_>) =
            keys.into_iter().partition(|k| k.size > MAX_KEYFILE_BYTES);
        let mut broken: Vec<String> = oversized
            .iter()
            .map(|k| {
                format!(
                    "{}: {} bytes, larger than a key file can be ({MAX_KEYFILE_BYTES}); not read",
                    k.key, k.size
                )
            })
            .collect();
        let warn = |broken: &[String]| {
            if !broken.is_empty() {
                tracing::warn!("unusable key files: {}", broken.join("; "));
            }
        };
        for info in keys {
            let bounds = match hinted(&info.key) {
                true => FORMAT_BOUNDS,
                false => OPEN_BOUNDS,
            };
            // Read with the checks as the verdict, so a pool serves the key
            // file from another member when one copy is damaged.
            let mut bytes = Vec::new();
            let check = |b: &[u8]| -> Result<()> {
                // The listed size may be stale (or a pool member's); check again.
                if b.len() as u64 > MAX_KEYFILE_BYTES {
                    bail!("{} bytes, larger than a key file can be", b.len());
                }
                // A key file is named by the BLAKE3 hash of its bytes, so a
                // damaged one is told apart from a wrong password.
                let named = info.key.rsplit('/').next().unwrap_or_default();
                if blake3::hash(b).to_hex().as_str() != named {
                    bail!("damaged (its content does not match its name)");
                }
                Ok(())
            };
            let attempt = match prefetched.get(&info.key).filter(|b| check(b).is_ok()) {
                Some(b) => {
                    bytes = b.clone();
                    Ok(())
                }
                None => backend.read(&info.key, &mut |b| {
                    check(b)?;
                    bytes = b.to_vec();
                    Ok(())
                }),
            }
            .and_then(|()| KeyFile::decode(&bytes)?.open_within(password, &bounds));
            match attempt {
                Ok(Some((key, repo_id))) => {
                    let id = layout::key_id_of(&info.key).unwrap_or_default();
                    warn(&broken);
                    cache::set_key_hint(&repo_id, &id);
                    return Ok((key, repo_id, id));
                }
                Ok(None) => {}
                Err(e) => broken.push(format!("{}: {}", info.key, crate::error::one_line(&e))),
            }
        }
        if broken.len() == total {
            bail!(
                "no usable key file: {}; restore keys/ from a copy of the repository",
                broken.join("; ")
            );
        }
        warn(&broken);
        Err(Fatal::WrongPassword.into())
    }

    /// The key file this session unlocked with.
    pub fn key_file(&self) -> Id {
        self.key_file
    }

    /// Every key file: its id and its public fields (or why it is unreadable).
    pub fn key_files(&self) -> Result<Vec<(Id, Result<KeyFile>)>> {
        let mut out = Vec::new();
        let deleted = self.deleted()?;
        for info in self.list(layout::KEYS)? {
            let Some(id) = layout::key_id_of(&info.key) else {
                continue;
            };
            if deleted.contains(&info.key) {
                continue;
            }
            let kf = self
                .backend
                .get(&info.key)
                .and_then(|b| KeyFile::decode(&b));
            out.push((id, kf));
        }
        Ok(out)
    }

    /// Deletes a key file. Refuses the last one and the one in use (a
    /// session must not saw off the branch it sits on).
    pub fn remove_key(&self, id: &Id) -> Result<()> {
        self.require_complete_views(None)?;
        let keys = self.key_files()?;
        if !keys.iter().any(|(k, _)| k == id) {
            bail!("no key file {}; see `strata key list`", id.short());
        }
        if keys.len() == 1 {
            bail!("refusing to remove the only key: the repository would be lost for good");
        }
        if *id == self.key_file {
            bail!(
                "refusing to remove the key in use; unlock with another password to remove it, or use `strata key passwd`"
            );
        }
        self.delete_recorded(&[layout::key(id)])
    }

    /// Adds a key file for another password.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<Id> {
        let kf = KeyFile::create(&self.key, &self.config.id, password, kdf)?;
        let bytes = kf.encode();
        let id = Id(*blake3::hash(&bytes).as_bytes());
        self.backend.put(&layout::key(&id), bytes)?;
        Ok(id)
    }

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

    /// Encrypts and stores a snapshot or index; returns its id.
    pub fn save_object(&self, kind: ObjectKind, plaintext: &[u8]) -> Result<Id> {
        let id = self.key.id_of(plaintext);
        let sealed = crypto::seal(self.key.encryption_key(), &kind.ad(&id), plaintext);
        self.backend.put(&layout::object(kind, &id), sealed)?;
        Ok(id)
    }

    /// Loads, decrypts and verifies a snapshot or index.
    pub fn load_object(&self, kind: ObjectKind, id: &Id) -> Result<Vec<u8>> {
        self.load_object_noting(kind, id, &mut None)
    }

    /// [`Repository::load_object`], noting in `rejected` why the last copy
    /// read was refused by verification (as opposed to not being read).
    fn load_object_noting(
        &self,
        kind: ObjectKind,
        id: &Id,
        rejected: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        let name = layout::object(kind, id);
        let folder = layout::prefix(kind);
        let cache = self.cache_dir.as_deref().filter(|_| {
            matches!(kind, ObjectKind::Index | ObjectKind::Snapshot)
                && self.use_cache.load(std::sync::atomic::Ordering::Relaxed)
        });
        if let Some(dir) = cache
            && let Some(sealed) = cache::get(dir, folder, id)
            && let Ok(plain) = self.open_object(kind, id, &sealed)
        {
            return Ok(plain);
        }
        let mut plain = Vec::new();
        self.backend
            .read(&name, &mut |sealed| {
                plain = self.open_object(kind, id, sealed).inspect_err(|e| {
                    *rejected = Some(crate::error::one_line(e));
                })?;
                if let Some(dir) = cache {
                    cache::put(dir, folder, id, sealed);
                }
                Ok(())
            })
            .with_context(|| format!("object {name}"))?;
        Ok(plain)
    }

    /// Loads and decodes a snapshot or index file, telling damage from a
    /// failed read: `Ok(Err(why))` when it fails verification or decoding,
    /// `Err` when it could not be read (not found included).
    fn load_decoded<T>(
        &self,
        kind: ObjectKind,
        id: &Id,
        decode: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<std::result::Result<T, String>> {
        let mut rejected = None;
        match self.load_object_noting(kind, id, &mut rejected) {
            Ok(plain) => Ok(decode(&plain).map_err(|e| crate::error::one_line(&e))),
            // Unsettled: some member could not be read, so the copies that
            // failed verification do not make the object damaged.
            Err(e) if is_not_found(&e) || crate::store::is_unsettled(&e) => Err(e),
            Err(e) => rejected.map(Err).ok_or(e),
        }
    }

    /// Stores an object under a chosen id (locks, which are rewritten in place).
    pub fn save_object_as(&self, kind: ObjectKind, id: &Id, plaintext: &[u8]) -> Result<()> {
        let sealed = crypto::seal(self.key.encryption_key(), &kind.ad(id), plaintext);
        self.backend.put(&layout::object(kind, id), sealed)
    }

    /// Loads an object stored with [`Repository::save_object_as`].
    pub fn load_object_as(&self, kind: ObjectKind, id: &Id) -> Result<Vec<u8>> {
        let name = layout::object(kind, id);
        let mut plain = Vec::new();
        self.backend
            .read(&name, &mut |sealed| {
                plain = crypto::open(self.key.encryption_key(), &kind.ad(id), sealed)?;
                Ok(())
            })
            .with_context(|| format!("object {name}"))?;
        Ok(plain)
    }

    /// Decrypts and verifies bytes of a stored object.
    pub fn open_object(&self, kind: ObjectKind, id: &Id, sealed: &[u8]) -> Result<Vec<u8>> {
        let plain = crypto::open(self.key.encryption_key(), &kind.ad(id), sealed)?;
        if self.key.id_of(&plain) != *id {
            bail!("content does not match its name");
        }
        Ok(plain)
    }

    /// From now on, every listing this handle makes comes from every pool
    /// member or fails (nothing may be deleted on a partial view), and
    /// modification times are moved onto one clock: each member's times
    /// are shifted by how far its time for `own_lock` (this command's lock,
    /// just written) is from the first member's. Fails when a member does
    /// not hold that lock: it missed a write, so its view cannot be trusted.
    pub fn require_complete_views(&self, own_lock: Option<Id>) -> Result<()> {
        let listings = self.backend.list_each(layout::prefix(ObjectKind::Lock))?;
        let mut offsets = HashMap::new();
        if let Some(lock) = own_lock {
            let name = layout::object(ObjectKind::Lock, &lock);
            let mut base = None;
            for l in &listings {
                let Some(t) = l
                    .objects
                    .iter()
                    .find(|o| o.key == name)
                    .and_then(|o| o.modified)
                else {
                    bail!(
                        "pool member {} missed this command's lock write; nothing is deleted while a member misses writes (see `strata pool status`)",
                        l.store
                    );
                };
                let base = *base.get_or_insert(t);
                offsets.insert(l.store.clone(), (t - base).num_seconds());
            }
        }
        *self.complete_views.lock().expect("complete views") = Some(offsets);
        Ok(())
    }

    /// Lists a folder: the union of what the members hold, or, once
    /// [`Repository::require_complete_views`] was called, a complete view
    /// (see there).
    pub fn list(&self, prefix: &str) -> Result<Vec<crate::store::ObjectInfo>> {
        let offsets = self.complete_views.lock().expect("complete views").clone();
        let Some(offsets) = offsets else {
            return self.backend.list(prefix);
        };
        let mut union: std::collections::BTreeMap<String, crate::store::ObjectInfo> =
            std::collections::BTreeMap::new();
        for l in self.backend.list_each(prefix)? {
            let shift = chrono::Duration::seconds(offsets.get(&l.store).copied().unwrap_or(0));
            for mut o in l.objects {
                o.modified = o.modified.map(|t| t - shift);
                crate::store::merge_newest(&mut union, o);
            }
        }
        Ok(union.into_values().collect())
    }

    /// Every pack stored, with its size in bytes, from listing the backend.
    pub fn list_packs(&self) -> Result<Vec<(Id, u64)>> {
        Ok(self
            .list(layout::DATA)?
            .into_iter()
            .filter_map(|o| Some((layout::pack_id_of(&o.key)?, o.size)))
            .collect())
    }

    /// Ids of objects of a kind, from listing the backend. Snapshots that a
    /// deletion record names are left out (forgotten stays forgotten, even
    /// when an old copy turns up again).
    pub fn list_ids(&self, kind: ObjectKind) -> Result<Vec<Id>> {
        let prefix = layout::prefix(kind);
        let mut ids = Vec::new();
        // Snapshots are checked against the deletion records: both
        // listings at once.
        let (listed, deleted) = match kind {
            ObjectKind::Snapshot => std::thread::scope(|s| {
                let deleted = s.spawn(|| self.list(layout::DELETED));
                let listed = self.list(prefix);
                (listed, joined(deleted))
            }),
            _ => (self.list(prefix), Ok(Vec::new())),
        };
        let listed = listed?;
        let deleted = match listed.is_empty() {
            true => deleted::Deleted::default(),
            false => deleted::load(self.backend.as_ref(), deleted?)?,
        };
        let mut revived = Vec::new();
        for info in listed {
            let name = info.key.rsplit('/').next().unwrap_or_default();
            match name.parse::<Id>() {
                Ok(_) if deleted.contains(&info.key) => revived.push(info.key),
                Ok(id) => ids.push(id),
                Err(_) => tracing::warn!("ignoring unexpected object {}", info.key),
            }
        }
        if !revived.is_empty() {
            self.warn_once(format!(
                "{} forgotten snapshot(s) turned up again and are ignored (e.g. {}): an old copy was put back; `strata forget` removed them before",
                revived.len(),
                revived[0]
            ));
        }
        ids.sort();
        if let Some(dir) = &self.cache_dir
            && matches!(kind, ObjectKind::Index | ObjectKind::Snapshot)
        {
            cache::retain(dir, prefix, &ids);
        }
        Ok(ids)
    }

    /// Every index file that no other index file supersedes; fails when one
    /// is damaged (for prune, which must see every pack that is in use).
    pub fn load_index_files(&self) -> Result<Vec<(Id, IndexFile)>> {
        let loaded = self.load_index_files_lenient()?;
        if let Some((id, why)) = loaded.damaged.first() {
            bail!(
                "{} is damaged ({why}){}: run `strata repair index` first",
                layout::object(ObjectKind::Index, id),
                match loaded.damaged.len() {
                    1 => String::new(),
                    n => format!(" and {} more index files", n - 1),
                }
            );
        }
        Ok(loaded.files)
    }

    /// Every usable index file that no other index file supersedes, with the
    /// damaged ones set aside instead of failing.
    pub fn load_index_files_lenient(&self) -> Result<LoadedIndexFiles> {
        match self.try_load_index_files() {
            // A prune compacted the index between our listing and reading.
            Err(e) if is_not_found(&e) => self.try_load_index_files(),
            other => other,
        }
    }

    fn try_load_index_files(&self) -> Result<LoadedIndexFiles> {
        let ids = self.list_ids(ObjectKind::Index)?;
        let mut loaded = LoadedIndexFiles::default();
        let decoded = each_at_once(&ids, |id| {
            self.load_decoded(ObjectKind::Index, id, IndexFile::decode)
        });
        for (id, file) in ids.into_iter().zip(decoded) {
            match file? {
                Ok(file) => loaded.files.push((id, file)),
                Err(why) => loaded.damaged.push((id, why)),
            }
        }
        let superseded: std::collections::HashSet<Id> = loaded
            .files
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        loaded.files.retain(|(id, _)| !superseded.contains(id));
        Ok(loaded)
    }

    /// The usable index files, warning once per damaged one: backup and
    /// restore go on without it (a backup stores its blobs again, a restore
    /// names the files it cannot complete).
    fn usable_index_files(&self) -> Result<Vec<(Id, IndexFile)>> {
        let loaded = self.load_index_files_lenient()?;
        for (id, why) in &loaded.damaged {
            self.warn_damaged(
                ObjectKind::Index,
                id,
                why,
                "the packs it lists are not used until `strata repair index` indexes them again",
            );
        }
        Ok(loaded.files)
    }

    /// The index without the given packs (a backup must not deduplicate
    /// against packs that prune has marked for deletion).
    pub fn load_index_without(&self, packs: &std::collections::HashSet<Id>) -> Result<Index> {
        let mut index = Index::default();
        // On a pool, deduplicate only against index files that a write
        // acknowledged by the pool would have left: one on fewer members
        // (a backup that failed while writing it) can vanish with the one
        // member holding it, and a snapshot relying on it would name blobs
        // in no index.
        let durable = self
            .backend
            .replicated()
            .map(|p| p.durable_keys(layout::prefix(ObjectKind::Index)));
        for (id, file) in self.usable_index_files()? {
            if durable
                .as_ref()
                .is_some_and(|d| !d.contains(&layout::object(ObjectKind::Index, &id)))
            {
                tracing::debug!(
                    "index file {} is not on enough members yet; not used for deduplication",
                    id.short()
                );
                continue;
            }
            for (pack, entries) in &file.packs {
                if !packs.contains(pack) {
                    index.add_pack(*pack, entries);
                }
            }
        }
        Ok(index)
    }

    /// Loads every usable index file into one in-memory index, skipping
    /// index files that another index file supersedes.
    pub fn load_index(&self) -> Result<Index> {
        let mut index = Index::default();
        for (_, file) in self.usable_index_files()? {
            index.add_file(&file);
        }
        Ok(index)
    }

    /// Saves an index file.
    pub fn save_index(&self, file: &IndexFile) -> Result<Id> {
        self.save_object(ObjectKind::Index, &file.encode())
    }

    /// Every snapshot, oldest first; fails when one is damaged (for forget
    /// and prune, which must weigh every snapshot).
    pub fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let (out, damaged) = self.load_snapshots()?;
        if let Some((id, why)) = damaged.first() {
            bail!(
                "{} is damaged ({why}): nothing can be restored from it; `strata repair snapshots` removes it",
                layout::object(ObjectKind::Snapshot, id)
            );
        }
        Ok(out)
    }

    /// Every readable snapshot, oldest first, warning once per damaged one.
    pub fn readable_snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let (out, damaged) = self.load_snapshots()?;
        for (id, why) in &damaged {
            self.warn_damaged(ObjectKind::Snapshot, id, why, "it is left out");
        }
        Ok(out)
    }

    /// Readable snapshots sorted oldest first, and the damaged ones with why.
    #[allow(clippy::type_complexity)]
    pub fn load_snapshots(&self) -> Result<(Vec<(Id, Snapshot)>, Vec<(Id, String)>)> {
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        let ids = self.list_ids(ObjectKind::Snapshot)?;
        self.notice_rollback(&ids)?;
        let decoded = each_at_once(&ids, |id| {
            self.load_decoded(ObjectKind::Snapshot, id, Snapshot::decode)
        });
        for (id, snap) in ids.into_iter().zip(decoded) {
            match snap {
                Ok(Ok(snap)) => out.push((id, snap)),
                Ok(Err(why)) => damaged.push((id, why)),
                // Forgotten between listing and reading.
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((out, damaged))
    }

    /// Warns when snapshots this machine saw before are gone without a
    /// deletion record (see [`seen`]).
    fn notice_rollback(&self, listed: &[Id]) -> Result<()> {
        let mut deleted = None;
        let gone = seen::check_and_record(&self.config.id, listed, |id| {
            let d = deleted.get_or_insert_with(|| self.deleted().unwrap_or_default());
            d.contains(&layout::object(ObjectKind::Snapshot, id))
        });
        if !gone.is_empty() {
            self.warn_once(format!(
                "{} snapshot(s) this machine saw before are gone without a deletion record (e.g. {}): the repository was rolled back or snapshots were deleted outside strata; check the storage's access logs",
                gone.len(),
                gone[0].short()
            ));
        }
        Ok(())
    }

    /// The deletion records (see [`deleted`]).
    pub fn deleted(&self) -> Result<deleted::Deleted> {
        deleted::load(self.backend.as_ref(), self.list(layout::DELETED)?)
    }

    /// Records that `keys` are deleted on purpose, then deletes them (on
    /// every pool member: a member that misses the delete is finished by
    /// `pool repair`, which honours the record).
    pub fn delete_recorded(&self, keys: &[String]) -> Result<()> {
        deleted::record(self.backend.as_ref(), keys.iter().cloned())?;
        for k in keys {
            self.backend.delete(k)?;
        }
        Ok(())
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

    /// Resolves `latest`, a full id or a unique id prefix.
    pub fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        let mut all = self.readable_snapshots()?;
        if spec == "latest" {
            return all.pop().context("the repository has no snapshots yet");
        }
        if spec.is_empty() || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("{spec:?} is not a snapshot id: give an id, a unique id prefix, or `latest`");
        }
        let spec = spec.to_ascii_lowercase();
        let mut matches: Vec<_> = all
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(&spec))
            .collect();
        match matches.len() {
            0 => bail!("no snapshot matches {spec:?} (see `strata snapshots`)"),
            1 => Ok(matches.pop().expect("one match")),
            n => bail!("{n} snapshots match {spec:?}; give more digits"),
        }
    }

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
            let read = pack_read::PackReader::new(self.backend.as_ref(), &self.key)
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
            packs.prefetch(
                self.backend.as_ref(),
                &self.key,
                index,
                self.use_cache.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
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
                packs.read_blob(self.backend.as_ref(), &self.key, index, &pack, &e, trusted)
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

/// The tree pack cache for a repository on `backend`: none for a local
/// repository (whose reads are local already; `can_spool` tells a local
/// disk) or when caching is off (STRATA_NO_CACHE, STRATA_TREE_CACHE_MIB=0,
/// no cache directory).
fn tree_pack_cache(backend: &dyn Backend, repo_id: &str) -> Option<pack_cache::PackCache> {
    if backend.can_spool() {
        return None;
    }
    pack_cache::PackCache::new(&cache::dir_for(repo_id)?)
}

/// Checks the bytes of a stored object by what its name says it is, with
/// the master key: the pool runs this before it copies an object to
/// Requests in flight at once when loading many small objects.
const LOAD_CONCURRENCY: usize = 8;

/// `load` applied to every id, up to [`LOAD_CONCURRENCY`] at once (small
/// objects on an object store: the round trips overlap); results in order.
fn each_at_once<T: Send>(ids: &[Id], load: impl Fn(&Id) -> T + Sync) -> Vec<T> {
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

/// another member, so a damaged copy never spreads.
pub fn verify_stored(key: &MasterKey, name: &str, bytes: &[u8]) -> Result<()> {
    use layout::Folder;
    let id_in_name = || -> Result<Id> {
        name.rsplit('/')
            .next()
            .unwrap_or_default()
            .parse::<Id>()
            .map_err(|_| anyhow::anyhow!("{name} is not a strata object name"))
    };
    let sealed_as = |kind: ObjectKind, check_id: bool| -> Result<()> {
        let id = if kind == ObjectKind::Config {
            Id::default()
        } else {
            id_in_name()?
        };
        let plain = crypto::open(key.encryption_key(), &kind.ad(&id), bytes)?;
        if check_id && key.id_of(&plain) != id {
            bail!("content does not match its name");
        }
        Ok(())
    };
    match Folder::of(name) {
        Folder::Config => sealed_as(ObjectKind::Config, false),
        Folder::Keys | Folder::Deleted => layout::verify_plain_named(name, bytes),
        Folder::Index => sealed_as(ObjectKind::Index, true),
        Folder::Snapshots => sealed_as(ObjectKind::Snapshot, true),
        Folder::Deletions => sealed_as(ObjectKind::Deletion, true),
        Folder::Locks => sealed_as(ObjectKind::Lock, false),
        Folder::Data => {
            let id = id_in_name()?;
            let entries = pack::read_pack_header(key, &id, bytes)?;
            for e in entries {
                let range = e.offset as usize..(e.offset as usize + e.stored_len as usize);
                let sealed = bytes.get(range).context("a blob lies outside its pack")?;
                open_blob(key, e.kind, &e.id, e.compression, e.raw_len, sealed)
                    .with_context(|| format!("blob {} is damaged", e.id.short()))?;
            }
            Ok(())
        }
        Folder::Other => Ok(()),
    }
}
