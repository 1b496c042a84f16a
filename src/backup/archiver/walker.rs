//! The walker: reads directories, applies excludes, detects unchanged
//! files against the parent and queues the rest for the readers.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Result;
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use super::reader::read_file;
use super::trees::finalize_dirs;
use super::{BackupRun, DirJob, FileJob, FileOutcome, Pending};
use crate::backup::excludes::{Excludes, Verdict};
use crate::fsmeta::{node_at, node_from, unchanged};
use crate::id::Id;
use crate::repo::tree::{Node, NodeKind, RawName, Tree};

/// The directories above the given paths, down to the paths themselves.
#[derive(Default)]
pub(super) struct VirtualDir {
    children: BTreeMap<Vec<u8>, VirtualEntry>,
}

/// A name on the way to, or at, a path the user gave.
#[derive(Default)]
pub(super) struct VirtualEntry {
    /// The user named this path: everything below it is backed up.
    named: bool,
    /// Named paths below it (below a named one: those reached through a
    /// symlink, which the walk follows for them).
    below: VirtualDir,
}

pub(super) fn walk_sources(
    shared: &Arc<BackupRun>,
    paths: &[PathBuf],
    parent_root: Option<Arc<Tree>>,
    excludes: &Excludes,
    threads: usize,
) -> Result<Option<Id>> {
    let (file_tx, file_rx) = bounded::<FileJob>(threads * 4);
    let (dir_tx, dir_rx) = unbounded::<DirJob>();
    let mut workers = Vec::new();
    for i in 0..threads {
        let rx = file_rx.clone();
        let shared = shared.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("strata-read-{i}"))
                .spawn(move || {
                    for job in rx {
                        let out = read_file(&shared, &job.path, job.follow, job.node);
                        if let FileOutcome::Saved(_) = out {
                            let c = &shared.counters;
                            match job.in_parent {
                                true => c.files_changed.fetch_add(1, Ordering::Relaxed),
                                false => c.files_new.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                        let _ = job.reply.send(out);
                    }
                })?,
        );
    }
    let finalizer = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("strata-trees".into())
            .spawn(move || finalize_dirs(&shared, dir_rx))?
    };

    let walker = Walker {
        shared: shared.clone(),
        file_tx,
        dir_tx,
        excludes: excludes.clone(),
    };
    let mut root = VirtualEntry::default();
    for p in paths {
        let mut at = &mut root;
        for c in p.iter().skip(1) {
            at = at.below.children.entry(c.as_bytes().to_vec()).or_default();
        }
        at.named = true;
    }
    let root_rx = if root.named {
        walker.walk_dir(Path::new("/"), parent_root, Some(&root.below))
    } else {
        walker.walk_virtual(Path::new("/"), &root.below, parent_root)
    };
    drop(walker);
    for w in workers {
        let _ = w.join();
    }
    let _ = finalizer.join();
    Ok(root_rx.recv().ok().flatten())
}

pub(super) struct Walker {
    shared: Arc<BackupRun>,
    file_tx: Sender<FileJob>,
    dir_tx: Sender<DirJob>,
    excludes: Excludes,
}

impl Walker {
    fn submit(&self, nodes: Vec<Pending>) -> Receiver<Option<Id>> {
        let (reply, rx) = bounded(1);
        self.shared.counters.dirs.fetch_add(1, Ordering::Relaxed);
        let _ = self.dir_tx.send(DirJob { nodes, reply });
        rx
    }

    /// Counts an entry an exclude rule left out, and names it at debug level.
    fn exclude(&self, path: &Path, why: &str) {
        self.shared
            .counters
            .excluded
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!("excluded {}: {why}", path.display());
    }

    fn parent_subtree(&self, parent: Option<&Node>) -> Option<Arc<Tree>> {
        let id = parent.filter(|n| n.kind == NodeKind::Dir)?.subtree?;
        self.shared.repo.load_tree(&self.shared.index, &id).ok()
    }

    /// Walks the directories above the named paths, and the named paths.
    fn walk_virtual(
        &self,
        path: &Path,
        dir: &VirtualDir,
        parent: Option<Arc<Tree>>,
    ) -> Receiver<Option<Id>> {
        let mut nodes = Vec::new();
        for (name, child) in &dir.children {
            let name = OsStr::from_bytes(name);
            let parent_node = parent.as_ref().and_then(|t| t.find(name.as_bytes()));
            nodes.extend(self.virtual_entry(&path.join(name), name, child, parent_node, false));
        }
        self.submit(nodes)
    }

    /// A named path, or a directory above one. The user named these, so a
    /// symlink among them is followed and stored as what it points to, under
    /// the name the user gave (a dangling one is stored as the link).
    /// `in_named`: it lies inside another named path, so, unless it is the
    /// symlink that made the user name a path below it, all of it is walked.
    fn virtual_entry(
        &self,
        path: &Path,
        name: &OsStr,
        v: &VirtualEntry,
        parent: Option<&Node>,
        in_named: bool,
    ) -> Option<Pending> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) => match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() && v.below.children.is_empty() => m,
                _ => {
                    self.shared.warn(format!("{}: {e}", path.display()));
                    return None;
                }
            },
        };
        let whole = v.named
            || (in_named
                && !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()));
        if !meta.is_dir() || (whole && v.below.children.is_empty()) {
            return self.entry(path, name, &meta, parent, true);
        }
        let subtree = self.parent_subtree(parent);
        let rx = match whole {
            true => self.walk_dir(path, subtree, Some(&v.below)),
            false => self.walk_virtual(path, &v.below, subtree),
        };
        Some(Pending::Dir(node_from(name, &meta), rx))
    }

    /// Walks a directory; the entries of `named` (paths the user gave below
    /// it) are followed as [`Walker::virtual_entry`] does.
    fn walk_dir(
        &self,
        path: &Path,
        parent: Option<Arc<Tree>>,
        named: Option<&VirtualDir>,
    ) -> Receiver<Option<Id>> {
        let mut names: Vec<OsString> = Vec::new();
        if self.shared.stopped() {
            // Saving failed: the backup is lost anyway, stop reading.
            return self.submit(Vec::new());
        }
        match std::fs::read_dir(path) {
            Ok(rd) => {
                for entry in rd {
                    match entry {
                        Ok(e) => names.push(e.file_name()),
                        Err(e) => self.shared.warn(format!("{}: {e}", path.display())),
                    }
                }
            }
            Err(e) => self
                .shared
                .warn(format!("{}: cannot list directory: {e}", path.display())),
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let dir_dev = match self.excludes.wants_device() {
            true => std::fs::metadata(path).ok().map(|m| m.dev()),
            false => None,
        };
        let mut nodes = Vec::with_capacity(names.len());
        for name in names {
            let child = path.join(&name);
            let parent_node = parent.as_ref().and_then(|t| t.find(name.as_bytes()));
            if let Some(v) = named.and_then(|d| d.children.get(name.as_bytes())) {
                nodes.extend(self.virtual_entry(&child, &name, v, parent_node, true));
                continue;
            }
            if self.excludes.by_name(&child) {
                self.exclude(&child, "matches an exclude pattern");
                continue;
            }
            let meta = match std::fs::symlink_metadata(&child) {
                Ok(m) => m,
                Err(e) => {
                    self.shared.warn(format!("{}: {e}", child.display()));
                    continue;
                }
            };
            match self.excludes.by_meta(&child, &meta, dir_dev) {
                Verdict::Keep => {}
                Verdict::Skip(why) => {
                    self.exclude(&child, why);
                    continue;
                }
                Verdict::MountPoint => {
                    // Kept as an empty directory, so a restore recreates
                    // the mount point.
                    self.exclude(
                        &child,
                        "another file system (recorded as an empty directory)",
                    );
                    nodes.push(Pending::Dir(
                        node_from(&name, &meta),
                        self.submit(Vec::new()),
                    ));
                    continue;
                }
            }
            nodes.extend(self.entry(&child, &name, &meta, parent_node, false));
        }
        self.submit(nodes)
    }

    /// The node of one entry with its `meta` (`named`: a path the user gave,
    /// whose `meta` is that of the file it names, so it is opened through a
    /// final symlink).
    fn entry(
        &self,
        path: &Path,
        name: &OsStr,
        meta: &Metadata,
        parent: Option<&Node>,
        named: bool,
    ) -> Option<Pending> {
        let mut node = node_at(path, name, meta);
        match node.kind {
            NodeKind::Dir => {
                let rx = self.walk_dir(path, self.parent_subtree(parent), None);
                Some(Pending::Dir(node, rx))
            }
            NodeKind::Symlink => match std::fs::read_link(path) {
                Ok(t) => {
                    node.target = Some(RawName(t.as_os_str().as_bytes().to_vec()));
                    Some(Pending::Ready(node))
                }
                Err(e) => {
                    self.shared
                        .warn(format!("{}: cannot read link: {e}", path.display()));
                    None
                }
            },
            NodeKind::File => {
                let c = &self.shared.counters;
                if let Some(p) = parent
                    && unchanged(p, &node)
                    && p.content.iter().all(|id| self.shared.index.contains(id))
                {
                    node.content = p.content.clone();
                    self.shared.progress.file_done(node.size);
                    c.files_unmodified.fetch_add(1, Ordering::Relaxed);
                    c.total_bytes.fetch_add(node.size, Ordering::Relaxed);
                    return Some(Pending::Ready(node));
                }
                let (reply, rx) = bounded(1);
                let _ = self.file_tx.send(FileJob {
                    path: path.to_path_buf(),
                    follow: named,
                    node,
                    in_parent: parent.is_some(),
                    reply,
                });
                Some(Pending::File(rx))
            }
            _ => Some(Pending::Ready(node)),
        }
    }
}
