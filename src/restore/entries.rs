//! Creating the entries of a restore, in walk order: directories, symlinks,
//! fifos and devices; regular files under their temporary names (or left
//! to the worker that writes their only blob), kept files checked; and the
//! plan by pack of every file's content.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use super::apply::{self, Dirs};
use super::packs::PackPlan;
use super::plan::Entry;
use super::target::TargetFault;
use super::{
    Overwrite, RestoreOptions, RestoreReport, keep_existing, lock, name_of, parent_of, partial_of,
    shown_rel,
};
use crate::id::Id;
use crate::repo::index::Index;
use crate::repo::tree::NodeKind;

/// What creating the entries left for filling and finishing.
pub(super) struct Created {
    /// Entry positions of the regular files, in file-number order.
    pub files: Vec<usize>,
    /// Per file: not created yet; the worker writing its only blob creates it.
    pub deferred: Vec<bool>,
    /// Per file: kept as it was in the target, or complete already (empty).
    pub done: Vec<bool>,
    /// Per file: kept as it was in the target.
    pub kept: Vec<bool>,
    /// Per file created here: its open descriptor, up to a budget.
    pub open: Vec<Mutex<Option<Arc<File>>>>,
    /// Per file: blob placements to write.
    pub placements: Vec<AtomicU32>,
    /// Per file created here but not held open: its (device, inode).
    pub inodes: Vec<(u64, u64)>,
    /// Hard links: (entry position, file number linked to).
    pub links: Vec<(usize, u32)>,
    /// The plan by pack.
    pub plan: PackPlan,
    /// Files whose content names a blob the index lacks.
    pub missing: Vec<(usize, Id)>,
    /// Per entry: created here (gets its metadata at the end).
    pub created: Vec<bool>,
    /// The first fault of the target file system, and where.
    pub fault: Option<(TargetFault, PathBuf)>,
}

/// Creates every entry but the contents of files (see the module doc).
pub(super) fn create(
    entries: &[Entry],
    index: &Index,
    dirs: &mut Dirs,
    owners: &apply::Owners,
    opts: &RestoreOptions,
    xattrs: Option<&apply::XattrFailures>,
    report: &mut RestoreReport,
) -> Created {
    let shown = |pos: usize| opts.target.join(&entries[pos].path);
    let mut files: Vec<usize> = Vec::new(); // entry positions of regular files
    // Per file: created by the worker that writes its only blob, instead of
    // here (one open, one write, metadata through the open file).
    let mut deferred: Vec<bool> = Vec::new();
    // Per file: kept as it was in the target, or complete already (empty).
    let mut done: Vec<bool> = Vec::new();
    let mut kept: Vec<bool> = Vec::new();
    let mut open: Vec<Mutex<Option<Arc<File>>>> = Vec::new();
    let mut placements: Vec<AtomicU32> = Vec::new(); // per file, blob placements
    let mut links: Vec<(usize, u32)> = Vec::new(); // (entry position, file linked to)
    let mut plan = PackPlan::default();
    let mut first_link: HashMap<(u64, u64), u32> = HashMap::new();
    let mut missing: Vec<(usize, Id)> = Vec::new();
    let mut created = vec![false; entries.len()];
    let mut fault: Option<(TargetFault, PathBuf)> = None;
    let mut listings: HashMap<usize, Option<HashSet<Vec<u8>>>> = HashMap::new();
    let mut new_dirs: Vec<usize> = Vec::new();
    // Files being filled: held open up to a budget of descriptors; past it,
    // the (device, inode) each was created with, checked when reopened.
    let mut inodes: Vec<(u64, u64)> = Vec::new();
    let file_budget = dirs.file_budget();
    let mut files_held = 0usize;
    let umask = apply::Umask::set(0);
    for (pos, e) in entries.iter().enumerate() {
        if opts.stop.load(Ordering::Relaxed) {
            break;
        }
        let node = &e.node;
        let name = &match name_of(e) {
            Ok(n) => n,
            Err(err) => {
                report
                    .errors
                    .push(format!("{}: {err}", shown(pos).display()));
                continue;
            }
        };
        if node.kind == NodeKind::Socket {
            report.skipped_sockets.push(shown_rel(&e.path));
            continue;
        }
        let linked_to = (node.kind == NodeKind::File && node.links > 1)
            .then(|| first_link.get(&(node.device, node.inode)).copied())
            .flatten();
        if let Some(file_no) = linked_to {
            links.push((pos, file_no)); // linked once the first is complete
            continue;
        }
        let made: io::Result<Option<std::os::fd::OwnedFd>> = (|| {
            let dir = parent_of(dirs, entries, e)?;
            let dir = dir.as_fd();
            // In a target that was not empty: what is in this directory,
            // listed once (None when it cannot be listed: look at each).
            let listing = if owners.fresh {
                None
            } else {
                Some(listings.entry(e.parent).or_insert_with(|| {
                    apply::list_dir(dir)
                        .ok()
                        .map(|names| names.into_iter().map(CString::into_bytes).collect())
                }))
            };
            let present = |n: &[u8]| match &listing {
                None => false,
                Some(None) => true,
                Some(Some(names)) => names.contains(n),
            };
            let existing = if present(&node.name.0) {
                apply::lstat_at(dir, name)?
            } else {
                None
            };
            match node.kind {
                NodeKind::Dir => {
                    let (fd, existed) = apply::create_dir(dir, name)?;
                    if !existed {
                        new_dirs.push(pos); // nothing to list in it
                    }
                    created[pos] = true;
                    report.dirs_restored += 1;
                    return Ok(Some(fd));
                }
                NodeKind::File => {
                    let file_no = files.len() as u32;
                    files.push(pos);
                    if node.links > 1 {
                        first_link.insert((node.device, node.inode), file_no);
                    }
                    // A file with more links than the snapshot's is not
                    // kept: its metadata must not be changed through a link
                    // someone made to a file elsewhere.
                    let keep = existing.is_some_and(|st| {
                        keep_existing(opts.overwrite, &st, node)
                            && apply::nlink(&st) <= node.links.max(1)
                    });
                    // Every per-file list gets its entry before anything
                    // that can fail.
                    let defer = !keep
                        && node.links <= 1
                        && node.content.len() == 1
                        && index.get(&node.content[0]).is_some();
                    kept.push(keep);
                    placements.push(AtomicU32::new(0));
                    open.push(Mutex::new(None));
                    inodes.push((0, 0));
                    deferred.push(defer);
                    done.push(keep);
                    if keep {
                        report.files_skipped += 1;
                        report.bytes_skipped += node.size;
                        // A leftover of an interrupted run goes.
                        let partial = partial_of(e)?;
                        if present(partial.to_bytes()) {
                            let _ = apply::unlink(dir, &partial);
                        }
                        let st = existing.expect("kept entry exists");
                        if st.st_mode & 0o7777 != node.mode & 0o7777
                            || owners.owner_differs(&st, node)
                        {
                            let fd = apply::openat(
                                dir,
                                name,
                                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
                                0,
                            )?;
                            // The same file as the one looked at, or nothing.
                            let file = File::from(fd);
                            let now = file.metadata()?;
                            if (now.dev(), now.ino()) != (st.st_dev, st.st_ino) {
                                return Err(io::Error::other("changed while being restored"));
                            }
                            apply::metadata_of_fd(file.as_fd(), node, owners)?;
                        }
                        return Ok(None);
                    }
                    let planned = plan.add_file(index, file_no, &node.content);
                    if let Some(id) = planned.missing {
                        missing.push((pos, id));
                    }
                    let (count, whole) = (planned.placements, planned.missing.is_none());
                    placements[file_no as usize] = AtomicU32::new(count);
                    if defer {
                        return Ok(None);
                    }
                    let partial = &partial_of(e)?;
                    let f = apply::create_file(dir, partial)?;
                    if node.size > 0 {
                        f.set_len(node.size)?;
                    }
                    if count == 0 && whole {
                        // Empty: complete now.
                        apply::metadata_of_fd(f.as_fd(), node, owners)?;
                        if let Some(fails) = xattrs {
                            apply::set_xattrs(f.as_fd(), node, fails);
                        }
                        apply::publish(dir, partial, name)?;
                        done[file_no as usize] = true;
                    } else if files_held < file_budget {
                        files_held += 1;
                        *lock(&open[file_no as usize]) = Some(Arc::new(f));
                    } else {
                        let m = f.metadata()?;
                        inodes[file_no as usize] = (m.dev(), m.ino());
                    }
                }
                _ => {
                    if existing.is_some() && opts.overwrite == Overwrite::Never {
                        return Ok(None);
                    }
                    apply::create_special(dir, name, node)?;
                    created[pos] = true;
                    report.others_restored += 1;
                }
            }
            Ok(None)
        })();
        for d in new_dirs.drain(..) {
            listings.insert(d, Some(HashSet::new()));
        }
        match made {
            Ok(Some(fd)) => dirs.hold(pos, fd),
            Ok(None) => {}
            Err(err) => {
                if let Some(f) = TargetFault::of_io(&err) {
                    fault = Some((f, shown(pos)));
                    break;
                }
                report
                    .errors
                    .push(format!("{}: {err}", shown(pos).display()));
            }
        }
    }
    drop(umask);
    Created {
        files,
        deferred,
        done,
        kept,
        open,
        placements,
        inodes,
        links,
        plan,
        missing,
        created,
        fault,
    }
}
