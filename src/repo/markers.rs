//! Prune's deletion markers (`deletions/<id>`): packs one prune run decided
//! to delete once it is safe. Backups read them before loading the index,
//! and never deduplicate against a marked pack (docs/PRUNE.md).

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ObjectKind, Repository, layout};
use crate::id::Id;

/// A deletion marker: packs that will be deleted once it is safe.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeletionMarker {
    /// When prune wrote it (prune's clock; informational).
    pub created: DateTime<Utc>,
    /// Packs to delete.
    pub packs: Vec<Id>,
}

/// A marker as found, with the server time it was written.
#[derive(Debug, Clone)]
pub struct FoundMarker {
    /// Marker id.
    pub id: Id,
    /// Contents.
    pub marker: DeletionMarker,
    /// Server modification time.
    pub modified: Option<DateTime<Utc>>,
}

/// Every deletion marker in the repository.
pub fn load_markers(repo: &Repository) -> Result<Vec<FoundMarker>> {
    let mut out = Vec::new();
    for o in repo.list(layout::prefix(ObjectKind::Deletion))? {
        let Some(id) = o.key.rsplit('/').next().and_then(|n| n.parse::<Id>().ok()) else {
            continue;
        };
        let plain = match repo.load_object(ObjectKind::Deletion, &id) {
            Ok(p) => p,
            // Swept between the listing and the read: its packs are gone and
            // the compacted index, written first, no longer names them.
            Err(e) if crate::store::is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        let marker: DeletionMarker =
            serde_json::from_slice(&plain).with_context(|| format!("deletion marker {id}"))?;
        out.push(FoundMarker {
            id,
            marker,
            modified: o.modified,
        });
    }
    Ok(out)
}

/// How a command that adds data (backup, copy) starts: it writes its lock,
/// then reads the deletion markers and records them in the lock, then loads
/// the index without the packs those markers doom, in that order (see
/// docs/PRUNE.md).
pub fn lock_and_load_dedup_index(
    repo: &std::sync::Arc<Repository>,
) -> Result<(super::lock::Lock, super::index::Index)> {
    let lock = super::lock::Lock::acquire(repo, "backup")?;
    let markers = load_markers(repo)?;
    lock.set_seen_markers(markers.iter().map(|m| m.id).collect())?;
    let doomed: std::collections::HashSet<crate::id::Id> = markers
        .iter()
        .flat_map(|m| m.marker.packs.iter().copied())
        .collect();
    let index = repo.load_index_for(super::IndexUse::Dedup { without: &doomed })?;
    Ok((lock, index))
}
