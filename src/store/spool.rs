//! Objects streamed to a local repository as they are produced.
//!
//! A spool file is written under `data/` with a name ending in `#<digits>`,
//! the form object_store's local store uses for its own staging files and
//! leaves out of listings, so a half-written pack is never seen as a pack.
//! Committing fsyncs it, renames it to its key and fsyncs the directory,
//! which is what a local `put` does. Spool files that a killed backup left
//! behind are removed by the next backup once they are an hour old.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

use super::Spool;

/// Folder (below the repository root) that holds spool files.
const SPOOL_DIR: &str = "data";
/// Spool file names: this prefix, random hex, then the staging suffix.
const SPOOL_PREFIX: &str = "spool-";
const SPOOL_SUFFIX: &str = "#1";
/// A spool file untouched for this long belongs to a backup that died.
const STALE: Duration = Duration::from_secs(3600);

/// A spool file in a local repository.
pub struct LocalSpool {
    root: PathBuf,
    tmp: PathBuf,
    file: File,
    committed: AtomicBool,
}

impl LocalSpool {
    /// Starts a new spool file in the repository at `root`.
    pub fn create(root: &Path) -> Result<LocalSpool> {
        let dir = root.join(SPOOL_DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!(
            "{SPOOL_PREFIX}{:032x}{SPOOL_SUFFIX}",
            rand::random::<u128>()
        ));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        Ok(LocalSpool {
            root: root.to_path_buf(),
            tmp,
            file,
            committed: AtomicBool::new(false),
        })
    }
}

impl Spool for LocalSpool {
    fn write_at(&self, bytes: &[u8], offset: u64) -> Result<()> {
        self.file
            .write_all_at(bytes, offset)
            .with_context(|| format!("writing {}", self.tmp.display()))
    }

    fn commit(&self, key: &str) -> Result<()> {
        self.file
            .sync_all()
            .with_context(|| format!("syncing {}", self.tmp.display()))?;
        // Nothing reads a pack soon, and a backup should not push the
        // machine's working set out (borg does the same); the freed pages
        // are also what the next pack's writes reuse.
        drop_cached(&self.file, 0, 0);
        let dest = self.root.join(key);
        let parent = dest.parent().expect("keys name a file below the root");
        if !parent.is_dir() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
            if let Some(grand) = parent.parent() {
                sync_dir(grand)?;
            }
        }
        std::fs::rename(&self.tmp, &dest)
            .with_context(|| format!("renaming {} to {}", self.tmp.display(), dest.display()))?;
        self.committed.store(true, Ordering::Release);
        sync_dir(parent)
    }
}

impl Drop for LocalSpool {
    fn drop(&mut self) {
        if !self.committed.load(Ordering::Acquire) {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Advises the kernel to drop `len` bytes of `file` from `offset` (0: to
/// the end) from the page cache: for pack bytes that are written or read
/// once.
pub(super) fn drop_cached(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; the call is only advice.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        );
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// Removes spool files under `root` that nobody has written to for an hour
/// (left by a backup that was killed); returns how many went.
pub fn sweep_stale(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root.join(SPOOL_DIR)) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(SPOOL_PREFIX) && name.ends_with(SPOOL_SUFFIX)) {
            continue;
        }
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE);
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_publishes_and_drop_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalSpool::create(dir.path()).unwrap();
        s.write_at(b"world", 6).unwrap();
        s.write_at(b"hello ", 0).unwrap();
        s.commit("data/ab/abcdef").unwrap();
        drop(s);
        assert_eq!(
            std::fs::read(dir.path().join("data/ab/abcdef")).unwrap(),
            b"hello world"
        );

        let s = LocalSpool::create(dir.path()).unwrap();
        s.write_at(b"abandoned", 0).unwrap();
        let tmp = s.tmp.clone();
        assert!(tmp.exists());
        drop(s);
        assert!(!tmp.exists(), "an uncommitted spool file stays behind");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("data"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("ab")]);
    }

    #[test]
    fn only_old_spool_files_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let old = data.join(format!("{SPOOL_PREFIX}00{SPOOL_SUFFIX}"));
        let fresh = data.join(format!("{SPOOL_PREFIX}01{SPOOL_SUFFIX}"));
        let other = data.join("not-a-spool");
        for p in [&old, &fresh, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        let hours_ago =
            filetime::FileTime::from_unix_time(chrono::Utc::now().timestamp() - 2 * 3600, 0);
        filetime::set_file_mtime(&old, hours_ago).unwrap();
        filetime::set_file_mtime(&other, hours_ago).unwrap();
        assert_eq!(sweep_stale(dir.path()), 1);
        assert!(!old.exists());
        assert!(fresh.exists() && other.exists());
    }
}
