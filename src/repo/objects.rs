//! Whole sealed objects (config, index files, snapshots, markers, locks):
//! saving, loading with verification, deleting; and the verifier a pool
//! runs before copying an object between members.

use anyhow::{Context, Result, bail};

use super::blob::open_blob;
use super::{ObjectKind, Repository, cache, layout, pack};
use crate::crypto::{self, MasterKey};
use crate::id::Id;
use crate::store::is_not_found;

impl Repository {
    /// Encrypts and stores a snapshot or index; returns its id.
    pub fn save_object(&self, kind: ObjectKind, plaintext: &[u8]) -> Result<Id> {
        let id = self.key.id_of(plaintext);
        let sealed = crypto::seal(self.key.encryption_key(), &kind.ad(&id), plaintext);
        // Kept for the next command on this machine, which would otherwise
        // fetch what it wrote itself (a re-run reads the last snapshot and
        // the index files the last backup wrote).
        let cached = self.object_cache(kind).map(|dir| (dir, sealed.clone()));
        self.backend.put(&layout::object(kind, &id), sealed)?;
        if let Some((dir, sealed)) = cached {
            cache::put(dir, layout::prefix(kind), &id, &sealed);
        }
        Ok(id)
    }

    /// The local cache directory for objects of `kind`, when they are
    /// cached (index files and snapshots) and caching is on.
    fn object_cache(&self, kind: ObjectKind) -> Option<&std::path::Path> {
        self.cache_dir.as_deref().filter(|_| {
            matches!(kind, ObjectKind::Index | ObjectKind::Snapshot)
                && self.use_cache.load(std::sync::atomic::Ordering::Relaxed)
        })
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
        let cache = self.object_cache(kind);
        if let Some(sealed) = self.early.take(&name)
            && let Ok(plain) = self.open_object(kind, id, &sealed)
        {
            if let Some(dir) = cache {
                cache::put(dir, folder, id, &sealed);
            }
            return Ok(plain);
        }
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
    pub(super) fn load_decoded<T>(
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

    /// Deletes an object without a deletion record: locks, markers, index
    /// files that others supersede, and what a repair or retention removes
    /// on its own terms.
    pub fn delete_object(&self, kind: ObjectKind, id: &Id) -> Result<()> {
        self.backend.delete(&layout::object(kind, id))
    }

    /// Decrypts and verifies bytes of a stored object.
    pub fn open_object(&self, kind: ObjectKind, id: &Id, sealed: &[u8]) -> Result<Vec<u8>> {
        let plain = crypto::open(self.key.encryption_key(), &kind.ad(id), sealed)?;
        if self.key.id_of(&plain) != *id {
            bail!("content does not match its name");
        }
        Ok(plain)
    }
}

/// Checks the bytes of a stored object by what its name says it is, with
/// the master key: the pool runs this before it copies an object to
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
