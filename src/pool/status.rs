//! `pool status` and `pool repair`: compare members' listings and copy what
//! a member lacks from the others. Both move ciphertext only, so neither
//! needs the password.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::Pool;
use crate::repo::deleted::Deleted;
use crate::repo::layout::Folder;
use crate::store::{ObjectInfo, is_location_missing};

/// One member's state relative to the union of all members.
#[derive(Debug, Serialize)]
pub struct MemberStatus {
    /// Member name.
    pub name: String,
    /// Repository location on the member.
    pub location: String,
    /// Whether listing it worked.
    pub reachable: bool,
    /// Why it is unreachable.
    pub error: Option<String>,
    /// Objects per folder (config, keys, data, index, snapshots).
    pub objects: BTreeMap<String, u64>,
    /// Bytes held.
    pub bytes: u64,
    /// Keys other members hold and this one lacks.
    pub missing: Vec<String>,
    /// Sizes of the missing objects, as the other members hold them.
    #[serde(skip)]
    pub missing_sizes: BTreeMap<String, u64>,
    /// What it holds (locks and recorded deletions left out).
    #[serde(skip)]
    pub held: Vec<String>,
    /// Bytes of the missing objects.
    pub missing_bytes: u64,
    /// Keys whose size here differs from another member's copy.
    pub size_mismatch: Vec<String>,
    /// Objects a deletion record names that this member still holds (it
    /// missed the delete); `pool repair` finishes the deletion.
    pub deleted_held: Vec<String>,
}

fn folder(key: &str) -> String {
    Folder::of(key).name().to_string()
}

/// Lists every member and works out what each lacks. Locks are not
/// compared (they belong to running commands), and objects deleted on
/// purpose (named by a deletion record) are not missing but held too long.
pub fn status(pool: &Pool) -> Vec<MemberStatus> {
    let (states, _) = status_and_deleted(pool);
    states
}

fn status_and_deleted(pool: &Pool) -> (Vec<MemberStatus>, Result<Deleted, String>) {
    let all: Vec<usize> = (0..pool.members().len()).collect();
    let listings: Vec<_> = super::on_members(pool.members(), &all, |b| match b.list("") {
        // A member that lost its location is reachable and holds nothing.
        Err(e) if is_location_missing(&e) => Ok(Vec::new()),
        other => other,
    });
    let mut union: BTreeMap<String, u64> = BTreeMap::new();
    for list in listings.iter().flatten() {
        for o in list {
            union.entry(o.key.clone()).or_insert(o.size);
        }
    }
    let records: Vec<ObjectInfo> = union
        .iter()
        .filter(|(k, _)| Folder::of(k) == Folder::Deleted)
        .map(|(k, size)| ObjectInfo {
            key: k.clone(),
            size: *size,
            modified: None,
        })
        .collect();
    let deleted = crate::repo::deleted::load(pool, records).map_err(|e| crate::error::one_line(&e));
    let gone = deleted.as_ref().map(|d| d.keys.clone()).unwrap_or_default();
    union.retain(|k, _| Folder::of(k) != Folder::Locks);
    let states = pool
        .members()
        .iter()
        .zip(listings)
        .map(|(m, listing)| {
            let mut s = MemberStatus {
                name: m.name.clone(),
                location: m.backend.location(),
                reachable: listing.is_ok(),
                error: None,
                objects: BTreeMap::new(),
                bytes: 0,
                missing: Vec::new(),
                missing_sizes: BTreeMap::new(),
                held: Vec::new(),
                missing_bytes: 0,
                size_mismatch: Vec::new(),
                deleted_held: Vec::new(),
            };
            let list: Vec<ObjectInfo> = match listing {
                Ok(l) => l,
                Err(e) => {
                    s.error = Some(crate::error::one_line(&e));
                    return s;
                }
            };
            let held: BTreeMap<&str, u64> = list.iter().map(|o| (o.key.as_str(), o.size)).collect();
            for o in &list {
                *s.objects.entry(folder(&o.key)).or_default() += 1;
                s.bytes += o.size;
            }
            for (key, size) in &union {
                if gone.contains(key) {
                    if held.contains_key(key.as_str()) {
                        s.deleted_held.push(key.clone());
                    }
                    continue;
                }
                if held.contains_key(key.as_str()) {
                    s.held.push(key.clone());
                }
                match held.get(key.as_str()) {
                    None => {
                        s.missing_sizes.insert(key.clone(), *size);
                        s.missing.push(key.clone());
                        s.missing_bytes += size;
                    }
                    Some(mine) if mine != size => s.size_mismatch.push(key.clone()),
                    _ => {}
                }
            }
            s
        })
        .collect();
    (states, deleted)
}

/// The order objects must land in so every member stays consistent.
fn write_rank(key: &str) -> u8 {
    Folder::of(key).write_rank()
}

/// What `repair` did.
#[derive(Debug, Default, Serialize)]
pub struct RepairReport {
    /// Objects copied (or, in a dry run, to copy), per member.
    pub copied: BTreeMap<String, u64>,
    /// Bytes copied (or to copy), per member.
    pub bytes: BTreeMap<String, u64>,
    /// Copies that failed verification and were replaced (or, in a dry
    /// run, would be), per member (`--read-data`).
    pub replaced: BTreeMap<String, u64>,
    /// Objects deleted on purpose that a member still held, removed (or to
    /// remove), per member.
    pub deletions_finished: BTreeMap<String, u64>,
    /// Whether copies were authenticated with the repository key before
    /// they were written (false: only sizes and hash-named objects).
    pub verified: bool,
    /// Problems; non-empty means some member is still incomplete.
    pub errors: Vec<String>,
}

/// Copies to every reachable member what it lacks, in write order, each
/// copy verified first; finishes deletions a member missed. Locks are never
/// copied, and objects a deletion record names are never copied back. With
/// `read_data`, every copy a member holds is read and verified too, and a
/// damaged one is replaced by a good copy from another member.
pub fn repair(pool: &Pool, dry_run: bool, read_data: bool) -> RepairReport {
    let mut report = RepairReport {
        verified: pool.verifies_copies(),
        ..RepairReport::default()
    };
    let (states, deleted) = status_and_deleted(pool);
    if let Err(e) = deleted {
        // Without the records, a copy could bring back what was deleted.
        report.errors.push(format!(
            "deletion records cannot be read ({e}); nothing was repaired"
        ));
        return report;
    }
    for (i, s) in states.iter().enumerate() {
        if !s.reachable {
            report.errors.push(format!(
                "member {} is unreachable ({}); not repaired",
                s.name,
                s.error.clone().unwrap_or_default()
            ));
            continue;
        }
        let member = &pool.members()[i].backend;
        for key in &s.deleted_held {
            if !dry_run && let Err(e) = member.delete(key) {
                report.errors.push(format!(
                    "member {}: deleting {key}: {}",
                    s.name,
                    crate::error::one_line(&e)
                ));
                continue;
            }
            *report.deletions_finished.entry(s.name.clone()).or_default() += 1;
        }
        if !dry_run && !s.missing.is_empty() {
            // A member that lost its bucket, container or folder gets it back.
            if let Err(e) = member.create() {
                report.errors.push(format!(
                    "member {}: {}; not repaired",
                    s.name,
                    crate::error::one_line(&e)
                ));
                continue;
            }
        }
        let mut missing: BTreeSet<(u8, &str)> = BTreeSet::new();
        for k in &s.missing {
            missing.insert((write_rank(k), k.as_str()));
        }
        if read_data {
            let bad = damaged_copies(pool, i, &s.held, &mut report.errors);
            *report.replaced.entry(s.name.clone()).or_default() += bad.len() as u64;
            if report.replaced[&s.name] == 0 {
                report.replaced.remove(&s.name);
            }
            for key in bad {
                missing.insert((write_rank(key), key));
            }
        }
        for (_, key) in missing {
            if dry_run {
                *report.copied.entry(s.name.clone()).or_default() += 1;
                *report.bytes.entry(s.name.clone()).or_default() += s.missing_size(key);
                continue;
            }
            let result = pool.fetch_from_others(i, key).and_then(|bytes| {
                let n = bytes.len() as u64;
                member.put(key, bytes.to_vec()).map(|_| n)
            });
            match result {
                Ok(n) => {
                    *report.copied.entry(s.name.clone()).or_default() += 1;
                    *report.bytes.entry(s.name.clone()).or_default() += n;
                }
                Err(e) => {
                    report.errors.push(format!(
                        "member {}: {key}: {}",
                        s.name,
                        crate::error::one_line(&e)
                    ));
                    if write_rank(key) < 4 {
                        // Never give a member a snapshot whose data failed to copy.
                        break;
                    }
                }
            }
        }
    }
    report
}

impl MemberStatus {
    /// The size of a missing object, as the other members hold it.
    fn missing_size(&self, key: &str) -> u64 {
        self.missing_sizes.get(key).copied().unwrap_or(0)
    }
}

/// The copies on member `i` (of `held`) that fail verification; they are
/// then copied again like missing ones (a copy that cannot be had from
/// another member is reported, and the bad one stays: better than none).
fn damaged_copies<'a>(
    pool: &Pool,
    i: usize,
    held: &'a [String],
    errors: &mut Vec<String>,
) -> Vec<&'a str> {
    let member = &pool.members()[i];
    let mut bad = Vec::new();
    for key in held {
        match member.backend.get(key) {
            Ok(bytes) => {
                if pool.verify_copy(key, &bytes).is_err() {
                    bad.push(key.as_str());
                }
            }
            Err(e) if crate::store::is_not_found(&e) => {}
            // Not read is not verified: the member is not declared whole.
            Err(e) => errors.push(format!(
                "member {}: reading {key}: {}",
                member.name,
                crate::error::one_line(&e)
            )),
        }
    }
    bad
}
