//! Creating and opening a repository: the config, the first key file, and
//! unlocking with a password.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};

use super::early::{EarlyPlan, EarlyReads};
use super::{
    ObjectKind, RepoConfig, Repository, cache, deleted, joined, layout, pack_cache, verify_stored,
};
use crate::crypto::keyfile::{KdfParams, KeyFile};
use crate::crypto::{self, MasterKey};
use crate::error::Fatal;
use crate::id::Id;
use crate::store::{Backend, is_not_found};

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
        Ok(Self::assemble(backend, key, config, key_file))
    }

    /// Opens an existing repository with a password.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Repository> {
        Self::open_with(backend, password, false)
    }

    /// [`Repository::open`] for a command that only reads (restore, `ls`,
    /// `snapshots`): on an object store the folders it will list are
    /// listed while the key is derived, and its first listing of each
    /// takes that (see `early.rs`).
    pub fn open_for_reading(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Repository> {
        Self::open_with(backend, password, true)
    }

    fn open_with(backend: Arc<dyn Backend>, password: &[u8], reading: bool) -> Result<Repository> {
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
        // After the config: a missing repository is said as such.
        let keys = keys?;
        // No key file of this repository known here: no local cache either,
        // so the index files and snapshots are fetched while the key is
        // derived; a reading command also gets its listings then (see
        // early.rs). Not in the simulation, whose replays count every
        // request.
        let remote = !backend.can_spool() && !crate::entropy::in_simulation();
        let plan = EarlyPlan {
            objects: remote && prefetched.is_empty(),
            listings: remote && reading,
        };
        let (unlocked, early) = std::thread::scope(|s| {
            let early =
                (plan.objects || plan.listings).then(|| s.spawn(|| EarlyReads::fetch(store, plan)));
            let unlocked = Self::unlock(store, password, keys, &prefetched);
            let early = early.and_then(|h| h.join().ok()).unwrap_or_default();
            (unlocked, early)
        });
        let (key, repo_id, key_file) = unlocked?;
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
        let mut repo = Self::assemble(backend, key, config, key_file);
        repo.early = early;
        Ok(repo)
    }

    /// The handle over an unlocked repository; on a pool, sets the verifier
    /// that checks every copy between members.
    fn assemble(
        backend: Arc<dyn Backend>,
        key: MasterKey,
        config: RepoConfig,
        key_file: Id,
    ) -> Repository {
        if let Some(pool) = backend.replicated() {
            let key = key.clone();
            pool.set_verifier(Arc::new(move |name, bytes| {
                verify_stored(&key, name, bytes)
            }));
        }
        Repository {
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
            early: EarlyReads::default(),
            may_delete: std::sync::atomic::AtomicBool::new(false),
        }
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
        let mut unreadable: Vec<String> = Vec::new();
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
            // A copy that failed the checks is damage; a read that failed
            // without any copy to check is the store not answering.
            let mut checked_a_copy = false;
            let fetched = match prefetched.get(&info.key).filter(|b| check(b).is_ok()) {
                Some(b) => {
                    bytes = b.clone();
                    Ok(())
                }
                None => backend.read(&info.key, &mut |b| {
                    checked_a_copy = true;
                    check(b)?;
                    bytes = b.to_vec();
                    Ok(())
                }),
            };
            if let Err(e) = &fetched
                && !checked_a_copy
            {
                unreadable.push(format!("{}: {}", info.key, crate::error::one_line(e)));
                continue;
            }
            let attempt =
                fetched.and_then(|()| KeyFile::decode(&bytes)?.open_within(password, &bounds));
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
        if !unreadable.is_empty() {
            // The right key may be among them: not a wrong password, and
            // not damage either.
            warn(&broken);
            bail!(
                "cannot read {} key file(s) ({}); check that the store answers and try again",
                unreadable.len(),
                unreadable.join("; ")
            );
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
}

/// Size of the repository config on `backend`, by one HEAD request: how
/// probes (agent readiness, pool member health) and [`crate::session`] ask
/// whether a store answers and holds a repository before opening it.
pub fn probe_config(backend: &dyn Backend) -> Result<u64> {
    backend.size(layout::CONFIG)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::{ClientFaults, FaultRates, FaultyStore, MemStore, SimClock};

    /// A key file the store fails to send is neither damage ("restore keys/
    /// from a copy") nor a wrong password: the error says to try again.
    #[test]
    fn an_unreadable_key_file_is_not_called_damaged_or_a_wrong_password() {
        let store = MemStore::new("m", SimClock::new(), 0);
        let kdf = KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        };
        Repository::init(store.clone(), b"pw", kdf).unwrap();
        let faults = ClientFaults::new(
            1,
            FaultRates {
                read_fails: 1000,
                ..FaultRates::default()
            },
        );
        let door = FaultyStore::new(store, faults);
        let err = Repository::open(door, b"pw").err().expect("open failed");
        let msg = crate::error::one_line(&err);
        assert!(msg.contains("cannot read 1 key file"), "{msg}");
        assert!(!msg.contains("restore keys/"), "{msg}");
        assert!(err.downcast_ref::<Fatal>().is_none(), "{msg}");
    }
}
