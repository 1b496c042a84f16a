//! The file-tree side of the tests: listing, sizing and copying trees, and
//! comparing a restored tree with its source.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Every regular file below `dir`, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Sum of the sizes of every regular file below `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Copies a directory tree of regular files and directories.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        let dst = to.join(e.file_name());
        if t.is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Where `restore --target target` puts the snapshot path `src` (absolute).
pub fn restored(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").unwrap())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn kind(m: &std::fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "dir"
    } else if t.is_file() {
        "file"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() {
        "block"
    } else if t.is_char_device() {
        "char"
    } else {
        "other"
    }
}

/// What `compare_trees` checks besides type, bytes and link targets.
pub struct Compare {
    pub mode: bool,
    pub mtime: bool,
    pub owner: bool,
    pub hardlinks: bool,
}

impl Compare {
    pub fn all() -> Compare {
        Compare {
            mode: true,
            mtime: true,
            owner: is_root(),
            hardlinks: true,
        }
    }
}

/// Compares the tree at `src` with the restored tree at `dst`: same names,
/// types, file bytes, symlink targets, and (per `what`) permission bits,
/// mtimes to the nanosecond, owners and hardlink identity. The roots'
/// own metadata is compared too. Returns the number of entries compared.
pub fn compare_trees(src: &Path, dst: &Path, what: &Compare) -> usize {
    let mut links: HashMap<(u64, u64), (u64, u64)> = HashMap::new();
    let mut n = 0;
    compare_entry(src, dst, what, &mut links, &mut n);
    n
}

fn compare_entry(
    src: &Path,
    dst: &Path,
    what: &Compare,
    links: &mut HashMap<(u64, u64), (u64, u64)>,
    n: &mut usize,
) {
    *n += 1;
    let sm = std::fs::symlink_metadata(src).unwrap();
    let dm = std::fs::symlink_metadata(dst)
        .unwrap_or_else(|e| panic!("{} not restored: {e}", dst.display()));
    let name = src.display();
    assert_eq!(kind(&sm), kind(&dm), "{name}: type");
    if what.mode {
        assert_eq!(
            format!("{:o}", sm.mode() & 0o7777),
            format!("{:o}", dm.mode() & 0o7777),
            "{name}: mode"
        );
    }
    if what.mtime {
        assert_eq!(
            (sm.mtime(), sm.mtime_nsec()),
            (dm.mtime(), dm.mtime_nsec()),
            "{name}: mtime (s, ns)"
        );
    }
    if what.owner {
        assert_eq!((sm.uid(), sm.gid()), (dm.uid(), dm.gid()), "{name}: owner");
    }
    let t = sm.file_type();
    if t.is_symlink() {
        assert_eq!(
            std::fs::read_link(src).unwrap(),
            std::fs::read_link(dst).unwrap(),
            "{name}: link target"
        );
    } else if t.is_file() {
        assert_eq!(sm.len(), dm.len(), "{name}: size");
        let (a, b) = (std::fs::read(src).unwrap(), std::fs::read(dst).unwrap());
        assert!(a == b, "{name}: contents differ");
        if what.hardlinks && sm.nlink() > 1 {
            let s_ino = (sm.dev(), sm.ino());
            let d_ino = (dm.dev(), dm.ino());
            match links.get(&s_ino) {
                Some(prev) => assert_eq!(*prev, d_ino, "{name}: hardlink identity lost"),
                None => {
                    links.insert(s_ino, d_ino);
                }
            }
            assert_eq!(sm.nlink(), dm.nlink(), "{name}: link count");
        }
    } else if t.is_dir() {
        let list = |p: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let (sl, dl) = (list(src), list(dst));
        assert_eq!(sl, dl, "{name}: directory entries");
        for e in sl {
            compare_entry(&src.join(&e), &dst.join(&e), what, links, n);
        }
    }
}
