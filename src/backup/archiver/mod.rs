//! Walks the sources and turns them into trees and file contents.
//!
//! Threads: the calling thread walks (lstat, readdir, change detection);
//! file workers read, chunk and hash files and hand new chunks to the
//! [`Saver`]; one finalizer thread assembles directory trees in post-order as
//! their files complete. Channels are bounded, so memory stays flat however
//! large the source is.

mod parent;
mod paths;
mod reader;
mod trees;
mod walker;

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use super::compression::CompressionSetting;
use super::excludes::{Excludes, Filters};
use super::saver::Saver;
use crate::chunker::Chunker;
use crate::id::Id;
use crate::repo::index::Index;

use crate::repo::markers::lock_and_load_dedup_index;
use crate::repo::snapshot::{BackupMode, Snapshot, SnapshotCompression, SnapshotSummary};
use crate::repo::tree::Node;
use crate::repo::{ObjectKind, Repository};
use anyhow::{Context, Result, bail};
use crossbeam_channel::{Receiver, Sender};

use parent::{choose_parent, scan_totals};
use paths::normalize_paths;
pub use paths::snapshot_paths;
use reader::backup_stdin;
use walker::walk_sources;

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
    let paths = match &opts.source {
        Source::Paths(paths) => Some(normalize_paths(paths)?),
        Source::Stdin { .. } => None,
    };
    let shown: Vec<String> = paths
        .iter()
        .flatten()
        .map(|p| p.display().to_string())
        .collect();
    // The parent is chosen (and, on a cold open, tree packs fetched) while
    // the lock, markers and index load, one round trip after another on
    // object storage: it needs no lock (its files are re-used only when the
    // index, loaded under the lock, still holds all their chunks).
    let choose = || choose_parent(&repo, opts.mode, &opts.host, &shown);
    let (locked, parent) = if crate::entropy::in_simulation() {
        // One thing after another, so a seed replays the same requests in
        // the same order.
        let locked = lock_and_load_dedup_index(&repo);
        let parent = paths.as_ref().map(|_| choose()).transpose();
        (locked, parent)
    } else {
        std::thread::scope(|s| {
            s.spawn(|| repo.prefetch_trees_early());
            let parent = paths.is_some().then(|| s.spawn(choose));
            let locked = lock_and_load_dedup_index(&repo);
            let parent = match parent {
                Some(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("choosing the parent panicked")))
                    .map(Some),
                None => Ok(None),
            };
            (locked, parent)
        })
    };
    let (lock, index) = locked?;
    let parent = parent?;
    let index = Arc::new(index);
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
        Source::Paths(_) => {
            let paths = paths.unwrap_or_default();
            let (mode, parent) = parent.context("internal error: no parent chosen")?;
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
        duration_s: match crate::entropy::in_simulation() {
            false => started.elapsed().as_secs_f64(),
            true => 0.0,
        },
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
