//! Reading file metadata into tree nodes.

use std::ffi::{CStr, CString, OsStr};
use std::fs::{File, Metadata};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::repo::tree::{Node, NodeKind, RawName, Xattr};

/// The node kind of a file type.
pub fn kind_of(meta: &Metadata) -> NodeKind {
    let ft = meta.file_type();
    if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_block_device() {
        NodeKind::Blockdev
    } else if ft.is_char_device() {
        NodeKind::Chardev
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    }
}

/// A node for `name` from its `lstat` metadata (content, subtree and target
/// are filled in by the caller).
pub fn node_from(name: &OsStr, meta: &Metadata) -> Node {
    let kind = kind_of(meta);
    let mut node = Node {
        name: RawName(name.as_bytes().to_vec()),
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
        mtime_ns: meta.mtime_nsec() as u32,
        ctime: meta.ctime(),
        ctime_ns: meta.ctime_nsec() as u32,
        inode: meta.ino(),
        device: meta.dev(),
        links: meta.nlink(),
        size: if kind == NodeKind::File {
            meta.len()
        } else {
            0
        },
        content: Vec::new(),
        subtree: None,
        target: None,
        rdev: matches!(kind, NodeKind::Blockdev | NodeKind::Chardev).then(|| meta.rdev()),
        xattrs: Vec::new(),
    };
    if crate::entropy::in_simulation() {
        // What a replayed run cannot reproduce (see `crate::entropy`).
        (node.ctime, node.ctime_ns, node.inode, node.device) = (0, 0, 0, 0);
        if kind == NodeKind::Dir {
            (node.mtime, node.mtime_ns, node.links) = (0, 0, 0);
        }
    }
    node
}

/// Whether backups read extended attributes (`backup --no-xattrs` clears it).
static CAPTURE_XATTRS: AtomicBool = AtomicBool::new(true);

/// Turns reading extended attributes during backups on or off.
pub fn capture_xattrs(on: bool) {
    CAPTURE_XATTRS.store(on, Ordering::Relaxed);
}

/// [`node_from`] plus the extended attributes of the entry at `path`
/// (read without following a symlink).
pub fn node_at(path: &Path, name: &OsStr, meta: &Metadata) -> Node {
    let mut node = node_from(name, meta);
    if CAPTURE_XATTRS.load(Ordering::Relaxed)
        && node.kind != NodeKind::Socket
        && let Ok(c) = CString::new(path.as_os_str().as_bytes())
    {
        node.xattrs = read_xattrs(Source::Path(&c));
    }
    node
}

/// [`node_from`] plus the extended attributes of the open file `file`.
pub fn node_of_file(file: &File, name: &OsStr, meta: &Metadata) -> Node {
    let mut node = node_from(name, meta);
    if CAPTURE_XATTRS.load(Ordering::Relaxed) {
        node.xattrs = read_xattrs(Source::Fd(file.as_raw_fd()));
    }
    node
}

/// Where attributes are read from.
#[derive(Clone, Copy)]
enum Source<'a> {
    Path(&'a CStr),
    Fd(i32),
}

/// Calls a size-probing xattr function (`buf` empty first, then sized),
/// growing the buffer when the value grew in between.
fn probe(mut call: impl FnMut(&mut [u8]) -> isize) -> Option<Vec<u8>> {
    for _ in 0..4 {
        let n = call(&mut []);
        if n < 0 {
            return None;
        }
        let mut buf = vec![0u8; n as usize];
        if n == 0 {
            return Some(buf);
        }
        let got = call(&mut buf);
        if got >= 0 {
            buf.truncate(got as usize);
            return Some(buf);
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
            return None;
        }
    }
    None
}

/// Every extended attribute the entry has and we may read, sorted by name.
/// A file system without them gives none.
fn read_xattrs(src: Source) -> Vec<Xattr> {
    let list = probe(|buf| {
        let (ptr, len) = (buf.as_mut_ptr() as *mut libc::c_char, buf.len());
        // SAFETY: ptr/len describe a writable buffer (or len 0); paths are NUL-terminated.
        unsafe {
            match src {
                Source::Path(p) => libc::llistxattr(p.as_ptr(), ptr, len),
                Source::Fd(fd) => libc::flistxattr(fd, ptr, len),
            }
        }
    });
    let Some(list) = list else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        let value = probe(|buf| {
            let (ptr, len) = (buf.as_mut_ptr() as *mut libc::c_void, buf.len());
            // SAFETY: as above; cname is NUL-terminated.
            unsafe {
                match src {
                    Source::Path(p) => libc::lgetxattr(p.as_ptr(), cname.as_ptr(), ptr, len),
                    Source::Fd(fd) => libc::fgetxattr(fd, cname.as_ptr(), ptr, len),
                }
            }
        });
        if let Some(value) = value {
            out.push(Xattr {
                name: RawName(name.to_vec()),
                value,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// True when a file looks unchanged between two nodes: same size, mtime,
/// ctime and inode. (The ctime catches content rewritten with a forged mtime.)
pub fn unchanged(old: &Node, new: &Node) -> bool {
    old.kind == NodeKind::File
        && new.kind == NodeKind::File
        && old.size == new.size
        && old.mtime == new.mtime
        && old.mtime_ns == new.mtime_ns
        && old.ctime == new.ctime
        && old.ctime_ns == new.ctime_ns
        && old.inode == new.inode
}
