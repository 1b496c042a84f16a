//! Choosing the parent snapshot, and counting what a run will read (for
//! the progress display).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;

use crate::backup::excludes::{Excludes, Verdict};
use crate::id::Id;
use crate::repo::snapshot::{BackupMode, Snapshot};
use crate::repo::{OnDamage, Repository};

/// Picks the parent snapshot for the mode. A backup that finds no parent
/// reads everything, so it is recorded as `full`: the first backup of a set
/// of paths, and a differential one without any full snapshot to refer to
/// (later differential backups then find it).
pub(super) fn choose_parent(
    repo: &Repository,
    mode: BackupMode,
    host: &str,
    paths: &[String],
) -> Result<(BackupMode, Option<(Id, Snapshot)>)> {
    if mode == BackupMode::Full {
        return Ok((mode, None));
    }
    let mut sorted = paths.to_vec();
    sorted.sort();
    let same = |s: &Snapshot| {
        let mut p = s.paths.clone();
        p.sort();
        s.hostname == host && p == sorted
    };
    let mut candidates = repo
        .snapshots(OnDamage::Skip)?
        .objects
        .into_iter()
        .filter(|(_, s)| same(s));
    let parent = match mode {
        BackupMode::Differential => candidates.rfind(|(_, s)| s.mode == BackupMode::Full),
        _ => candidates.next_back(),
    };
    match (mode, &parent) {
        (BackupMode::Differential, None) => {
            tracing::info!(
                "no full snapshot of these paths on this host yet; taking a full backup"
            );
            Ok((BackupMode::Full, None))
        }
        (_, None) => Ok((BackupMode::Full, None)),
        _ => Ok((mode, parent)),
    }
}

/// Adds up the regular files under `path` for the progress display's totals
/// (`named`: a path the user gave, followed if it is a symlink; `dir_dev`:
/// the device of the directory it is in); false when the backup finished
/// first.
pub(super) fn scan_totals(
    done: &AtomicBool,
    path: &Path,
    named: bool,
    excludes: &Excludes,
    dir_dev: Option<u64>,
    files: &mut u64,
    bytes: &mut u64,
) -> bool {
    if done.load(Ordering::Relaxed) {
        return false;
    }
    let meta = match named {
        true => std::fs::metadata(path),
        false => std::fs::symlink_metadata(path),
    };
    let Ok(meta) = meta else {
        return true;
    };
    if !named && excludes.by_meta(path, &meta, dir_dev) != Verdict::Keep {
        return true;
    }
    if meta.is_file() {
        *files += 1;
        *bytes += meta.len();
    } else if meta.is_dir()
        && let Ok(entries) = std::fs::read_dir(path)
    {
        let dev = Some(meta.dev());
        for e in entries.flatten() {
            let child = e.path();
            if !excludes.by_name(&child)
                && !scan_totals(done, &child, false, excludes, dev, files, bytes)
            {
                return false;
            }
        }
    }
    true
}
