//! Loading index files and snapshots, and what to do with damaged ones.

use anyhow::{Context, Result, bail};

use super::index::{Index, IndexFile};
use super::snapshot::Snapshot;
use super::{ObjectKind, Repository, layout, seen};
use crate::id::Id;
use crate::store::is_not_found;

/// Index files as loaded, damaged ones set aside.
#[derive(Default)]
pub struct LoadedIndexFiles {
    /// Usable index files that no other index file supersedes.
    pub files: Vec<(Id, IndexFile)>,
    /// Index files that failed verification or decoding, with the reason.
    pub damaged: Vec<(Id, String)>,
}

impl Repository {
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
        for id in ids {
            match self.load_decoded(ObjectKind::Index, &id, IndexFile::decode)? {
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
        for id in ids {
            match self.load_decoded(ObjectKind::Snapshot, &id, Snapshot::decode) {
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
}
