//! Restores: plan the entries, create them, fill file contents pack by pack
//! with positioned writes, then apply metadata deepest-first.
//!
//! Everything on disk is reached through directory descriptors and never
//! through a symlink (see `apply`); a regular file is written under a
//! temporary name and gets its own name only when complete.

mod apply;
mod plan;
mod preview;
mod target;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use crossbeam_channel::unbounded;

pub use apply::PARTIAL_SUFFIX;
pub use plan::{Entry, walk_snapshot};
pub use preview::{Change, Preview, preview};

use crate::error::Fatal;
use crate::id::Id;
use crate::repo::Repository;
use crate::repo::blob::{open_blob, open_blob_append};
use crate::repo::index::Index;
use crate::repo::layout;
use crate::repo::pack::PackEntry;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind};
use apply::{Dirs, ROOT};
use target::TargetFault;

/// What a restore does with a file already at a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Overwrite {
    /// Always write the snapshot's file.
    Always,
    /// Keep a regular file of the same size and modification time (to the
    /// nanosecond); write the others.
    #[default]
    IfChanged,
    /// Keep a regular file at least as new as the snapshot's.
    IfNewer,
    /// Keep whatever is there.
    Never,
}

/// Options of a restore.
pub struct RestoreOptions {
    /// Directory to restore into (created if missing).
    pub target: PathBuf,
    /// Only restore paths matching these globs (and what is below them).
    pub includes: Vec<String>,
    /// Re-read every restored file and check it against the snapshot.
    pub verify: bool,
    /// Parallel pack readers.
    pub threads: usize,
    /// Updated as data is written, for a progress display.
    pub progress: Arc<crate::progress::Counters>,
    /// What to do with files already in the target.
    pub overwrite: Overwrite,
    /// Set (by a signal handler) to stop the restore: it then removes what
    /// it has not completed and fails with [`Fatal::Interrupted`].
    pub stop: Arc<AtomicBool>,
    /// Make the target match the snapshot: remove what the snapshot lacks
    /// from each directory restored whole at or below a backed-up path.
    pub delete: bool,
    /// Restore extended attributes, POSIX ACLs and file capabilities.
    pub xattrs: bool,
}

/// The outcome of a restore.
#[derive(Debug, Default)]
pub struct RestoreReport {
    /// Regular files restored.
    pub files_restored: u64,
    /// Directories restored.
    pub dirs_restored: u64,
    /// Other entries (links, devices, fifos).
    pub others_restored: u64,
    /// File content bytes restored.
    pub bytes_restored: u64,
    /// Wall time in seconds.
    pub duration_s: f64,
    /// Problems, one line each; non-empty means the restore is incomplete.
    pub errors: Vec<String>,
    /// Files whose content could not be fully restored.
    pub damaged_files: Vec<String>,
    /// Files checked by --verify.
    pub verified_files: u64,
    /// Entries not restored by design (Unix sockets: a socket is made by
    /// the program that listens on it), as `/path` relative to the target.
    pub skipped_sockets: Vec<String>,
    /// Files already in the target and kept (see [`Overwrite`]).
    pub files_skipped: u64,
    /// Bytes of those files.
    pub bytes_skipped: u64,
    /// Entries removed by `delete` (a directory with what was below it).
    pub deleted: Vec<String>,
    /// One line when extended attributes could not all be restored (not
    /// permitted, or not supported by the target).
    pub xattr_warning: Option<String>,
}

/// Where one blob's plaintext goes.
#[derive(Clone, Copy)]
struct Target {
    file: u32,
    offset: u64,
}

/// Whether an existing entry (its `lstat`) is kept instead of the node.
fn keep_existing(how: Overwrite, st: &libc::stat, node: &Node) -> bool {
    let regular = st.st_mode & libc::S_IFMT == libc::S_IFREG;
    let mtime = (st.st_mtime, st.st_mtime_nsec);
    let want = (node.mtime as libc::time_t, node.mtime_ns as i64);
    match how {
        Overwrite::Always => false,
        Overwrite::Never => true,
        Overwrite::IfChanged => {
            node.kind == NodeKind::File
                && regular
                && st.st_size as u64 == node.size
                && mtime == want
        }
        Overwrite::IfNewer => node.kind == NodeKind::File && regular && mtime >= want,
    }
}

/// Fails with [`Fatal::Interrupted`] when the stop flag is set.
fn check_stop(opts: &RestoreOptions) -> Result<()> {
    if opts.stop.load(Ordering::Relaxed) {
        return Err(anyhow::Error::new(Fatal::Interrupted)
            .context("interrupted before anything was restored"));
    }
    Ok(())
}

/// The directory of entry `e` (held, or opened again beneath the root).
fn parent_of<'a>(dirs: &'a Dirs, entries: &[Entry], e: &Entry) -> io::Result<apply::DirRef<'a>> {
    let rel = match e.parent {
        ROOT => Path::new(""),
        p => entries[p].path.as_path(),
    };
    dirs.get(e.parent, rel)
}

/// Restores a snapshot into `opts.target`.
///
/// The target is created if missing and probed for writability first. If the
/// target file system fails a write with "no space left", "quota exceeded"
/// or "read-only", or `opts.stop` is set, the restore stops at once: every
/// file not completely written is removed (files are written under a
/// temporary name, so none looks complete), complete entries get their
/// metadata, and the error names the cause and how many files were
/// restored. Running restore again into the same target completes it,
/// keeping what is already there and identical (see [`Overwrite`]).
pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let started = Instant::now();
    target::prepare(&opts.target)?;
    let owners = apply::Owners::for_target(&opts.target);
    let index = repo.load_index()?;
    let entries = walk_snapshot(repo, &index, &snapshot.tree, &opts.includes)?;
    check_stop(opts)?;
    let mut report = RestoreReport::default();
    let mut dirs = Dirs::open(&opts.target, entries.len())
        .with_context(|| format!("cannot open the restore target {}", opts.target.display()))?;
    let shown = |pos: usize| opts.target.join(&entries[pos].path);

    // Phase 1: create directories and special files, decide what each file
    // needs; collect where each blob goes.
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
    let mut by_pack: HashMap<Id, Vec<(PackEntry, Vec<Target>)>> = HashMap::new();
    let mut blob_slot: HashMap<Id, (Id, usize)> = HashMap::new();
    let mut first_link: HashMap<(u64, u64), u32> = HashMap::new();
    let mut missing: Vec<(usize, Id)> = Vec::new();
    let mut created = vec![false; entries.len()];
    let mut fault: Option<(TargetFault, PathBuf)> = None;
    let xattr_fails = apply::XattrFailures::default();
    let xattrs = opts.xattrs.then_some(&xattr_fails);
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
            let dir = parent_of(&dirs, &entries, e)?;
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
                            apply::metadata_of_fd(file.as_fd(), node, &owners)?;
                        }
                        return Ok(None);
                    }
                    let mut offset = 0u64;
                    let mut count = 0u32;
                    let mut whole = true;
                    for id in &node.content {
                        let Some((pack, entry)) = index.get(id) else {
                            // Its length is unknown, so nothing after it has a
                            // known offset: the file stops here, reported damaged.
                            missing.push((pos, *id));
                            whole = false;
                            break;
                        };
                        let target = Target {
                            file: file_no,
                            offset,
                        };
                        offset += entry.raw_len as u64;
                        count += 1;
                        match blob_slot.get(id) {
                            Some((p, i)) => {
                                by_pack.get_mut(p).expect("pack listed")[*i].1.push(target)
                            }
                            None => {
                                let list = by_pack.entry(pack).or_default();
                                blob_slot.insert(*id, (pack, list.len()));
                                list.push((entry, vec![target]));
                            }
                        }
                    }
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
                        apply::metadata_of_fd(f.as_fd(), node, &owners)?;
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

    let mut damaged: BTreeSet<usize> = BTreeSet::new();
    for (pos, id) in missing {
        report.errors.push(format!(
            "{}: blob {} is missing from the index",
            entries[pos].path.display(),
            id.short()
        ));
        damaged.insert(pos);
    }

    // Phase 2: fill contents, one pack at a time per worker; the worker that
    // completes a file applies its metadata and gives it its own name.
    opts.progress.set_totals(
        files.len() as u64,
        files.iter().map(|&p| entries[p].node.size).sum(),
    );
    let interrupted = opts.stop.load(Ordering::Relaxed);
    let fill = Fill {
        entries: &entries,
        files: &files,
        dirs: &dirs,
        target: &opts.target,
        deferred,
        open,
        inodes,
        owners: &owners,
        xattrs,
        finished: done.iter().map(|&d| AtomicBool::new(d)).collect(),
        metadata_errors: Mutex::default(),
        remaining: placements,
        written: &opts.progress.bytes,
        failures: Mutex::default(),
        stopped: AtomicBool::new(fault.is_some() || interrupted),
        stop: &opts.stop,
        fault: Mutex::new(fault),
    };
    if !fill.stopped.load(Ordering::Relaxed) {
        let (tx, rx) = unbounded();
        for job in by_pack {
            tx.send(job).expect("queue");
        }
        drop(tx);
        std::thread::scope(|s| {
            for _ in 0..opts.threads.max(1) {
                let rx = rx.clone();
                let fill = &fill;
                s.spawn(move || {
                    let mut plain = SpanPlain::default();
                    for (pack, blobs) in rx {
                        if fill.halted() {
                            break;
                        }
                        restore_pack(repo, &pack, blobs, fill, &mut plain);
                    }
                });
            }
        });
    }
    for (msg, file_nos) in lock(&fill.failures).drain(..) {
        report.errors.push(msg);
        damaged.extend(file_nos.into_iter().map(|f| files[f as usize]));
    }
    report.errors.append(&mut lock(&fill.metadata_errors));
    report.bytes_restored = fill.written.load(Ordering::Relaxed);
    opts.progress
        .files
        .store(files.len() as u64, Ordering::Relaxed);
    // Complete: under its own name, with its metadata.
    let complete: Vec<bool> = (0..files.len())
        .map(|f| fill.finished[f].load(Ordering::Relaxed) && !damaged.contains(&files[f]))
        .collect();
    report.files_restored = (0..files.len())
        .filter(|&f| complete[f] && !kept[f])
        .count() as u64;
    drop(fill.open); // closes files still open

    // Hard links to files that are complete.
    for &(pos, first) in &links {
        if !complete[first as usize] {
            continue;
        }
        let first_pos = files[first as usize];
        let linked = (|| {
            let from = parent_of(&dirs, &entries, &entries[first_pos])?;
            let to = parent_of(&dirs, &entries, &entries[pos])?;
            let (first_name, name) = (name_of(&entries[first_pos])?, name_of(&entries[pos])?);
            apply::hard_link(from.as_fd(), &first_name, to.as_fd(), &name)
        })();
        match linked {
            Ok(true) => report.files_restored += 1,
            Ok(false) => {
                report.files_skipped += 1;
                report.bytes_skipped += entries[pos].node.size;
            }
            Err(e) => report
                .errors
                .push(format!("{}: cannot link: {e}", shown(pos).display())),
        }
    }

    let fault = lock(&fill.fault).take();
    let interrupted = opts.stop.load(Ordering::Relaxed);
    if fault.is_some() || interrupted {
        // Remove what is not complete (it is under its temporary name), so
        // nothing half-written stays.
        let mut left = 0usize;
        for (f, &pos) in files.iter().enumerate() {
            if complete[f] {
                continue;
            }
            let removed = parent_of(&dirs, &entries, &entries[pos])
                .and_then(|d| apply::unlink(d.as_fd(), &partial_of(&entries[pos])?));
            match removed {
                Err(e) if e.kind() != io::ErrorKind::NotFound => left += 1,
                _ => {}
            }
        }
        // Complete entries get their metadata, best effort: the stop is the story.
        let _ = apply_metadata(&dirs, &entries, &created, &owners, xattrs);
        let total = entries
            .iter()
            .filter(|e| e.node.kind == NodeKind::File)
            .count();
        let removed = match left {
            0 => "incomplete files removed".to_string(),
            n => format!("{n} incomplete file(s) could not be removed"),
        };
        let done = report.files_restored + report.files_skipped;
        if let Some((fault, path)) = fault {
            bail!(
                "{} writing {}: {done} of {total} files restored, {removed}; {}",
                fault.cause(),
                path.display(),
                fault.advice()
            );
        }
        return Err(anyhow::Error::new(Fatal::Interrupted).context(format!(
            "interrupted: {done} of {total} files restored, {removed}; run the same restore again to finish (it keeps the files already restored)"
        )));
    }

    if opts.delete {
        for (dir_pos, wanted) in wanted_names(&entries, snapshot, opts.includes.is_empty()) {
            let rel = match dir_pos {
                ROOT => Path::new(""),
                p => entries[p].path.as_path(),
            };
            let extras = dirs
                .get(dir_pos, rel)
                .and_then(|d| extras_of(d.as_fd(), &wanted).map(|x| (d, x)));
            match extras {
                Ok((d, extras)) => {
                    for name in extras {
                        let path = rel.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
                        match apply::remove_tree(d.as_fd(), &name) {
                            Ok(()) => report.deleted.push(format!(
                                "/{}",
                                crate::repo::tree::escape_bytes(path.as_os_str().as_bytes())
                            )),
                            Err(e) => report.errors.push(format!(
                                "{}: cannot delete: {e}",
                                opts.target.join(&path).display()
                            )),
                        }
                    }
                }
                Err(e) => report.errors.push(format!(
                    "{}: cannot list: {e}",
                    opts.target.join(rel).display()
                )),
            }
        }
    }

    // Phase 3: metadata of the rest, deepest entries first so directory
    // mtimes stick.
    report
        .errors
        .extend(apply_metadata(&dirs, &entries, &created, &owners, xattrs));
    report.xattr_warning = xattr_fails.warning();
    report.damaged_files = damaged
        .iter()
        .map(|&p| shown_rel(&entries[p].path))
        .collect();

    if opts.verify {
        for &pos in &files {
            if damaged.contains(&pos) {
                continue;
            }
            let e = &entries[pos];
            let checked = parent_of(&dirs, &entries, e)
                .map_err(anyhow::Error::from)
                .and_then(|d| verify_file(repo, &index, d.as_fd(), &name_of(e)?, &e.node.content));
            match checked {
                Ok(()) => report.verified_files += 1,
                Err(err) => {
                    report.errors.push(format!(
                        "{}: verification failed: {err:#}",
                        shown(pos).display()
                    ));
                    report.damaged_files.push(shown_rel(&e.path));
                }
            }
        }
    }
    report.duration_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// For each directory `--delete` may clean, by entry position ([`ROOT`] for
/// the target root): the names the snapshot has in it. Those are the
/// directories restored whole (`--include` matched, or none given) that are
/// a backed-up path or below one: the directories above a backed-up path
/// (`/`, `/home` for `/home/alice`) are only its way there, and what else
/// they hold in the target is left alone.
fn wanted_names<'a>(
    entries: &'a [Entry],
    snapshot: &Snapshot,
    no_includes: bool,
) -> Vec<(usize, HashSet<&'a [u8]>)> {
    let backed_up: Vec<&Path> = snapshot.paths.iter().map(Path::new).collect();
    let inside = |rel: &Path| {
        let abs = Path::new("/").join(rel);
        backed_up.iter().any(|p| abs.starts_with(p))
    };
    let mut map: HashMap<usize, HashSet<&[u8]>> = HashMap::new();
    if no_includes && inside(Path::new("")) {
        map.insert(ROOT, HashSet::new());
    }
    for (pos, e) in entries.iter().enumerate() {
        if e.whole && e.node.kind == NodeKind::Dir && inside(&e.path) {
            map.insert(pos, HashSet::new());
        }
    }
    for e in entries {
        if let Some(set) = map.get_mut(&e.parent) {
            set.insert(e.node.name.0.as_slice());
        }
    }
    let mut out: Vec<_> = map.into_iter().collect();
    out.sort_by_key(|(pos, _)| pos.wrapping_add(1)); // the root first
    out
}

/// The names in `dir` that are not in `wanted`.
fn extras_of(dir: std::os::fd::BorrowedFd, wanted: &HashSet<&[u8]>) -> io::Result<Vec<CString>> {
    Ok(apply::list_dir(dir)?
        .into_iter()
        .filter(|n| !wanted.contains(n.to_bytes()))
        .collect())
}

/// Owner, permissions and times of the directories and special files
/// created, deepest entries first (so directory mtimes stick); one line per
/// problem.
fn apply_metadata(
    dirs: &Dirs,
    entries: &[Entry],
    created: &[bool],
    owners: &apply::Owners,
    xattrs: Option<&apply::XattrFailures>,
) -> Vec<String> {
    let mut errors = Vec::new();
    for (pos, e) in entries.iter().enumerate().rev() {
        if !created[pos] {
            continue;
        }
        let result = if e.node.kind == NodeKind::Dir {
            dirs.get(pos, &e.path).and_then(|d| {
                apply::metadata_of_fd(d.as_fd(), &e.node, owners)?;
                if let Some(fails) = xattrs {
                    apply::set_xattrs(d.as_fd(), &e.node, fails);
                }
                Ok(())
            })
        } else {
            parent_of(dirs, entries, e).and_then(|d| {
                let name = name_of(e)?;
                apply::metadata_at(d.as_fd(), &name, &e.node, owners)?;
                if let Some(fails) = xattrs {
                    apply::set_xattrs_at(d.as_fd(), &name, &e.node, fails);
                }
                Ok(())
            })
        };
        if let Err(err) = result {
            errors.push(format!("{}: {err}", e.path.display()));
        }
    }
    errors
}

/// The name of entry `e` for `*at` calls.
fn name_of(e: &Entry) -> io::Result<CString> {
    apply::cname(&e.node.name.0)
}

/// The temporary name entry `e` (a file) is written under.
fn partial_of(e: &Entry) -> io::Result<CString> {
    apply::cname(&apply::partial_name(&e.node.name.0))
}

/// A path inside the snapshot as `/path`, escaped (see `escape_bytes`).
fn shown_rel(rel: &Path) -> String {
    format!(
        "/{}",
        crate::repo::tree::escape_bytes(rel.as_os_str().as_bytes())
    )
}

/// Locks a mutex, ignoring poisoning (the data are plain lists).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// State shared by the workers that fill file contents.
struct Fill<'a> {
    /// Every entry.
    entries: &'a [Entry],
    /// Entry position of each file.
    files: &'a [usize],
    /// Directory descriptors.
    dirs: &'a Dirs,
    /// The target, for messages.
    target: &'a Path,
    /// Per file: not created yet; the worker writing its only blob creates it.
    deferred: Vec<bool>,
    /// Per file created in phase 1: its open descriptor until it is complete.
    open: Vec<Mutex<Option<Arc<File>>>>,
    /// Per file created in phase 1 but not held open: its (device, inode).
    inodes: Vec<(u64, u64)>,
    /// How to apply ownership.
    owners: &'a apply::Owners,
    /// Where extended attributes that fail are counted (None: not restored).
    xattrs: Option<&'a apply::XattrFailures>,
    /// Per file: complete, with its metadata and its own name.
    finished: Vec<AtomicBool>,
    /// Metadata that could not be applied, one line each.
    metadata_errors: Mutex<Vec<String>>,
    /// Per file: blob placements not yet written; 0 means complete.
    remaining: Vec<AtomicU32>,
    /// Plaintext bytes written.
    written: &'a AtomicU64,
    /// Problems, with the files they damaged.
    failures: Mutex<Vec<(String, Vec<u32>)>>,
    /// The first fault of the target file system and the file it hit.
    fault: Mutex<Option<(TargetFault, PathBuf)>>,
    /// Set with `fault`: workers stop taking work.
    stopped: AtomicBool,
    /// Set by a signal handler: workers stop too.
    stop: &'a AtomicBool,
}

/// Largest gap between needed blobs that is read through rather than split
/// into two requests.
const MAX_GAP: u64 = 1 << 20;
/// A read is not extended past this size, read or decompressed: each worker
/// holds one span and its decompressed blobs in memory at a time.
const MAX_SPAN: u64 = 4 << 20;

/// The plaintexts of one span, back to back in one buffer that a worker
/// keeps from span to span (fresh buffers cost a page fault per 4 KiB).
#[derive(Default)]
struct SpanPlain {
    bytes: Vec<u8>,
    /// Where each blob's plaintext is in `bytes`.
    ends: Vec<usize>,
}

impl SpanPlain {
    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// The plaintext of blob `k` of the span.
    fn blob(&self, k: usize) -> &[u8] {
        let start = if k == 0 { 0 } else { self.ends[k - 1] };
        &self.bytes[start..self.ends[k]]
    }
}

fn restore_pack(
    repo: &Repository,
    pack: &Id,
    mut blobs: Vec<(PackEntry, Vec<Target>)>,
    fill: &Fill,
    plain: &mut SpanPlain,
) {
    let name = layout::pack(pack);
    blobs.sort_by_key(|(e, _)| e.offset);
    let mut i = 0;
    while i < blobs.len() && !fill.halted() {
        let start = blobs[i].0.offset as u64;
        let mut end = start + blobs[i].0.stored_len as u64;
        let mut raw = blobs[i].0.raw_len as u64;
        let mut j = i + 1;
        while j < blobs.len()
            && (blobs[j].0.offset as u64) <= end + MAX_GAP
            && end - start < MAX_SPAN
            && raw + blobs[j].0.raw_len as u64 <= MAX_SPAN
        {
            end = end.max(blobs[j].0.offset as u64 + blobs[j].0.stored_len as u64);
            raw += blobs[j].0.raw_len as u64;
            j += 1;
        }
        // Decrypt the whole span before writing anything, so a bad copy on
        // one pool member is rejected and the span is read from the next.
        let group = &blobs[i..j];
        let read = repo.backend().read_range(&name, start..end, &mut |bytes| {
            plain.clear();
            for (entry, _) in group {
                let off = (entry.offset as u64 - start) as usize;
                let sealed = &bytes[off..off + entry.stored_len as usize];
                open_blob_append(
                    repo.key(),
                    entry.kind,
                    &entry.id,
                    entry.compression,
                    entry.raw_len,
                    sealed,
                    &mut plain.bytes,
                )
                .with_context(|| format!("blob {}", entry.id.short()))?;
                plain.ends.push(plain.bytes.len());
            }
            Ok(())
        });
        match read {
            Ok(()) => {
                for (k, (_, targets)) in group.iter().enumerate() {
                    fill.write(plain.blob(k), targets);
                }
            }
            Err(_) => {
                // Find out blob by blob which ones are bad, keeping the good
                // ones. Writing happens outside `accept`: a local write error
                // must not make a pool reject a good copy.
                for (entry, targets) in group {
                    let range = entry.offset as u64..entry.offset as u64 + entry.stored_len as u64;
                    let mut plain = Vec::new();
                    let result = repo.backend().read_range(&name, range, &mut |sealed| {
                        plain = open_blob(
                            repo.key(),
                            entry.kind,
                            &entry.id,
                            entry.compression,
                            entry.raw_len,
                            sealed,
                        )?;
                        Ok(())
                    });
                    match result {
                        Ok(()) => fill.write(&plain, targets),
                        Err(e) => lock(&fill.failures).push((
                            format!(
                                "pack {name}: blob {}: {}",
                                entry.id.short(),
                                crate::error::one_line(&e)
                            ),
                            targets.iter().map(|t| t.file).collect(),
                        )),
                    }
                }
            }
        }
        i = j;
    }
}

/// Granularity at which zero runs are left unwritten (a file system block).
const HOLE_BLOCK: u64 = 4096;

/// The parts of `plain`, placed at file offset `at`, that are not all-zero
/// blocks: files are created at full length, so skipped blocks stay holes.
fn data_runs(plain: &[u8], at: u64) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    let mut pos = 0usize;
    while pos < plain.len() {
        // Blocks are aligned to the file, not to the blob.
        let block_end = ((at + pos as u64) / HOLE_BLOCK + 1) * HOLE_BLOCK - at;
        let end = (block_end as usize).min(plain.len());
        if plain[pos..end].iter().any(|&b| b != 0) {
            match runs.last_mut() {
                Some(r) if r.end == pos => r.end = end,
                _ => runs.push(pos..end),
            }
        }
        pos = end;
    }
    runs
}
impl Fill<'_> {
    /// Whether workers should stop: a fault of the target, or a signal.
    fn halted(&self) -> bool {
        self.stopped.load(Ordering::Relaxed) || self.stop.load(Ordering::Relaxed)
    }

    /// The destination of file `f`, for messages.
    fn shown(&self, f: usize) -> PathBuf {
        self.target.join(&self.entries[self.files[f]].path)
    }

    /// Writes one blob's plaintext to its targets, counting each target
    /// written; a failure is recorded, and a fault of the target file system
    /// also stops every worker.
    fn write(&self, plain: &[u8], targets: &[Target]) {
        // Files are created at full length: an all-zero chunk (a hole of a
        // VM image, often thousands of times over) needs no write at all.
        let zero = plain.iter().all(|&b| b == 0);
        for (k, t) in targets.iter().enumerate() {
            if self.halted() {
                return; // left incomplete, removed at the end
            }
            let f = t.file as usize;
            let result = if self.deferred[f] {
                self.write_new(f, plain).map(Some)
            } else if zero {
                Ok(None)
            } else {
                self.write_at(f, plain, t.offset).map(|()| None)
            };
            match result {
                Ok(file) => {
                    self.written
                        .fetch_add(plain.len() as u64, Ordering::Relaxed);
                    if self.remaining[f].fetch_sub(1, Ordering::AcqRel) == 1 {
                        self.finish(f, file);
                    }
                }
                Err(e) => {
                    if let Some(fault) = TargetFault::of_io(&e) {
                        lock(&self.fault).get_or_insert_with(|| (fault, self.shown(f)));
                        self.stopped.store(true, Ordering::Relaxed);
                    }
                    let msg = format!("writing {}: {e}", self.shown(f).display());
                    let files = targets[k..].iter().map(|t| t.file).collect();
                    lock(&self.failures).push((msg, files));
                    return;
                }
            }
        }
    }

    /// The temporary name of file `f`.
    fn partial(&self, f: usize) -> io::Result<CString> {
        partial_of(&self.entries[self.files[f]])
    }

    /// Opens file `f` (created in phase 1, not held) again by its temporary
    /// name, and checks that it is still the file created then.
    fn reopen(&self, f: usize) -> io::Result<File> {
        let file = apply::reopen_file(self.dir(f)?.as_fd(), &self.partial(f)?)?;
        let m = file.metadata()?;
        if (m.dev(), m.ino()) != self.inodes[f] {
            return Err(io::Error::other("changed while being restored"));
        }
        Ok(file)
    }

    /// The directory file `f` goes in.
    fn dir(&self, f: usize) -> io::Result<apply::DirRef<'_>> {
        parent_of(self.dirs, self.entries, &self.entries[self.files[f]])
    }

    /// Creates file `f` holding `plain` (its only blob), with all-zero
    /// blocks left as holes; returns it open.
    fn write_new(&self, f: usize, plain: &[u8]) -> io::Result<File> {
        let dir = self.dir(f)?;
        let file = apply::create_file(dir.as_fd(), &self.partial(f)?)?;
        let size = self.entries[self.files[f]].node.size;
        let mut end = 0u64;
        for r in data_runs(plain, 0) {
            file.write_all_at(&plain[r.clone()], r.start as u64)?;
            end = r.end as u64;
        }
        if end != size {
            file.set_len(size)?;
        }
        Ok(file)
    }

    /// Writes `plain` at offset `at` of file `f`, skipping all-zero blocks:
    /// files are created at full length, so those stay holes.
    fn write_at(&self, f: usize, plain: &[u8], at: u64) -> io::Result<()> {
        let runs = data_runs(plain, at);
        if runs.is_empty() {
            return Ok(());
        }
        let held = lock(&self.open[f]).clone();
        let file = match held {
            Some(file) => file,
            None => Arc::new(self.reopen(f)?),
        };
        for r in runs {
            file.write_all_at(&plain[r.clone()], at + r.start as u64)?;
        }
        Ok(())
    }

    /// File `f` is complete: applies its metadata through its descriptor and
    /// gives it its own name.
    fn finish(&self, f: usize, file: Option<File>) {
        let node = &self.entries[self.files[f]].node;
        let result = (|| {
            let dir = self.dir(f)?;
            let file = match file {
                Some(file) => Arc::new(file),
                None => match lock(&self.open[f]).take() {
                    Some(file) => file,
                    None => Arc::new(self.reopen(f)?),
                },
            };
            if let Err(e) = apply::metadata_of_fd(file.as_fd(), node, self.owners) {
                lock(&self.metadata_errors).push(format!("{}: {e}", self.shown(f).display()));
            }
            if let Some(fails) = self.xattrs {
                apply::set_xattrs(file.as_fd(), node, fails);
            }
            drop(file);
            let entry = &self.entries[self.files[f]];
            apply::publish(dir.as_fd(), &self.partial(f)?, &name_of(entry)?)
        })();
        match result {
            Ok(()) => self.finished[f].store(true, Ordering::Relaxed),
            Err(e) => lock(&self.failures).push((
                format!("{}: cannot complete: {e}", self.shown(f).display()),
                vec![f as u32],
            )),
        }
    }
}

fn verify_file(
    repo: &Repository,
    index: &Index,
    dir: std::os::fd::BorrowedFd,
    name: &std::ffi::CStr,
    content: &[Id],
) -> Result<()> {
    let f = File::from(apply::openat(
        dir,
        name,
        libc::O_RDONLY | libc::O_NOFOLLOW,
        0,
    )?);
    let mut offset = 0u64;
    let mut buf = Vec::new();
    for id in content {
        let (_, e) = index.get(id).context("blob missing from index")?;
        buf.resize(e.raw_len as usize, 0);
        f.read_exact_at(&mut buf, offset)?;
        if repo.key().id_of(&buf) != *id {
            anyhow::bail!("content differs at offset {offset}");
        }
        offset += e.raw_len as u64;
    }
    if f.metadata()?.len() != offset {
        anyhow::bail!("size differs");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::data_runs;

    #[test]
    fn zero_blocks_are_skipped_at_file_alignment() {
        let mut p = vec![0u8; 3 * 4096];
        p[5000] = 1;
        assert_eq!(data_runs(&p, 0), vec![4096..8192]);
        // Shifted by 100 bytes, block boundaries move with the file.
        assert_eq!(data_runs(&p, 100), vec![3996..8092]);
        assert!(data_runs(&[0u8; 10000], 7).is_empty());
        assert_eq!(data_runs(&[1u8; 10], 0), vec![0..10]);
    }
}
