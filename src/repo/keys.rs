//! Key files: listing, adding, replacing and removing passwords.

use anyhow::{Context, Result, bail};

use super::{Repository, layout};
use crate::crypto::keyfile::{KdfParams, KeyFile};
use crate::id::Id;

impl Repository {
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

    /// Replaces the key file in use by one for a new password; returns the
    /// new key file's id. The new key is written (and durable) before the
    /// old one goes, so an interruption leaves two working keys, never none.
    pub fn change_password(&self, password: &[u8], kdf: KdfParams) -> Result<Id> {
        let old = self.key_file;
        let new = self.add_key(password, kdf)?;
        self.backend.delete(&layout::key(&old)).with_context(|| {
            format!(
                "the new key {} is in place, but the old key {} could not be removed; remove it with `strata key remove`",
                new.short(),
                old.short()
            )
        })?;
        Ok(new)
    }
}
