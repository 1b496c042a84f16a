//! `restore --dry-run`: what a restore would change in the target, found by
//! reading the target only (through descriptors, never following a symlink).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};

use super::apply::{self, ROOT};
use super::{RestoreOptions, keep_existing, walk_snapshot, wanted_names};
use crate::repo::Repository;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{NodeKind, escape_bytes};

/// One change a restore would make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `+` created, `M` replaced, `-` deleted (with `--delete`).
    pub action: char,
    /// Path in the target, from its root (escaped, see `escape_bytes`).
    pub path: String,
    /// The same path's raw bytes (names need not be UTF-8).
    pub raw: Vec<u8>,
}

/// What a restore would do.
#[derive(Debug, Default)]
pub struct Preview {
    /// The changes, in walk order (deletions after the rest).
    pub changes: Vec<Change>,
    /// Files that would be created.
    pub files_new: u64,
    /// Files that would replace what is there.
    pub files_replaced: u64,
    /// Files that would be kept as they are.
    pub files_kept: u64,
    /// Bytes that would be written.
    pub bytes: u64,
    /// Entries that would be deleted.
    pub deleted: u64,
}

/// Lists what restoring `snapshot` with `opts` would change; writes nothing.
pub fn preview(repo: &Repository, snapshot: &Snapshot, opts: &RestoreOptions) -> Result<Preview> {
    let index = repo.load_index()?;
    let entries = walk_snapshot(repo, &index, &snapshot.tree, &opts.includes)?;
    let root: Option<OwnedFd> = match std::fs::File::open(&opts.target) {
        Ok(f) => Some(f.into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", opts.target.display()));
        }
    };
    let mut fds: Vec<Option<OwnedFd>> = (0..entries.len()).map(|_| None).collect();
    let mut p = Preview::default();
    let change = |action: char, rel: &Path| {
        let mut raw = b"/".to_vec();
        raw.extend_from_slice(rel.as_os_str().as_bytes());
        Change {
            action,
            path: escape_bytes(&raw),
            raw,
        }
    };
    for (pos, e) in entries.iter().enumerate() {
        let node = &e.node;
        if node.kind == NodeKind::Socket {
            continue;
        }
        let parent: Option<BorrowedFd> = match e.parent {
            ROOT => root.as_ref().map(|f| f.as_fd()),
            d => fds[d].as_ref().map(|f| f.as_fd()),
        };
        let name = apply::cname(&node.name.0)?;
        let st = match parent {
            Some(d) => apply::lstat_at(d, &name)
                .with_context(|| format!("cannot read {}", opts.target.join(&e.path).display()))?,
            None => None,
        };
        let is_dir = |st: &libc::stat| st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let action = match (node.kind, st) {
            (_, None) => Some('+'),
            (NodeKind::Dir, Some(st)) if is_dir(&st) => {
                if let Some(d) = parent {
                    fds[pos] = apply::openat(d, &name, apply::DIR_FLAGS, 0).ok();
                }
                None
            }
            (NodeKind::File, Some(st)) => {
                (!keep_existing(opts.overwrite, &st, node)).then_some('M')
            }
            // A directory always replaces what is in its way.
            (NodeKind::Dir, Some(_)) => Some('M'),
            (_, Some(_)) if opts.overwrite == super::Overwrite::Never => None,
            (_, Some(st)) => {
                let same_type = match node.kind {
                    NodeKind::Symlink => st.st_mode & libc::S_IFMT == libc::S_IFLNK,
                    NodeKind::Fifo => st.st_mode & libc::S_IFMT == libc::S_IFIFO,
                    NodeKind::Blockdev => st.st_mode & libc::S_IFMT == libc::S_IFBLK,
                    _ => st.st_mode & libc::S_IFMT == libc::S_IFCHR,
                };
                (!same_type).then_some('M')
            }
        };
        if node.kind == NodeKind::File {
            match action {
                Some('+') => p.files_new += 1,
                Some(_) => p.files_replaced += 1,
                None => p.files_kept += 1,
            }
            if action.is_some() {
                p.bytes += node.size;
            }
        }
        if let Some(action) = action {
            p.changes.push(change(action, &e.path));
        }
    }
    if opts.delete {
        for (dir_pos, wanted) in wanted_names(&entries, snapshot, opts.includes.is_empty()) {
            let (dir, rel) = match dir_pos {
                ROOT => (root.as_ref(), Path::new("")),
                d => (fds[d].as_ref(), entries[d].path.as_path()),
            };
            let Some(dir) = dir else { continue };
            for name in super::extras_of(dir.as_fd(), &wanted)? {
                p.deleted += 1;
                let path = rel.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
                p.changes.push(change('-', &path));
            }
        }
    }
    Ok(p)
}
