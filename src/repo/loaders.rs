//! Loading index files and snapshots: one loader for each, told what to do
//! with damaged ones ([`OnDamage`]), and the in-memory index built for a
//! purpose ([`IndexUse`]).

use std::collections::HashSet;

use anyhow::{Context, Result, bail};

use super::index::{Index, IndexFile};
use super::snapshot::Snapshot;
use super::{ObjectKind, Repository, layout, seen};
use crate::id::Id;
use crate::store::is_not_found;

/// What a loader does with an index file or snapshot that fails
/// verification (docs/ARCHITECTURE.md, "Damaged metadata").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDamage {
    /// Fail, naming it: commands that delete must weigh everything.
    Refuse,
    /// Warn once per object and go on without it: commands that only read
    /// or add (a backup stores again what it cannot see, a restore names
    /// the files it cannot complete).
    Skip,
    /// Set it aside in [`Loaded::damaged`]: the repairs, which remove it.
    Collect,
}

/// Index files or snapshots as loaded.
pub struct Loaded<T> {
    /// The usable objects (index files: those no other one supersedes;
    /// snapshots: oldest first).
    pub objects: Vec<(Id, T)>,
    /// Objects that failed verification or decoding, with the reason (only
    /// with [`OnDamage::Collect`]).
    pub damaged: Vec<(Id, String)>,
}

/// What the in-memory index is for.
#[derive(Debug, Clone, Copy)]
pub enum IndexUse<'a> {
    /// Reading blobs: every usable index file.
    Read,
    /// Deduplication by a backup or copy: without the packs prune has
    /// marked for deletion and, on a pool, only index files that a write
    /// acknowledged by the pool would have left.
    Dedup {
        /// The packs named by deletion markers.
        without: &'a HashSet<Id>,
    },
}

impl Repository {
    /// Every index file that no other index file supersedes, damaged ones
    /// handled as `on_damage` says.
    pub fn index_files(&self, on_damage: OnDamage) -> Result<Loaded<IndexFile>> {
        let mut loaded = match self.try_index_files() {
            // A prune compacted the index between our listing and reading.
            Err(e) if is_not_found(&e) => self.try_index_files(),
            other => other,
        }?;
        match on_damage {
            OnDamage::Refuse => {
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
            }
            OnDamage::Skip => {
                for (id, why) in std::mem::take(&mut loaded.damaged) {
                    self.warn_damaged(
                        ObjectKind::Index,
                        &id,
                        &why,
                        "the packs it lists are not used until `strata repair index` indexes them again",
                    );
                }
            }
            OnDamage::Collect => {}
        }
        Ok(loaded)
    }

    fn try_index_files(&self) -> Result<Loaded<IndexFile>> {
        let ids = self.list_ids(ObjectKind::Index)?;
        let mut loaded = Loaded {
            objects: Vec::new(),
            damaged: Vec::new(),
        };
        let decoded = super::each_at_once(&ids, |id| {
            self.load_decoded(ObjectKind::Index, id, IndexFile::decode)
        });
        for (id, file) in ids.into_iter().zip(decoded) {
            match file? {
                Ok(file) => loaded.objects.push((id, file)),
                Err(why) => loaded.damaged.push((id, why)),
            }
        }
        let superseded: HashSet<Id> = loaded
            .objects
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        loaded.objects.retain(|(id, _)| !superseded.contains(id));
        self.early.drop_folder(layout::prefix(ObjectKind::Index));
        Ok(loaded)
    }

    /// The in-memory index for `purpose`, from the usable index files
    /// (damaged ones are warned about and skipped).
    pub fn load_index_for(&self, purpose: IndexUse) -> Result<Index> {
        let mut index = Index::default();
        let files = self.index_files(OnDamage::Skip)?.objects;
        let IndexUse::Dedup { without } = purpose else {
            for (_, file) in files {
                index.add_file(&file);
            }
            return Ok(index);
        };
        // On a pool, deduplicate only against index files that a write
        // acknowledged by the pool would have left: one on fewer members
        // (a backup that failed while writing it) can vanish with the one
        // member holding it, and a snapshot relying on it would name blobs
        // in no index.
        let durable = self
            .backend
            .replicated()
            .map(|p| p.durable_keys(layout::prefix(ObjectKind::Index)));
        for (id, file) in files {
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
                if !without.contains(pack) {
                    index.add_pack(*pack, entries);
                }
            }
        }
        Ok(index)
    }

    /// The index for reading: [`Repository::load_index_for`] with
    /// [`IndexUse::Read`].
    pub fn load_index(&self) -> Result<Index> {
        self.load_index_for(IndexUse::Read)
    }

    /// Saves an index file.
    pub fn save_index(&self, file: &IndexFile) -> Result<Id> {
        self.save_object(ObjectKind::Index, &file.encode())
    }

    /// Every snapshot, oldest first, damaged ones handled as `on_damage`
    /// says.
    pub fn snapshots(&self, on_damage: OnDamage) -> Result<Loaded<Snapshot>> {
        let mut objects = Vec::new();
        let mut damaged = Vec::new();
        let ids = self.list_ids(ObjectKind::Snapshot)?;
        self.notice_rollback(&ids)?;
        let decoded = super::each_at_once(&ids, |id| {
            self.load_decoded(ObjectKind::Snapshot, id, Snapshot::decode)
        });
        for (id, snap) in ids.into_iter().zip(decoded) {
            match snap {
                Ok(Ok(snap)) => objects.push((id, snap)),
                Ok(Err(why)) => damaged.push((id, why)),
                // Forgotten between listing and reading.
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        self.early.drop_folder(layout::prefix(ObjectKind::Snapshot));
        objects.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        match on_damage {
            OnDamage::Refuse => {
                if let Some((id, why)) = damaged.first() {
                    bail!(
                        "{} is damaged ({why}): nothing can be restored from it; `strata repair snapshots` removes it",
                        layout::object(ObjectKind::Snapshot, id)
                    );
                }
            }
            OnDamage::Skip => {
                for (id, why) in std::mem::take(&mut damaged) {
                    self.warn_damaged(ObjectKind::Snapshot, &id, &why, "it is left out");
                }
            }
            OnDamage::Collect => {}
        }
        Ok(Loaded { objects, damaged })
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

    /// Resolves `latest`, a full id or a unique id prefix.
    pub fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        let mut all = self.snapshots(OnDamage::Skip)?.objects;
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
}
