//! Restores: plan the entries, create them, fill file contents pack by pack
//! with positioned writes, then apply metadata deepest-first.

mod apply;
mod plan;
mod target;

use std::collections::{BTreeSet, HashMap};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use crossbeam_channel::unbounded;

pub use plan::{Entry, walk_snapshot};

use crate::id::Id;
use crate::repo::Repository;
use crate::repo::blob::{open_blob, open_blob_append};
use crate::repo::index::Index;
use crate::repo::layout;
use crate::repo::pack::PackEntry;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::NodeKind;
use target::TargetFault;

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
    pub progress: std::sync::Arc<crate::progress::Counters>,
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
}

/// Where one blob's plaintext goes.
#[derive(Clone, Copy)]
struct Target {
    file: u32,
    offset: u64,
}

/// Restores a snapshot into `opts.target`.
///
/// The target is created if missing and probed for writability first. If the
/// target file system fails a write with "no space left", "quota exceeded"
/// or "read-only", the restore stops at once: every file not completely
/// written (and its hard links) is removed, the complete ones get their
/// metadata, and the error names the file, the cause and how many files were
/// restored. Running restore again into the same target completes it.
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
    let mut report = RestoreReport::default();

    // Phase 1: create every entry; collect where each blob goes.
    let mut files: Vec<usize> = Vec::new(); // entry positions of regular files to fill
    // Per file: created by the worker that writes its only blob, instead of
    // here (one open, one write, metadata through the open file).
    let mut deferred: Vec<bool> = Vec::new();
    let mut placements: Vec<AtomicU32> = Vec::new(); // per file, blob placements
    let mut links: Vec<(usize, u32)> = Vec::new(); // (entry position, file linked to)
    let mut by_pack: HashMap<Id, Vec<(PackEntry, Vec<Target>)>> = HashMap::new();
    let mut blob_slot: HashMap<Id, (Id, usize)> = HashMap::new();
    let mut first_link: HashMap<(u64, u64), u32> = HashMap::new();
    let mut missing: Vec<(usize, Id)> = Vec::new();
    let mut created = vec![false; entries.len()];
    let mut fault: Option<(TargetFault, PathBuf)> = None;
    for (pos, e) in entries.iter().enumerate() {
        let node = &e.node;
        if node.kind == NodeKind::Socket {
            report
                .skipped_sockets
                .push(format!("/{}", e.path.display()));
            continue;
        }
        let dest = opts.target.join(&e.path);
        let linked_to = (node.kind == NodeKind::File && node.links > 1)
            .then(|| first_link.get(&(node.device, node.inode)).copied())
            .flatten();
        let defer = linked_to.is_none()
            && node.kind == NodeKind::File
            && node.links <= 1
            && node.content.len() == 1
            && index.get(&node.content[0]).is_some();
        let made = match linked_to {
            Some(file_no) => apply::hard_link(
                &opts.target.join(&entries[files[file_no as usize]].path),
                &dest,
            ),
            None if defer => Ok(()),
            None => apply::create(&dest, node),
        };
        if let Err(err) = made {
            if let Some(f) = TargetFault::of(&err) {
                fault = Some((f, dest));
                break;
            }
            report.errors.push(format!("{}: {err:#}", dest.display()));
            continue;
        }
        created[pos] = !defer;
        if let Some(file_no) = linked_to {
            links.push((pos, file_no));
            continue;
        }
        match node.kind {
            NodeKind::Dir => report.dirs_restored += 1,
            NodeKind::File => {
                let file_no = files.len() as u32;
                files.push(pos);
                deferred.push(defer);
                if node.links > 1 {
                    first_link.insert((node.device, node.inode), file_no);
                }
                let mut offset = 0u64;
                let mut count = 0u32;
                for id in &node.content {
                    let Some((pack, entry)) = index.get(id) else {
                        // Its length is unknown, so nothing after it has a
                        // known offset: the file stops here, reported damaged.
                        missing.push((pos, *id));
                        break;
                    };
                    let target = Target {
                        file: file_no,
                        offset,
                    };
                    offset += entry.raw_len as u64;
                    count += 1;
                    match blob_slot.get(id) {
                        Some((p, i)) => by_pack.get_mut(p).expect("pack listed")[*i].1.push(target),
                        None => {
                            let list = by_pack.entry(pack).or_default();
                            blob_slot.insert(*id, (pack, list.len()));
                            list.push((entry, vec![target]));
                        }
                    }
                }
                placements.push(AtomicU32::new(count));
            }
            _ => report.others_restored += 1,
        }
    }
    let mut damaged: BTreeSet<usize> = BTreeSet::new();
    for (pos, id) in missing {
        report.errors.push(format!(
            "{}: blob {} is missing from the index",
            entries[pos].path.display(),
            id.short()
        ));
        damaged.insert(pos);
    }

    // Phase 2: fill contents, one pack at a time per worker; a file's
    // metadata is applied by the worker that completes it.
    let file_paths: Vec<PathBuf> = files
        .iter()
        .map(|&p| opts.target.join(&entries[p].path))
        .collect();
    opts.progress.set_totals(
        files.len() as u64,
        files.iter().map(|&p| entries[p].node.size).sum(),
    );
    let fill = Fill {
        paths: &file_paths,
        nodes: files.iter().map(|&p| &entries[p].node).collect(),
        deferred,
        owners: &owners,
        finished: (0..files.len()).map(|_| AtomicBool::new(false)).collect(),
        metadata_errors: Mutex::default(),
        remaining: placements,
        written: &opts.progress.bytes,
        failures: Mutex::default(),
        stopped: AtomicBool::new(fault.is_some()),
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
                        if fill.stopped.load(Ordering::Relaxed) {
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
    // Files that got their metadata from a worker, by entry position.
    let mut finished = vec![false; entries.len()];
    for (f, &pos) in files.iter().enumerate() {
        finished[pos] = fill.finished[f].load(Ordering::Relaxed);
    }
    report.bytes_restored = fill.written.load(Ordering::Relaxed);
    opts.progress
        .files
        .store(files.len() as u64, Ordering::Relaxed);
    let complete: Vec<bool> = (0..files.len())
        .map(|f| fill.remaining[f].load(Ordering::Relaxed) == 0 && !damaged.contains(&files[f]))
        .collect();
    report.files_restored = complete.iter().filter(|&&c| c).count() as u64
        + links.iter().filter(|(_, f)| complete[*f as usize]).count() as u64;

    let fault = lock(&fill.fault).take();
    if let Some((fault, path)) = fault {
        // Remove what is not complete, so nothing half-written looks restored.
        let mut left = 0usize;
        let incomplete = files
            .iter()
            .enumerate()
            .filter(|(f, _)| !complete[*f])
            .map(|(_, &pos)| pos)
            .chain(
                links
                    .iter()
                    .filter(|(_, f)| !complete[*f as usize])
                    .map(|(pos, _)| *pos),
            );
        for pos in incomplete {
            created[pos] = false;
            match std::fs::remove_file(opts.target.join(&entries[pos].path)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => left += 1,
                _ => {}
            }
        }
        // Complete entries get their metadata, best effort: the fault is the story.
        for (pos, e) in entries.iter().enumerate().rev() {
            if created[pos] && !finished[pos] {
                let _ = apply::metadata(&opts.target.join(&e.path), &e.node, &owners);
            }
        }
        let total = entries
            .iter()
            .filter(|e| e.node.kind == NodeKind::File)
            .count();
        let removed = match left {
            0 => "incomplete files removed".to_string(),
            n => format!("{n} incomplete file(s) could not be removed"),
        };
        bail!(
            "{} writing {}: {} of {total} files restored, {removed}; {}",
            fault.cause(),
            path.display(),
            report.files_restored,
            fault.advice()
        );
    }

    // Phase 3: metadata of the rest, deepest entries first so directory
    // mtimes stick.
    for (pos, e) in entries.iter().enumerate().rev() {
        if created[pos]
            && !finished[pos]
            && let Err(err) = apply::metadata(&opts.target.join(&e.path), &e.node, &owners)
        {
            report.errors.push(format!("{}: {err:#}", e.path.display()));
        }
    }
    report.damaged_files = damaged
        .iter()
        .map(|&p| format!("/{}", entries[p].path.display()))
        .collect();

    if opts.verify {
        for (file_no, &pos) in files.iter().enumerate() {
            if damaged.contains(&pos) {
                continue;
            }
            match verify_file(
                repo,
                &index,
                &file_paths[file_no],
                &entries[pos].node.content,
            ) {
                Ok(()) => report.verified_files += 1,
                Err(err) => {
                    report.errors.push(format!(
                        "{}: verification failed: {err:#}",
                        file_paths[file_no].display()
                    ));
                    report
                        .damaged_files
                        .push(format!("/{}", entries[pos].path.display()));
                }
            }
        }
    }
    report.duration_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Locks a mutex, ignoring poisoning (the data are plain lists).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// State shared by the workers that fill file contents.
struct Fill<'a> {
    /// Destination path of each file.
    paths: &'a [PathBuf],
    /// Each file's node.
    nodes: Vec<&'a crate::repo::tree::Node>,
    /// Per file: not created yet; the worker writing its only blob creates it.
    deferred: Vec<bool>,
    /// How to apply ownership.
    owners: &'a apply::Owners,
    /// Per file: complete, and its metadata applied by a worker.
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
    while i < blobs.len() && !fill.stopped.load(Ordering::Relaxed) {
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
    /// Writes one blob's plaintext to its targets, counting each target
    /// written; a failure is recorded, and a fault of the target file system
    /// also stops every worker.
    fn write(&self, plain: &[u8], targets: &[Target]) {
        // Files are created at full length: an all-zero chunk (a hole of a
        // VM image, often thousands of times over) needs no write at all.
        let zero = plain.iter().all(|&b| b == 0);
        for (k, t) in targets.iter().enumerate() {
            if self.stopped.load(Ordering::Relaxed) {
                return; // left incomplete, removed at the end
            }
            let f = t.file as usize;
            let path = &self.paths[f];
            let result = if self.deferred[f] {
                write_new(plain, self.nodes[f].size, path).map(Some)
            } else if zero {
                Ok(None)
            } else {
                write_at(plain, t.offset, path).map(|()| None)
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
                    if let Some(f) = TargetFault::of_io(&e) {
                        lock(&self.fault).get_or_insert_with(|| (f, path.clone()));
                        self.stopped.store(true, Ordering::Relaxed);
                    }
                    let msg = format!("writing {}: {e}", path.display());
                    let files = targets[k..].iter().map(|t| t.file).collect();
                    lock(&self.failures).push((msg, files));
                    return;
                }
            }
        }
    }
}

impl Fill<'_> {
    /// Applies the metadata of file `f`, complete now (through `file` when
    /// the worker holds it open).
    fn finish(&self, f: usize, file: Option<std::fs::File>) {
        let node = self.nodes[f];
        let path = &self.paths[f];
        let result = match &file {
            Some(file) => apply::metadata_of_file(file, node, self.owners),
            None => apply::metadata(path, node, self.owners),
        };
        if let Err(err) = result {
            lock(&self.metadata_errors).push(format!("{}: {err:#}", path.display()));
        }
        self.finished[f].store(true, Ordering::Relaxed);
    }
}

/// Creates the file at `path` holding `plain` (its only blob), `size` bytes
/// long, with all-zero blocks left as holes; returns it open.
fn write_new(plain: &[u8], size: u64, path: &Path) -> std::io::Result<std::fs::File> {
    let f = apply::open_new(path)?;
    let mut end = 0u64;
    for r in data_runs(plain, 0) {
        f.write_all_at(&plain[r.clone()], r.start as u64)?;
        end = r.end as u64;
    }
    if end != size {
        f.set_len(size)?;
    }
    Ok(f)
}

/// Writes `plain` at offset `at` of the file at `path`, skipping all-zero
/// blocks: files are created at full length, so those stay holes.
fn write_at(plain: &[u8], at: u64, path: &Path) -> std::io::Result<()> {
    let runs = data_runs(plain, at);
    if runs.is_empty() {
        return Ok(());
    }
    let f = OpenOptions::new().write(true).open(path)?;
    for r in runs {
        f.write_all_at(&plain[r.clone()], at + r.start as u64)?;
    }
    Ok(())
}

fn verify_file(repo: &Repository, index: &Index, path: &Path, content: &[Id]) -> Result<()> {
    let f = std::fs::File::open(path)?;
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
