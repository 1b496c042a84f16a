//! Restores: plan the entries, create them, fill file contents pack by pack
//! with positioned writes, then apply metadata deepest-first.
//!
//! Everything on disk is reached through directory descriptors and never
//! through a symlink (see `apply`); a regular file is written under a
//! temporary name and gets its own name only when complete.

mod apply;
mod entries;
mod fill;
mod packs;
mod plan;
mod preview;
mod target;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};

pub use apply::PARTIAL_SUFFIX;
pub use plan::{Entry, walk_snapshot};
pub use preview::{Change, Preview, preview};

use crate::error::Fatal;
use crate::id::Id;
use crate::repo::Repository;
use crate::repo::index::Index;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind};
use apply::{Dirs, ROOT};
use fill::Fill;
use packs::ReadPolicy;

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
    restore_with_index(repo, snapshot, repo.load_index()?, opts)
}

/// [`restore`] with the index already loaded (the command loads it while it
/// finds the snapshot).
pub fn restore_with_index(
    repo: &Repository,
    snapshot: &Snapshot,
    index: Index,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let started = Instant::now();
    target::prepare(&opts.target)?;
    let owners = apply::Owners::for_target(&opts.target);
    let entries = walk_snapshot(repo, &index, &snapshot.tree, &opts.includes)?;
    check_stop(opts)?;
    let mut report = RestoreReport::default();
    let mut dirs = Dirs::open(&opts.target, entries.len())
        .with_context(|| format!("cannot open the restore target {}", opts.target.display()))?;
    let shown = |pos: usize| opts.target.join(&entries[pos].path);

    // Create directories and special files, decide what each file needs,
    // and plan where each blob goes.
    let xattr_fails = apply::XattrFailures::default();
    let xattrs = opts.xattrs.then_some(&xattr_fails);
    let created = entries::create(
        &entries,
        &index,
        &mut dirs,
        &owners,
        opts,
        xattrs,
        &mut report,
    );
    let entries::Created {
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
    } = created;

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
        index: &index,
    };
    if !fill.stopped.load(Ordering::Relaxed) {
        let policy = match repo.backend().can_spool() {
            true => ReadPolicy::local(opts.threads),
            false => ReadPolicy::remote(opts.threads),
        };
        fill::run(repo, plan.into_jobs(), policy, &fill);
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
