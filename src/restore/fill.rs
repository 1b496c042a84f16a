//! Filling file contents: workers take one pack each, read its needed
//! blobs with as few ranged reads as the read policy allows (through the
//! one pack reader, every blob verified before anything is written), and
//! write each plaintext at its offsets; the worker that completes a file
//! applies its metadata and gives it its own name.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crossbeam_channel::unbounded;

use super::apply::{self, Dirs};
use super::packs::{PackJob, ReadPolicy, Target, spans};
use super::plan::Entry;
use super::target::TargetFault;
use super::{lock, name_of, parent_of, partial_of};
use crate::repo::Repository;
use crate::repo::index::Index;
use crate::repo::layout;
use crate::repo::pack::PackEntry;
use crate::repo::pack_read::{PackReader, Plaintexts, span_of};

/// State shared by the workers that fill file contents.
pub(super) struct Fill<'a> {
    /// Every entry.
    pub entries: &'a [Entry],
    /// Entry position of each file.
    pub files: &'a [usize],
    /// Directory descriptors.
    pub dirs: &'a Dirs,
    /// The target, for messages.
    pub target: &'a Path,
    /// Per file: not created yet; the worker writing its only blob creates it.
    pub deferred: Vec<bool>,
    /// Per file created in phase 1: its open descriptor until it is complete.
    pub open: Vec<Mutex<Option<Arc<File>>>>,
    /// Per file created in phase 1 but not held open: its (device, inode).
    pub inodes: Vec<(u64, u64)>,
    /// How to apply ownership.
    pub owners: &'a apply::Owners,
    /// Where extended attributes that fail are counted (None: not restored).
    pub xattrs: Option<&'a apply::XattrFailures>,
    /// Per file: complete, with its metadata and its own name.
    pub finished: Vec<AtomicBool>,
    /// Metadata that could not be applied, one line each.
    pub metadata_errors: Mutex<Vec<String>>,
    /// Per file: blob placements not yet written; 0 means complete.
    pub remaining: Vec<AtomicU32>,
    /// Plaintext bytes written.
    pub written: &'a AtomicU64,
    /// Problems, with the files they damaged.
    pub failures: Mutex<Vec<(String, Vec<u32>)>>,
    /// The first fault of the target file system and the file it hit.
    pub fault: Mutex<Option<(TargetFault, PathBuf)>>,
    /// Set with `fault`: workers stop taking work.
    pub stopped: AtomicBool,
    /// Set by a signal handler: workers stop too.
    pub stop: &'a AtomicBool,
    /// Every location of every blob, for reading a bad blob elsewhere.
    pub index: &'a Index,
}

/// Fills every job with `policy.workers` workers; the read buffers of the
/// spans in flight are bounded by a budget of bytes.
pub(super) fn run(repo: &Repository, jobs: Vec<PackJob>, policy: ReadPolicy, fill: &Fill) {
    let (tx, rx) = unbounded();
    for job in jobs {
        tx.send(job).expect("queue");
    }
    drop(tx);
    let budget = Budget::new(READ_BUDGET);
    std::thread::scope(|s| {
        for _ in 0..policy.workers.max(1) {
            let rx = rx.clone();
            let budget = &budget;
            s.spawn(move || {
                let mut plain = Plaintexts::default();
                for job in rx {
                    if fill.halted() {
                        break;
                    }
                    restore_pack(repo, &job, policy, budget, fill, &mut plain);
                }
            });
        }
    });
}

/// Bytes of spans being read at once, over all workers (a read larger
/// than the budget waits until nothing else is in flight).
const READ_BUDGET: u64 = 96 << 20;

/// A counting semaphore over bytes.
struct Budget {
    left: Mutex<u64>,
    freed: Condvar,
    total: u64,
}

impl Budget {
    fn new(total: u64) -> Budget {
        Budget {
            left: Mutex::new(total),
            freed: Condvar::new(),
            total,
        }
    }

    /// Waits for `n` bytes (all of them when `n` exceeds the total).
    fn take(&self, n: u64) -> u64 {
        let n = n.min(self.total);
        let mut left = lock(&self.left);
        while *left < n {
            left = self.freed.wait(left).unwrap_or_else(|p| p.into_inner());
        }
        *left -= n;
        n
    }

    fn give(&self, n: u64) {
        *lock(&self.left) += n;
        self.freed.notify_all();
    }
}

/// Reads one pack's needed blobs span by span and writes them out.
fn restore_pack(
    repo: &Repository,
    job: &PackJob,
    policy: ReadPolicy,
    budget: &Budget,
    fill: &Fill,
    plain: &mut Plaintexts,
) {
    let reader = repo.pack_reader();
    for run in spans(&job.blobs, policy.max_gap, policy.max_span) {
        if fill.halted() {
            return;
        }
        let blobs = &job.blobs[run.clone()];
        let targets = &job.targets[run];
        let span = span_of(blobs);
        let held = budget.take(span.end - span.start);
        let (done, result) =
            reader.read_span(&job.pack, blobs, policy.flush_at, plain, &mut |first, p| {
                for k in 0..p.len() {
                    fill.write(p.blob(k), &targets[first + k]);
                }
            });
        budget.give(held);
        if result.is_err() {
            // Find out blob by blob which ones are bad, keeping the good
            // ones, each from any pack the index has it in.
            for (entry, targets) in blobs.iter().zip(targets).skip(done) {
                if fill.halted() {
                    return;
                }
                match read_anywhere(&reader, fill.index, &job.pack, entry) {
                    Ok(plain) => fill.write(&plain, targets),
                    Err(e) => lock(&fill.failures).push((
                        format!(
                            "pack {}: blob {}: {}",
                            layout::pack(&job.pack),
                            entry.id.short(),
                            crate::error::one_line(&e)
                        ),
                        targets.iter().map(|t| t.file).collect(),
                    )),
                }
            }
        }
    }
}

/// One blob from pack `pack`, or else from another pack the index has it
/// in; the first error when none serves it.
fn read_anywhere(
    reader: &PackReader,
    index: &Index,
    pack: &crate::id::Id,
    entry: &PackEntry,
) -> anyhow::Result<Vec<u8>> {
    let first = match reader.read_blob(pack, entry) {
        Ok(plain) => return Ok(plain),
        Err(e) => e,
    };
    for (other, e) in index.locations(&entry.id) {
        if other == *pack || e.kind != entry.kind {
            continue;
        }
        if let Ok(plain) = reader.read_blob(&other, &e) {
            return Ok(plain);
        }
    }
    Err(first)
}

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
    pub fn halted(&self) -> bool {
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
