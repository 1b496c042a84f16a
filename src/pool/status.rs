//! `pool status` and `pool repair`: compare members' listings and copy what
//! a member lacks from the others. Both move ciphertext only, so neither
//! needs the password.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;
use serde::Serialize;

use super::Pool;
use crate::store::{ObjectInfo, block_on};

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
    /// Bytes of the missing objects.
    pub missing_bytes: u64,
    /// Keys whose size here differs from another member's copy.
    pub size_mismatch: Vec<String>,
}

fn folder(key: &str) -> String {
    key.split('/').next().unwrap_or_default().to_string()
}

/// Lists every member and works out what each lacks.
pub fn status(pool: &Pool) -> Vec<MemberStatus> {
    let listings = block_on(join_all(
        pool.members().iter().map(|m| m.backend.list_async("")),
    ));
    let mut union: BTreeMap<String, u64> = BTreeMap::new();
    for list in listings.iter().flatten() {
        for o in list {
            union.entry(o.key.clone()).or_insert(o.size);
        }
    }
    pool.members()
        .iter()
        .zip(listings)
        .map(|(m, listing)| {
            let mut s = MemberStatus {
                name: m.name.clone(),
                location: crate::store::Backend::location(&m.backend),
                reachable: listing.is_ok(),
                error: None,
                objects: BTreeMap::new(),
                bytes: 0,
                missing: Vec::new(),
                missing_bytes: 0,
                size_mismatch: Vec::new(),
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
                match held.get(key.as_str()) {
                    None => {
                        s.missing.push(key.clone());
                        s.missing_bytes += size;
                    }
                    Some(mine) if mine != size => s.size_mismatch.push(key.clone()),
                    _ => {}
                }
            }
            s
        })
        .collect()
}

/// The order objects must land in so every member stays consistent:
/// config and keys, then packs, then indexes, then snapshots.
fn write_rank(key: &str) -> u8 {
    match folder(key).as_str() {
        "config" | "keys" => 0,
        "data" => 1,
        "index" => 2,
        "snapshots" => 4,
        _ => 3,
    }
}

/// What `repair` did.
#[derive(Debug, Default, Serialize)]
pub struct RepairReport {
    /// Objects copied, per member.
    pub copied: BTreeMap<String, u64>,
    /// Bytes copied, per member.
    pub bytes: BTreeMap<String, u64>,
    /// Problems; non-empty means some member is still incomplete.
    pub errors: Vec<String>,
}

/// Copies to every reachable member what it lacks, in write order.
pub fn repair(pool: &Pool, dry_run: bool) -> RepairReport {
    let mut report = RepairReport::default();
    let states = status(pool);
    for (i, s) in states.iter().enumerate() {
        if !s.reachable {
            report.errors.push(format!(
                "member {} is unreachable ({}); not repaired",
                s.name,
                s.error.clone().unwrap_or_default()
            ));
            continue;
        }
        if !dry_run && !s.missing.is_empty() {
            // A member that lost its bucket, container or folder gets it back.
            if let Err(e) = crate::store::Backend::create(&pool.members()[i].backend) {
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
        for (_, key) in missing {
            if dry_run {
                *report.copied.entry(s.name.clone()).or_default() += 1;
                continue;
            }
            let result = pool.fetch_from_others(i, key).and_then(|bytes| {
                let n = bytes.len() as u64;
                block_on(pool.members()[i].backend.put_async(key, bytes)).map(|_| n)
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
