//! Deleting snapshots (`forget`): decided on a complete view of every pool
//! member, recorded before anything is deleted.

use anyhow::Result;

use crate::id::Id;
use crate::repo::{ObjectKind, Repository};

/// Deletes the given snapshots. Call [`Repository::require_complete_views`]
/// before choosing them, so the choice was made on every member's listing.
/// The deletion is recorded first: a member that misses a delete is
/// finished by `pool repair`, and a copy put back later stays ignored.
pub fn forget_snapshots(repo: &Repository, ids: &[Id]) -> Result<()> {
    repo.delete_objects_recorded(ObjectKind::Snapshot, ids)
}
