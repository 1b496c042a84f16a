//! Reading file metadata into tree nodes.

use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crate::repo::tree::{Node, NodeKind, RawName};

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
    Node {
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
    }
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
