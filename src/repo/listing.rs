//! Listings and deletion records: what the repository holds, on a complete
//! view of every pool member when a command deletes
//! ([`Repository::require_complete_views`], see docs/CONSISTENCY.md).

use std::collections::{HashMap, HashSet};

use anyhow::{Result, bail};

use super::{ObjectKind, Repository, cache, deleted, layout};
use crate::id::Id;
use crate::store::ObjectInfo;

impl Repository {
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
            if let Some(listed) = self.early.take_listing(prefix) {
                return Ok(listed);
            }
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
            .list_pack_objects()?
            .into_iter()
            .map(|(id, o)| (id, o.size))
            .collect())
    }

    /// Every pack stored, with what the listing says of it (size, time).
    pub fn list_pack_objects(&self) -> Result<Vec<(Id, ObjectInfo)>> {
        Ok(self
            .list(layout::DATA)?
            .into_iter()
            .filter_map(|o| Some((layout::pack_id_of(&o.key)?, o)))
            .collect())
    }

    /// On a pool, the packs stored on at least as many members as a write
    /// needs (a pack on fewer is not durable); `None` on a single store.
    pub fn durable_packs(&self) -> Option<HashSet<Id>> {
        let pool = self.backend.replicated()?;
        let durable = pool.durable_keys(layout::DATA);
        Some(
            durable
                .iter()
                .filter_map(|k| layout::pack_id_of(k).filter(|id| layout::pack(id) == *k))
                .collect(),
        )
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
                (listed, super::joined(deleted))
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

    /// The deletion records (see [`deleted`]).
    pub fn deleted(&self) -> Result<deleted::Deleted> {
        deleted::load(self.backend.as_ref(), self.list(layout::DELETED)?)
    }

    /// Records that `keys` are deleted on purpose, then deletes them (on
    /// every pool member: a member that misses the delete is finished by
    /// `pool repair`, which honours the record).
    pub(super) fn delete_recorded(&self, keys: &[String]) -> Result<()> {
        deleted::record(self.backend.as_ref(), keys.iter().cloned())?;
        for k in keys {
            self.backend.delete(k)?;
        }
        Ok(())
    }

    /// Records that the objects `ids` of `kind` are deleted on purpose, then
    /// deletes them (forget, `repair snapshots`). Nothing for an empty list.
    pub fn delete_objects_recorded(&self, kind: ObjectKind, ids: &[Id]) -> Result<()> {
        let keys: Vec<String> = ids.iter().map(|id| layout::object(kind, id)).collect();
        if keys.is_empty() {
            return Ok(());
        }
        self.delete_recorded(&keys)
    }

    /// Records that `packs` are deleted on purpose (before prune deletes
    /// them one by one with [`Repository::delete_pack`]).
    pub fn record_deleted_packs<'a>(&self, packs: impl IntoIterator<Item = &'a Id>) -> Result<()> {
        deleted::record(self.backend.as_ref(), packs.into_iter().map(layout::pack))
    }

    /// Deletes a pack (recorded first with
    /// [`Repository::record_deleted_packs`]).
    pub fn delete_pack(&self, pack: &Id) -> Result<()> {
        self.backend.delete(&layout::pack(pack))
    }

    /// Asks every store whether these credentials may delete in each folder
    /// prune deletes from (packs, index files, deletion records), by
    /// deleting `probe` there (a name that never exists); the first folder
    /// where some store refuses, with the stores that refused.
    /// The folders are probed at once, and once per handle: `forget
    /// --prune` asks before forgetting and prune asks again.
    pub fn prune_delete_refusal(&self, probe: &str) -> Result<Option<(&'static str, Vec<String>)>> {
        use std::sync::atomic::Ordering;
        if self.may_delete.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let folders = [
            layout::DATA,
            layout::prefix(ObjectKind::Index),
            layout::prefix(ObjectKind::Deletion),
        ];
        let ask = |folder: &str| self.backend.delete_refused(&format!("{folder}{probe}"));
        let answers: Vec<Result<Vec<String>>> = match crate::entropy::in_simulation() {
            // In order, so a seed replays the same requests.
            true => folders.iter().map(|f| ask(f)).collect(),
            false => std::thread::scope(|s| {
                let asks: Vec<_> = folders
                    .iter()
                    .map(|folder| s.spawn(move || ask(folder)))
                    .collect();
                asks.into_iter().map(super::joined).collect()
            }),
        };
        for (folder, refused) in folders.into_iter().zip(answers) {
            let refused = refused?;
            if !refused.is_empty() {
                return Ok(Some((folder, refused)));
            }
        }
        self.may_delete.store(true, Ordering::Relaxed);
        Ok(None)
    }

    /// Merges the deletion records into one once there are many, leaving
    /// out packs for which `pack_held` is false (no member holds them any
    /// more); true when it merged (see [`deleted::compact`]).
    pub fn compact_deletion_records(
        &self,
        deleted: &deleted::Deleted,
        pack_held: impl Fn(&Id) -> bool,
    ) -> Result<bool> {
        deleted::compact(self.backend.as_ref(), deleted, |k| {
            layout::pack_id_of(k).is_some_and(|p| pack_held(&p))
        })
    }
}
