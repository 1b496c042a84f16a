//! A local record of the snapshots this machine has seen in a repository, to
//! notice a rollback: snapshots deleted without a deletion record (storage
//! access, a bucket version restored, a member swapped for an old copy).
//! Kept under `$STRATA_STATE_DIR`, `$XDG_STATE_HOME/strata` or
//! `~/.local/state/strata`, one file per repository; in a container, put it
//! on a volume that outlives the pod to keep the protection across restarts.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::id::Id;

fn state_file(repo_id: &str) -> Option<PathBuf> {
    if repo_id.is_empty() || !repo_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = env("STRATA_STATE_DIR")
        .or_else(|| env("XDG_STATE_HOME").map(|p| p.join("strata")))
        .or_else(|| env("HOME").map(|h| h.join(".local/state/strata")))?;
    Some(base.join(repo_id).join("seen-snapshots"))
}

/// Compares the snapshots listed now with those seen before and records the
/// new list. Returns the snapshots seen before that are gone without a
/// deletion record (`deleted` says whether one names a snapshot id).
pub fn check_and_record(
    repo_id: &str,
    listed: &[Id],
    mut deleted: impl FnMut(&Id) -> bool,
) -> Vec<Id> {
    let Some(file) = state_file(repo_id) else {
        return Vec::new();
    };
    let before: BTreeSet<Id> = std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let now: BTreeSet<Id> = listed.iter().copied().collect();
    let gone: Vec<Id> = before
        .difference(&now)
        .filter(|id| !deleted(id))
        .copied()
        .collect();
    if before != now {
        let text: String = now.iter().map(|id| format!("{id}\n")).collect();
        // Best effort: a state directory that cannot be written only costs
        // the protection, never the command.
        if let Some(dir) = file.parent()
            && std::fs::create_dir_all(dir).is_ok()
        {
            let tmp = file.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, &file);
            }
        }
    }
    gone
}
