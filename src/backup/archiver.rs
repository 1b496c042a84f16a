//! Walks the sources and turns them into trees and file contents.
//!
//! Threads: the calling thread walks (lstat, readdir, change detection);
//! file workers read, chunk and hash files and hand new chunks to the
//! [`Saver`]; one finalizer thread assembles directory trees in post-order as
//! their files complete. Channels are bounded, so memory stays flat however
//! large the source is.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use super::compression::CompressionSetting;
use super::excludes::{Excludes, Filters, Verdict};
use super::saver::Saver;
use super::sparse::{self, Extent, RangeReader};
use crate::chunker::Chunker;
use crate::fsmeta::{node_at, node_from, node_of_file, unchanged};
use crate::id::Id;
use crate::repo::blob::BlobType;
use crate::repo::index::Index;
use crate::repo::lock::Lock;
use crate::repo::markers::load_markers;
use crate::repo::snapshot::{BackupMode, Snapshot, SnapshotCompression, SnapshotSummary};
use crate::repo::tree::{Node, NodeKind, RawName, Tree};
use crate::repo::{IndexUse, ObjectKind, OnDamage, Repository};
use anyhow::{Context, Result, bail};
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

/// What to back up.
pub enum Source {
    /// Files and directories, made absolute and recorded as named. A named
    /// path and the directories above it are followed when they are
    /// symlinks (a symlink to a directory is backed up as that directory,
    /// under the name given); symlinks inside the tree stay symlinks.
    Paths(Vec<PathBuf>),
    /// One stream, stored as a file named `name` at the snapshot root.
    Stdin {
        /// File name in the snapshot.
        name: String,
        /// The stream.
        reader: Box<dyn Read + Send>,
    },
}

/// Options of a backup run.
pub struct BackupOptions {
    /// Snapshot time to record (default: now).
    pub time: Option<chrono::DateTime<chrono::Utc>>,
    /// What to back up.
    pub source: Source,
    /// How the parent snapshot is chosen.
    pub mode: BackupMode,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Host name recorded in the snapshot (and used to find the parent).
    pub host: String,
    /// Glob patterns to leave out: a pattern without `/` matches a name at any
    /// depth, one with `/` matches the absolute path.
    pub excludes: Vec<String>,
    /// The other exclude rules (tag files, caches, file systems, sizes).
    pub filters: Filters,
    /// How new blobs are compressed (recorded in the snapshot).
    pub compression: CompressionSetting,
    /// Reader/chunker threads (and as many compress/encrypt threads).
    pub threads: usize,
    /// Concurrent pack uploads.
    pub uploads: usize,
    /// Updated as files are done, for a progress display.
    pub progress: Arc<crate::progress::Counters>,
    /// Count what there is to do first (a second, cheap walk) so progress
    /// can show totals and an ETA.
    pub scan_totals: bool,
    /// Set from another thread to stop the backup early: reading stops,
    /// what was read is packed, uploaded and indexed (the next run re-uses
    /// it), no snapshot is written, and the run fails with
    /// [`Fatal::Interrupted`](crate::error::Fatal::Interrupted).
    pub cancel: Option<Arc<AtomicBool>>,
}

/// The outcome of a backup.
pub struct BackupReport {
    /// Id of the new snapshot.
    pub snapshot_id: Id,
    /// The snapshot as saved.
    pub snapshot: Snapshot,
    /// Source files that could not be read or changed while being read.
    pub warnings: Vec<String>,
}

#[derive(Default)]
struct Counters {
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unmodified: AtomicU64,
    dirs: AtomicU64,
    bytes_read: AtomicU64,
    total_bytes: AtomicU64,
    excluded: AtomicU64,
}

struct BackupRun {
    repo: Arc<Repository>,
    index: Arc<Index>,
    saver: Saver,
    chunker: Chunker,
    /// Size and id of the chunk a long run of zeros yields.
    zero_chunk: OnceLock<(u64, Id)>,
    progress: Arc<crate::progress::Counters>,
    counters: Counters,
    warnings: Mutex<Vec<String>>,
    fatal: Mutex<Option<anyhow::Error>>,
    cancel: Option<Arc<AtomicBool>>,
}

impl BackupRun {
    fn warn(&self, msg: String) {
        self.warnings.lock().expect("warnings").push(msg);
    }
    fn stopped(&self) -> bool {
        self.cancelled() || self.fatal.lock().expect("fatal slot").is_some()
    }

    /// True once the caller asked to stop; records the interruption as the
    /// backup's error the first time.
    fn cancelled(&self) -> bool {
        let stop = self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed));
        if stop {
            self.fatal(crate::error::Fatal::Interrupted.into());
        }
        stop
    }

    fn fatal(&self, e: anyhow::Error) {
        let mut slot = self.fatal.lock().expect("fatal slot");
        if slot.is_none() {
            *slot = Some(e);
        }
    }
}

#[allow(clippy::large_enum_variant)] // one per file, moved once
enum FileOutcome {
    Saved(Node),
    Failed,
}

struct FileJob {
    path: PathBuf,
    /// The user named this path: open it through a final symlink.
    follow: bool,
    node: Node,
    /// Counted as changed (it was in the parent) or new once it is saved.
    in_parent: bool,
    reply: Sender<FileOutcome>,
}

enum Pending {
    Ready(Node),
    File(Receiver<FileOutcome>),
    Dir(Node, Receiver<Option<Id>>),
}

struct DirJob {
    nodes: Vec<Pending>,
    reply: Sender<Option<Id>>,
}

/// Runs a backup and commits its snapshot.
pub fn run_backup(repo: Arc<Repository>, opts: BackupOptions) -> Result<BackupReport> {
    let started = Instant::now();
    let time = opts.time.unwrap_or_else(chrono::Utc::now);
    // The lock goes first; then the deletion markers it has seen; then the
    // index without the packs those markers doom (see docs/PRUNE.md).
    let lock = Lock::acquire(&repo, "backup")?;
    let markers = load_markers(&repo)?;
    lock.set_seen_markers(markers.iter().map(|m| m.id).collect())?;
    let doomed: HashSet<Id> = markers
        .iter()
        .flat_map(|m| m.marker.packs.iter().copied())
        .collect();
    let index = Arc::new(repo.load_index_for(IndexUse::Dedup { without: &doomed })?);
    let threads = opts.threads.max(1);
    let level = opts.compression.level(repo.config().compression_level);
    let saver = Saver::start_with_level(
        repo.clone(),
        index.clone(),
        threads,
        opts.uploads.max(1),
        level,
    );
    let shared = Arc::new(BackupRun {
        repo: repo.clone(),
        index,
        saver,
        chunker: repo.chunker()?,
        zero_chunk: OnceLock::new(),
        progress: opts.progress.clone(),
        counters: Counters::default(),
        warnings: Mutex::default(),
        fatal: Mutex::default(),
        cancel: opts.cancel.clone(),
    });

    let (paths, root, mode, parent) = match opts.source {
        Source::Stdin { name, reader } => {
            // On failure the saver still finishes below, so what was
            // uploaded gets indexed and the next run re-uses it.
            let root = match backup_stdin(&shared, &name, reader) {
                Ok(root) => Some(root),
                Err(e) => {
                    shared.fatal(e);
                    None
                }
            };
            // No parent, everything read: a full backup whatever the mode.
            (vec![format!("/{name}")], root, BackupMode::Full, None)
        }
        Source::Paths(paths) => {
            let paths = normalize_paths(&paths)?;
            let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            let (mode, parent) = choose_parent(&repo, opts.mode, &opts.host, &shown)?;
            // A parent whose trees cannot be read just means reading everything.
            let parent_root = parent
                .as_ref()
                .and_then(|(_, snap)| repo.load_tree(&shared.index, &snap.tree).ok());
            let excludes = Excludes::new(&opts.excludes, &opts.filters)?;
            let scan_done = Arc::new(AtomicBool::new(false));
            let scan = opts.scan_totals.then(|| {
                let (paths, excludes) = (paths.clone(), excludes.clone());
                let (progress, done) = (opts.progress.clone(), scan_done.clone());
                std::thread::spawn(move || {
                    let (mut files, mut bytes) = (0, 0);
                    for p in &paths {
                        if !scan_totals(&done, p, true, &excludes, None, &mut files, &mut bytes) {
                            return;
                        }
                    }
                    progress.set_totals(files, bytes);
                })
            });
            let root = walk_sources(&shared, &paths, parent_root, &excludes, threads)?;
            scan_done.store(true, Ordering::Relaxed);
            if let Some(scan) = scan {
                let _ = scan.join();
            }
            (shown, root, mode, parent.map(|(id, _)| id))
        }
    };

    let shared = match Arc::try_unwrap(shared) {
        Ok(s) => s,
        Err(_) => bail!("internal error: backup workers still running"),
    };
    if let Some(e) = shared.fatal.into_inner().expect("fatal slot") {
        let _ = shared.saver.finish();
        return Err(e);
    }
    let totals = shared
        .saver
        .finish()
        .context("saving data to the repository")?;
    let root = root.context("the backup produced no root tree")?;

    let c = &shared.counters;
    let summary = SnapshotSummary {
        files_new: c.files_new.load(Ordering::Relaxed),
        files_changed: c.files_changed.load(Ordering::Relaxed),
        files_unmodified: c.files_unmodified.load(Ordering::Relaxed),
        dirs: c.dirs.load(Ordering::Relaxed),
        bytes_read: c.bytes_read.load(Ordering::Relaxed),
        total_bytes: c.total_bytes.load(Ordering::Relaxed),
        excluded: c.excluded.load(Ordering::Relaxed),
        data_added: totals.stored_added,
        duration_s: started.elapsed().as_secs_f64(),
        compression: Some(SnapshotCompression {
            setting: opts.compression.to_string(),
            level,
        }),
    };
    let snapshot = Snapshot {
        time,
        tree: root,
        paths,
        hostname: opts.host,
        username: crate::sysinfo::username(),
        tags: opts.tags,
        mode,
        parent,
        summary,
        program_version: format!("strata {}", env!("CARGO_PKG_VERSION")),
        original: None,
    };
    // The commit point: everything the snapshot references is durable now.
    // Heal lagging pool members first: it can take a while, and the lock
    // must still be fresh when the snapshot is written.
    if let Some(pool) = repo.backend().replicated() {
        pool.heal_lagging();
    }
    lock.check_fresh()?;
    let snapshot_id = repo.save_object(ObjectKind::Snapshot, &snapshot.encode())?;
    lock.release();
    let warnings = shared.warnings.into_inner().expect("warnings");
    Ok(BackupReport {
        snapshot_id,
        snapshot,
        warnings,
    })
}

/// Picks the parent snapshot for the mode. A backup that finds no parent
/// reads everything, so it is recorded as `full`: the first backup of a set
/// of paths, and a differential one without any full snapshot to refer to
/// (later differential backups then find it).
fn choose_parent(
    repo: &Repository,
    mode: BackupMode,
    host: &str,
    paths: &[String],
) -> Result<(BackupMode, Option<(Id, Snapshot)>)> {
    if mode == BackupMode::Full {
        return Ok((mode, None));
    }
    let mut sorted = paths.to_vec();
    sorted.sort();
    let same = |s: &Snapshot| {
        let mut p = s.paths.clone();
        p.sort();
        s.hostname == host && p == sorted
    };
    let mut candidates = repo
        .snapshots(OnDamage::Skip)?
        .objects
        .into_iter()
        .filter(|(_, s)| same(s));
    let parent = match mode {
        BackupMode::Differential => candidates.rfind(|(_, s)| s.mode == BackupMode::Full),
        _ => candidates.next_back(),
    };
    match (mode, &parent) {
        (BackupMode::Differential, None) => {
            tracing::info!(
                "no full snapshot of these paths on this host yet; taking a full backup"
            );
            Ok((BackupMode::Full, None))
        }
        (_, None) => Ok((BackupMode::Full, None)),
        _ => Ok((mode, parent)),
    }
}

/// Adds up the regular files under `path` for the progress display's totals
/// (`named`: a path the user gave, followed if it is a symlink; `dir_dev`:
/// the device of the directory it is in); false when the backup finished
/// first.
fn scan_totals(
    done: &AtomicBool,
    path: &Path,
    named: bool,
    excludes: &Excludes,
    dir_dev: Option<u64>,
    files: &mut u64,
    bytes: &mut u64,
) -> bool {
    if done.load(Ordering::Relaxed) {
        return false;
    }
    let meta = match named {
        true => std::fs::metadata(path),
        false => std::fs::symlink_metadata(path),
    };
    let Ok(meta) = meta else {
        return true;
    };
    if !named && excludes.by_meta(path, &meta, dir_dev) != Verdict::Keep {
        return true;
    }
    if meta.is_file() {
        *files += 1;
        *bytes += meta.len();
    } else if meta.is_dir()
        && let Ok(entries) = std::fs::read_dir(path)
    {
        let dev = Some(meta.dev());
        for e in entries.flatten() {
            let child = e.path();
            if !excludes.by_name(&child)
                && !scan_totals(done, &child, false, excludes, dev, files, bytes)
            {
                return false;
            }
        }
    }
    true
}

/// Makes paths absolute and lexically normal, checks they exist, and keeps
/// those the snapshot records (see [`snapshot_paths`]).
fn normalize_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        bail!("nothing to back up: give one or more paths, or --stdin");
    }
    let cwd = std::env::current_dir()?;
    for p in paths {
        std::fs::symlink_metadata(absolute(&cwd, p))
            .with_context(|| format!("cannot back up {}", p.display()))?;
    }
    Ok(snapshot_paths(&cwd, paths))
}

/// The paths a snapshot of `paths` records: made absolute from `cwd` and
/// lexically normal (`..` removes the name before it, as the user wrote it,
/// not the target of a symlink), sorted, without duplicates, and without any
/// path inside another given path unless a symlink lies between the two
/// (then the inner path is what makes the walk follow that symlink).
/// Symlinks stay in the names: the snapshot records the names the user gave.
pub fn snapshot_paths(cwd: &Path, paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = paths.iter().map(|p| absolute(cwd, p)).collect();
    out.sort();
    out.dedup();
    let all = out.clone();
    out.retain(|p| {
        !all.iter()
            .any(|q| q != p && p.starts_with(q) && !symlink_between(q, p))
    });
    out
}

/// `cwd.join(p)`, lexically normal.
fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    let mut abs = PathBuf::from("/");
    for comp in cwd.join(p).components() {
        match comp {
            Component::ParentDir => {
                abs.pop();
            }
            Component::Normal(n) => abs.push(n),
            _ => {}
        }
    }
    abs
}

/// True when a name below `outer` down to `inner` (itself included) is a
/// symlink: walking `outer` would store it as a link, not what `inner` names.
fn symlink_between(outer: &Path, inner: &Path) -> bool {
    let mut at = outer.to_path_buf();
    let Ok(rest) = inner.strip_prefix(outer) else {
        return false;
    };
    rest.iter().any(|name| {
        at.push(name);
        std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink())
    })
}

/// The directories above the given paths, down to the paths themselves.
#[derive(Default)]
struct VirtualDir {
    children: BTreeMap<Vec<u8>, VirtualEntry>,
}

/// A name on the way to, or at, a path the user gave.
#[derive(Default)]
struct VirtualEntry {
    /// The user named this path: everything below it is backed up.
    named: bool,
    /// Named paths below it (below a named one: those reached through a
    /// symlink, which the walk follows for them).
    below: VirtualDir,
}

fn walk_sources(
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

struct Walker {
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

/// Opens a source file; a final symlink is refused unless `follow`.
fn open_source(path: &Path, follow: bool) -> std::io::Result<File> {
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    let open = |flags| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path)
    };
    // O_NOATIME keeps backups from touching access times; it needs ownership.
    open(nofollow | libc::O_NOATIME).or_else(|e| {
        if e.raw_os_error() == Some(libc::EPERM) {
            open(nofollow)
        } else {
            Err(e)
        }
    })
}

fn same_version(a: &Metadata, b: &Metadata) -> bool {
    a.len() == b.len()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && a.ctime() == b.ctime()
        && a.ctime_nsec() == b.ctime_nsec()
}

fn read_file(shared: &BackupRun, path: &Path, follow: bool, walked: Node) -> FileOutcome {
    let fail = |msg: String| {
        shared.warn(msg);
        FileOutcome::Failed
    };
    if shared.stopped() {
        return FileOutcome::Failed;
    }
    let file = match open_source(path, follow) {
        Ok(f) => f,
        Err(e) => return fail(format!("{}: cannot read: {e}", path.display())),
    };
    let before = match file.metadata() {
        Ok(m) if m.is_file() => m,
        Ok(_) => return fail(format!("{}: no longer a regular file", path.display())),
        Err(e) => return fail(format!("{}: {e}", path.display())),
    };
    let mut node = node_of_file(&file, OsStr::from_bytes(&walked.name.0), &before);
    let size = before.len();
    let (mut read, mut holes) = (0u64, 0u64);
    let outcome = match sparse::extents(&file, &before, size) {
        Some(extents) => extents.into_iter().try_for_each(|e| match e {
            Extent::Data { offset, len } => chunk_into(
                shared,
                RangeReader::new(&file, offset, len),
                len,
                &mut node.content,
                &mut read,
            ),
            Extent::Hole { len } => {
                holes += len;
                zero_chunks(shared, len, &mut node.content)
            }
        }),
        None => chunk_into(shared, &file, size, &mut node.content, &mut read),
    };
    match outcome {
        Ok(()) => {}
        Err(ReadFailure::Fatal) => return FileOutcome::Failed,
        Err(ReadFailure::Io(e)) => {
            return fail(format!(
                "{}: read error after {read} bytes: {e}",
                path.display()
            ));
        }
    }
    let logical = read + holes;
    match file.metadata() {
        Ok(after) if same_version(&before, &after) => {}
        _ => shared.warn(format!(
            "{}: changed while being read; saved as read",
            path.display()
        )),
    }
    node.size = logical;
    shared.progress.files.fetch_add(1, Ordering::Relaxed);
    shared
        .counters
        .bytes_read
        .fetch_add(read, Ordering::Relaxed);
    shared
        .counters
        .total_bytes
        .fetch_add(logical, Ordering::Relaxed);
    FileOutcome::Saved(node)
}

enum ReadFailure {
    /// The source could not be read; the file is skipped with a warning.
    Io(std::io::Error),
    /// Saving failed; the whole backup stops (the error is in `BackupRun`).
    Fatal,
}

/// Chunks `reader` and queues its new chunks; appends their ids to `content`
/// and adds the bytes read to `read`.
fn chunk_into<R: Read>(
    shared: &BackupRun,
    reader: R,
    size_hint: u64,
    content: &mut Vec<Id>,
    read: &mut u64,
) -> Result<(), ReadFailure> {
    let mut stream = shared.chunker.stream_sized(reader, size_hint);
    while let Some(chunk) = stream.next_chunk().map_err(ReadFailure::Io)? {
        if shared.cancelled() {
            return Err(ReadFailure::Fatal);
        }
        let id = shared.repo.key().id_of(chunk);
        queue_if_new(shared, id, || {
            let mut copy = shared.saver.chunk_buffer(chunk.len());
            copy.extend_from_slice(chunk);
            copy
        })?;
        *read += chunk.len() as u64;
        shared
            .progress
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        content.push(id);
    }
    Ok(())
}

/// Stands for a hole of `len` bytes with zero chunks, without reading it.
/// The chunks have the size the chunker gives a long run of zeros, so holes
/// and zeros written out in full dedup to the same chunk.
fn zero_chunks(shared: &BackupRun, len: u64, content: &mut Vec<Id>) -> Result<(), ReadFailure> {
    shared.progress.bytes.fetch_add(len, Ordering::Relaxed);
    let (size, id) = *shared.zero_chunk.get_or_init(|| {
        let zeros = vec![0u8; shared.chunker.params().max_size as usize];
        let n = shared.chunker.cut(&zeros);
        (n as u64, shared.repo.key().id_of(&zeros[..n]))
    });
    let full = len / size;
    let rest = (len % size) as usize;
    if full > 0 {
        queue_if_new(shared, id, || vec![0; size as usize])?;
        content.extend(std::iter::repeat_n(id, full as usize));
    }
    if rest > 0 {
        let zeros = vec![0u8; rest];
        let id = shared.repo.key().id_of(&zeros);
        queue_if_new(shared, id, || zeros)?;
        content.push(id);
    }
    Ok(())
}

fn queue_if_new(
    shared: &BackupRun,
    id: Id,
    data: impl FnOnce() -> Vec<u8>,
) -> Result<(), ReadFailure> {
    if shared.saver.claim(&id)
        && let Err(e) = shared.saver.save(BlobType::Data, id, data())
    {
        shared.fatal(e);
        return Err(ReadFailure::Fatal);
    }
    Ok(())
}

fn finalize_dirs(shared: &BackupRun, rx: Receiver<DirJob>) {
    for job in rx {
        let mut tree = Tree {
            nodes: Vec::with_capacity(job.nodes.len()),
        };
        let mut ok = true;
        for p in job.nodes {
            match p {
                Pending::Ready(n) => tree.nodes.push(n),
                Pending::File(rx) => {
                    if let Ok(FileOutcome::Saved(n)) = rx.recv() {
                        tree.nodes.push(n);
                    }
                }
                Pending::Dir(mut n, rx) => match rx.recv() {
                    Ok(Some(id)) => {
                        n.subtree = Some(id);
                        tree.nodes.push(n);
                    }
                    _ => ok = false,
                },
            }
        }
        let id = if ok { save_tree(shared, &tree) } else { None };
        let _ = job.reply.send(id);
    }
}

fn save_tree(shared: &BackupRun, tree: &Tree) -> Option<Id> {
    match shared.saver.save_if_new(BlobType::Tree, &tree.encode()) {
        Ok((id, _)) => Some(id),
        Err(e) => {
            shared.fatal(e);
            None
        }
    }
}

fn backup_stdin(shared: &BackupRun, name: &str, reader: Box<dyn Read + Send>) -> Result<Id> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        bail!("--stdin-name must be a plain file name, got {name:?}");
    }
    let mut content = Vec::new();
    let mut size = 0u64;
    match chunk_into(shared, reader, u64::MAX, &mut content, &mut size) {
        Ok(()) => {}
        Err(ReadFailure::Io(e)) => {
            return Err(anyhow::Error::new(e).context("reading standard input"));
        }
        Err(ReadFailure::Fatal) => {
            return Err(shared
                .fatal
                .lock()
                .expect("fatal slot")
                .take()
                .unwrap_or_else(|| anyhow::anyhow!("saving standard input failed")));
        }
    }
    let now = chrono::Utc::now();
    // SAFETY: getuid/getgid/umask-free calls with no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let node = Node {
        name: RawName(name.as_bytes().to_vec()),
        kind: NodeKind::File,
        mode: 0o600,
        uid,
        gid,
        mtime: now.timestamp(),
        mtime_ns: now.timestamp_subsec_nanos(),
        ctime: now.timestamp(),
        ctime_ns: now.timestamp_subsec_nanos(),
        inode: 0,
        device: 0,
        links: 1,
        size,
        content,
        subtree: None,
        target: None,
        rdev: None,
        xattrs: Vec::new(),
    };
    let c = &shared.counters;
    c.files_new.fetch_add(1, Ordering::Relaxed);
    c.bytes_read.fetch_add(size, Ordering::Relaxed);
    c.total_bytes.fetch_add(size, Ordering::Relaxed);
    c.dirs.fetch_add(1, Ordering::Relaxed);
    save_tree(shared, &Tree { nodes: vec![node] }).context("saving the snapshot tree")
}
