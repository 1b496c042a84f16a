//! A local cache of immutable repository objects (index files and
//! snapshots), so a backup that runs every hour lists each folder once and
//! downloads only what is new.
//!
//! Entries are the sealed bytes as stored, under
//! `$XDG_CACHE_HOME/strata/<repository id>/<kind>/<id>` (or
//! `~/.cache/strata/...`). A cached copy is used only after it decrypts and
//! hashes to its name, so a damaged or planted cache file is never trusted:
//! it is replaced from the repository. Set STRATA_NO_CACHE=1 to disable.
//!
//! Each repository's directory also holds `key-hint`, the id of the key file
//! that unlocked it last, which `Repository::unlock` tries first.

use std::path::{Path, PathBuf};

use crate::id::Id;

/// Where the per-repository cache directories are, if caching is possible.
fn base() -> Option<PathBuf> {
    if std::env::var_os("STRATA_NO_CACHE").is_some_and(|v| !v.is_empty() && v != "0") {
        return None;
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("strata"))
}

/// The cache directory for one repository, if caching is possible.
pub fn dir_for(repo_id: &str) -> Option<PathBuf> {
    if repo_id.is_empty() || !repo_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(base()?.join(repo_id))
}

/// The file in a repository's cache directory naming the key file that
/// unlocked it last.
const KEY_HINT: &str = "key-hint";

/// The key files that last unlocked each repository cached here. The
/// repository is not known before it is unlocked, but a key file's id (the
/// hash of its bytes) names one file of one repository, so every hint is
/// returned and the caller looks for its key files among them.
pub fn key_hints() -> Vec<Id> {
    let Some(base) = base() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join(KEY_HINT)).ok()?;
            text.trim().parse::<Id>().ok()
        })
        .collect()
}

/// Remembers that key file `key` unlocked repository `repo_id` (best
/// effort, like every cache write).
pub fn set_key_hint(repo_id: &str, key: &Id) {
    let Some(dir) = dir_for(repo_id) else { return };
    let p = dir.join(KEY_HINT);
    let hex = key.to_hex();
    if std::fs::read_to_string(&p).is_ok_and(|t| t.trim() == hex) {
        return;
    }
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, format!("{hex}\n")).is_ok() {
        let _ = std::fs::rename(&tmp, &p);
    }
}

fn path(dir: &Path, folder: &str, id: &Id) -> PathBuf {
    dir.join(folder.trim_end_matches('/')).join(id.to_hex())
}

/// The cached sealed bytes, if any.
pub fn get(dir: &Path, folder: &str, id: &Id) -> Option<Vec<u8>> {
    std::fs::read(path(dir, folder, id)).ok()
}

/// Stores sealed bytes (best effort: a cache that cannot be written is skipped).
pub fn put(dir: &Path, folder: &str, id: &Id, sealed: &[u8]) {
    let p = path(dir, folder, id);
    let Some(parent) = p.parent() else { return };
    if std::fs::create_dir_all(parent).is_err() {
        return;
    }
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, sealed).is_ok() {
        let _ = std::fs::rename(&tmp, &p);
    }
}

/// Drops cached entries of `folder` that are no longer in the repository.
pub fn retain(dir: &Path, folder: &str, live: &[Id]) {
    let Ok(entries) = std::fs::read_dir(dir.join(folder.trim_end_matches('/'))) else {
        return;
    };
    for e in entries.flatten() {
        let keep = e
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<Id>().ok())
            .is_some_and(|id| live.contains(&id));
        if !keep {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
