//! Deletion records: which objects were deleted on purpose.
//!
//! Before forget, prune, `key remove` or `repair` delete anything, they write
//! a record `deleted/<id>` naming the objects (plain JSON, `id` = BLAKE3 of the
//! bytes, like key files, so `pool repair` can check and honour it without the
//! password). Then:
//! - `pool repair` never copies a recorded object back to the members that
//!   deleted it; it finishes the deletion on members that missed it (one
//!   that was down, or whose delete failed);
//! - readers ignore a recorded snapshot or key file that turns up again (an
//!   old copy put back, a versioned bucket rolled back): what was forgotten
//!   stays forgotten, and a removed password stays removed.
//!
//! Object names say nothing the listing does not already show, so the record
//! is not encrypted.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::layout;
use crate::store::{Backend, ObjectInfo, is_not_found};

/// Largest record accepted when reading (a hostile one cannot exhaust memory).
const MAX_RECORD: u64 = 64 << 20;

/// One deletion record.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeletionRecord {
    /// When it was written (the writer's clock; informational).
    pub time: Option<DateTime<Utc>>,
    /// Object names deleted on purpose.
    pub keys: BTreeSet<String>,
}

impl DeletionRecord {
    /// The record's bytes and its object name.
    pub fn encode(&self) -> (Vec<u8>, String) {
        let bytes = serde_json::to_vec(self).expect("a deletion record serializes");
        let name = format!("{}{}", layout::DELETED, blake3::hash(&bytes).to_hex());
        (bytes, name)
    }

    /// Parses a record read from `name`, checking it is the one named.
    pub fn decode(name: &str, bytes: &[u8]) -> Result<DeletionRecord> {
        layout::verify_plain_named(name, bytes)?;
        serde_json::from_slice(bytes).context("not a deletion record")
    }
}

/// Every deletion record, and the union of the objects they name.
/// Only snapshots, key files and packs are recorded: their names never come
/// back for other content (random salts and nonces, snapshot times), while an
/// index file rebuilt by `repair index` can get its old name again.
#[derive(Debug, Default, Clone)]
pub struct Deleted {
    /// Record object names.
    pub records: Vec<String>,
    /// Every object named by some record.
    pub keys: BTreeSet<String>,
}

impl Deleted {
    /// True when `key` was deleted on purpose.
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// True when the pack `id` was deleted on purpose.
    pub fn contains_pack(&self, id: &crate::id::Id) -> bool {
        self.contains(&layout::pack(id))
    }
}

/// Writes a record naming `keys` (before they are deleted). Nothing is
/// written for an empty list.
pub fn record(backend: &dyn Backend, keys: impl IntoIterator<Item = String>) -> Result<()> {
    let record = DeletionRecord {
        time: Some(crate::entropy::now()),
        keys: keys.into_iter().collect(),
    };
    if record.keys.is_empty() {
        return Ok(());
    }
    let (bytes, name) = record.encode();
    backend
        .put(&name, bytes)
        .context("writing the deletion record (nothing was deleted)")
}

/// Reads the deletion records `listing` names (a listing of
/// [`layout::DELETED`]). A damaged one fails the call: acting as if it did
/// not exist could bring deleted objects back.
pub fn load(backend: &dyn Backend, listing: Vec<ObjectInfo>) -> Result<Deleted> {
    let mut out = Deleted::default();
    for info in listing {
        if info.size > MAX_RECORD {
            bail!(
                "{} is {} bytes, more than a deletion record can be: remove it by hand if it is not strata's",
                info.key,
                info.size
            );
        }
        let mut parsed = None;
        let read = backend.read(&info.key, &mut |bytes| {
            parsed = Some(DeletionRecord::decode(&info.key, bytes)?);
            Ok(())
        });
        match read {
            Ok(()) => {}
            // Merged into another record and removed since the listing.
            Err(e) if is_not_found(&e) => continue,
            Err(e) => {
                return Err(e.context(format!(
                    "deletion record {} cannot be read; `strata pool repair` heals a damaged copy from another member",
                    info.key
                )));
            }
        }
        if let Some(r) = parsed {
            out.keys.extend(r.keys);
            out.records.push(info.key);
        }
    }
    Ok(out)
}

/// Records are merged into one once there are more than this many.
pub const MERGE_AT: usize = 8;

/// Merges every record into one when there are more than [`MERGE_AT`]: the
/// new record keeps every snapshot and key-file name, and the pack names
/// `still_held` says some member still holds (a delete that failed there);
/// the others are done for good. The merged record is written first, and
/// the old ones deleted only once every pool member holds it. Returns
/// whether it merged. Call it with complete views (prune does).
pub fn compact(
    backend: &dyn Backend,
    deleted: &Deleted,
    still_held: impl Fn(&str) -> bool,
) -> Result<bool> {
    if deleted.records.len() <= MERGE_AT {
        return Ok(false);
    }
    let keys = deleted
        .keys
        .iter()
        .filter(|k| layout::Folder::of(k) != layout::Folder::Data || still_held(k))
        .cloned();
    let merged = DeletionRecord {
        time: Some(crate::entropy::now()),
        keys: keys.collect(),
    };
    let (bytes, name) = merged.encode();
    backend
        .put(&name, bytes)
        .context("writing the merged deletion record")?;
    if !backend.replicated().is_none_or(|r| r.heal_lagging()) {
        bail!(
            "a pool member missed the merged deletion record; the old records stay. Run `strata pool repair` when it is reachable"
        );
    }
    for old in deleted.records.iter().filter(|r| **r != name) {
        backend.delete(old)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::memory::{MemStore, SimClock};

    #[test]
    fn records_round_trip_and_damage_is_caught() {
        let store = MemStore::new("m", SimClock::new(), 0);
        record(store.as_ref(), ["snapshots/aa".to_string()]).unwrap();
        record(store.as_ref(), Vec::new()).unwrap();
        let list = || store.list(layout::DELETED).unwrap();
        let d = load(store.as_ref(), list()).unwrap();
        assert_eq!(d.records.len(), 1);
        assert!(d.contains("snapshots/aa"));
        let name = &d.records[0];
        let mut bytes = store.peek(name).unwrap().to_vec();
        bytes[3] ^= 1;
        store.plant(name, bytes.into());
        assert!(load(store.as_ref(), list()).is_err());
    }

    #[test]
    fn many_records_merge_into_one_keeping_what_matters() {
        let store = MemStore::new("m", SimClock::new(), 0);
        for i in 0..10 {
            record(
                store.as_ref(),
                [format!("snapshots/s{i}"), format!("data/aa/p{i}")],
            )
            .unwrap();
        }
        let list = || store.list(layout::DELETED).unwrap();
        let before = load(store.as_ref(), list()).unwrap();
        assert_eq!(before.records.len(), 10);
        // Pack p3 is still held by some member; the others are gone.
        assert!(compact(store.as_ref(), &before, |k| k == "data/aa/p3").unwrap());
        let after = load(store.as_ref(), list()).unwrap();
        assert_eq!(after.records.len(), 1);
        assert!((0..10).all(|i| after.contains(&format!("snapshots/s{i}"))));
        assert!(after.contains("data/aa/p3"));
        assert!(!after.contains("data/aa/p4"));
        assert!(!compact(store.as_ref(), &after, |_| true).unwrap());
    }
}
