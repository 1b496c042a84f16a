//! `check`: verifies the repository's structure and, optionally, every byte.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use rand::seq::SliceRandom;

use crate::id::Id;
use crate::repo::blob::BlobType;
use crate::repo::index::{Index, IndexFile};
use crate::repo::pack::{PackEntry, TRAILER_LEN};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{NodeKind, Tree};
use crate::repo::{ObjectKind, Repository, layout};

/// How much pack data to read and verify.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    /// Structure only.
    None,
    /// Every pack.
    All,
    /// A random share of packs, in percent (0 < p <= 100).
    Subset(f64),
}

/// What `check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Problems that make data unrestorable; non-empty means the check failed.
    pub errors: Vec<String>,
    /// Things worth knowing that lose no data (e.g. unindexed packs).
    pub warnings: Vec<String>,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Distinct trees checked.
    pub trees: usize,
    /// Packs in the repository.
    pub packs: usize,
    /// Packs whose contents were read and verified.
    pub packs_read: usize,
    /// Blobs verified by reading.
    pub blobs_read: usize,
}

/// Checks the repository.
pub fn check(repo: &Repository, read_data: ReadData) -> Result<CheckReport> {
    repo.bypass_cache();
    let mut r = CheckReport::default();
    let stored: HashMap<Id, u64> = repo.list_packs()?.into_iter().collect();
    r.packs = stored.len();

    // Snapshots are listed before the index is read: a backup writes its
    // index first, so a snapshot that finishes meanwhile is not reported as
    // pointing at unindexed data.
    let snapshot_ids = repo.list_ids(ObjectKind::Snapshot)?;

    // Index files, one by one so a bad one is named.
    let mut index = Index::default();
    let mut files: Vec<(Id, IndexFile)> = Vec::new();
    for id in repo.list_ids(ObjectKind::Index)? {
        let name = layout::object(ObjectKind::Index, &id);
        match repo
            .load_object(ObjectKind::Index, &id)
            .and_then(|p| IndexFile::decode(&p))
        {
            Ok(f) => files.push((id, f)),
            Err(e) => r.errors.push(format!(
                "{name}: {} (`strata repair index` indexes its packs again)",
                crate::error::one_line(&e)
            )),
        }
    }
    let superseded: HashSet<Id> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    let mut indexed: HashMap<Id, Vec<PackEntry>> = HashMap::new();
    for (id, f) in &files {
        if superseded.contains(id) {
            continue;
        }
        index.add_file(f);
        for (pack, entries) in &f.packs {
            indexed.entry(*pack).or_insert_with(|| entries.clone());
        }
    }
    for (pack, entries) in &indexed {
        let name = layout::pack(pack);
        match stored.get(pack) {
            None => r.errors.push(format!(
                "{name}: listed in the index but missing from the repository"
            )),
            Some(&size) => {
                let data_end = size.saturating_sub(TRAILER_LEN as u64);
                if entries
                    .iter()
                    .any(|e| e.offset as u64 + e.stored_len as u64 > data_end)
                {
                    r.errors.push(format!(
                        "{name}: smaller ({size} bytes) than its index entries say"
                    ));
                }
            }
        }
    }
    for pack in stored.keys().filter(|p| !indexed.contains_key(p)) {
        r.warnings.push(format!(
            "{}: not in any index (left by an interrupted backup, or its index file was lost: `strata repair index` indexes it again)",
            layout::pack(pack)
        ));
    }

    // Snapshots and the trees they reach.
    let mut seen_trees: HashSet<Id> = HashSet::new();
    for id in snapshot_ids {
        let name = layout::object(ObjectKind::Snapshot, &id);
        let snap = match repo
            .load_object(ObjectKind::Snapshot, &id)
            .and_then(|p| Snapshot::decode(&p))
        {
            Ok(s) => s,
            Err(e) => {
                r.errors
                    .push(format!("{name}: {}", crate::error::one_line(&e)));
                continue;
            }
        };
        r.snapshots += 1;
        check_tree(
            repo,
            &index,
            &snap.tree,
            &format!("snapshot {}:", id.short()),
            &mut seen_trees,
            &mut r,
        );
    }
    r.trees = seen_trees.len();

    // Pack contents.
    let mut to_read: Vec<Id> = stored.keys().copied().collect();
    to_read.sort();
    match read_data {
        ReadData::None => to_read.clear(),
        ReadData::All => {}
        ReadData::Subset(pct) => {
            let n = ((to_read.len() as f64 * pct / 100.0).ceil() as usize).min(to_read.len());
            {
                use rand::SeedableRng;
                let seed = crate::entropy::bytes(&[b"check subset"]);
                to_read.shuffle(&mut rand::rngs::StdRng::from_seed(seed));
            }
            to_read.truncate(n);
        }
    }
    for pack in to_read {
        read_pack(repo, &pack, indexed.get(&pack), &mut r);
    }
    // A pool served a good copy, but a member holds a damaged one.
    for bad in repo
        .backend()
        .replicated()
        .map(|r| r.take_bad_copies())
        .unwrap_or_default()
    {
        r.errors.push(format!(
            "{bad} is damaged (another member served a good copy): delete it there and run `strata pool repair`"
        ));
    }
    Ok(r)
}

fn check_tree(
    repo: &Repository,
    index: &Index,
    id: &Id,
    path: &str,
    seen: &mut HashSet<Id>,
    r: &mut CheckReport,
) {
    if !seen.insert(*id) {
        return;
    }
    let tree: std::sync::Arc<Tree> = match repo.load_tree(index, id) {
        Ok(t) => t,
        Err(e) => {
            r.errors.push(format!(
                "tree {} ({path}/): {}",
                id.short(),
                crate::error::one_line(&e)
            ));
            return;
        }
    };
    for node in &tree.nodes {
        let child = format!("{path}/{}", node.name.display());
        match node.kind {
            NodeKind::Dir => {
                if let Some(sub) = &node.subtree {
                    check_tree(repo, index, sub, &child, seen, r);
                }
            }
            NodeKind::File => {
                let mut size = 0u64;
                for blob in &node.content {
                    match index.get(blob) {
                        Some((_, e)) if e.kind == BlobType::Data => size += e.raw_len as u64,
                        Some(_) => r
                            .errors
                            .push(format!("{child}: blob {} is not a data blob", blob.short())),
                        None => r
                            .errors
                            .push(format!("{child}: data blob {} is missing", blob.short())),
                    }
                }
                if size != node.size && node.content.iter().all(|b| index.contains(b)) {
                    r.errors.push(format!(
                        "{child}: content adds up to {size} bytes, the file has {}",
                        node.size
                    ));
                }
            }
            _ => {}
        }
    }
}

fn read_pack(repo: &Repository, pack: &Id, indexed: Option<&Vec<PackEntry>>, r: &mut CheckReport) {
    let name = layout::pack(pack);
    r.packs_read += 1;
    let mut problems: Vec<String> = Vec::new();
    let mut blobs = 0;
    // Every blob must verify; otherwise the copy is rejected (and a pool
    // tries its next member).
    let reader = repo.pack_reader();
    let result = reader.read_whole(pack, &|_| true, &mut |_, header, bad| {
        problems.clear();
        if let Some(entries) = indexed {
            let in_header: HashSet<_> = header
                .iter()
                .map(|e| (e.id, e.offset, e.stored_len))
                .collect();
            if entries
                .iter()
                .any(|e| !in_header.contains(&(e.id, e.offset, e.stored_len)))
            {
                problems.push(format!("{name}: the index does not match the pack header"));
            }
        }
        blobs = header.len();
        for (k, err) in bad {
            let e = &header[*k];
            problems.push(format!(
                "{name}: blob {} at offset {}: {}",
                e.id.short(),
                e.offset,
                crate::error::one_line(err)
            ));
        }
        match problems.first() {
            Some(p) => anyhow::bail!("{p}"),
            None => Ok(()),
        }
    });
    r.blobs_read += blobs;
    if let Err(e) = result {
        if problems.is_empty() {
            r.errors
                .push(format!("{name}: {}", crate::error::one_line(&e)));
        } else {
            r.errors.append(&mut problems);
        }
    }
}
