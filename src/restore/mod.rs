//! Restores: plan the entries, create them, fill file contents pack by pack
//! with positioned writes, then apply metadata deepest-first.

mod apply;
mod plan;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use crossbeam_channel::unbounded;

pub use plan::{Entry, walk_snapshot};

use crate::id::Id;
use crate::repo::Repository;
use crate::repo::blob::open_blob;
use crate::repo::index::Index;
use crate::repo::layout;
use crate::repo::pack::PackEntry;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::NodeKind;

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
}

/// Where one blob's plaintext goes.
#[derive(Clone, Copy)]
struct Target {
    file: u32,
    offset: u64,
}

/// Restores a snapshot into `opts.target`.
pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let index = repo.load_index()?;
    let entries = walk_snapshot(repo, &index, &snapshot.tree, &opts.includes)?;
    std::fs::create_dir_all(&opts.target)
        .with_context(|| format!("cannot create restore target {}", opts.target.display()))?;
    let mut report = RestoreReport::default();

    // Phase 1: create every entry; collect where each blob goes.
    let mut files: Vec<usize> = Vec::new(); // entry positions of regular files to fill
    let mut by_pack: HashMap<Id, Vec<(PackEntry, Vec<Target>)>> = HashMap::new();
    let mut blob_slot: HashMap<Id, (Id, usize)> = HashMap::new();
    let mut first_link: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut missing: Vec<(usize, Id)> = Vec::new();
    let mut created = vec![false; entries.len()];
    for (pos, e) in entries.iter().enumerate() {
        let dest = opts.target.join(&e.path);
        let node = &e.node;
        if node.kind == NodeKind::File && node.links > 1 {
            if let Some(first) = first_link.get(&(node.device, node.inode)) {
                match apply::hard_link(first, &dest) {
                    Ok(()) => {
                        report.files_restored += 1;
                        created[pos] = true;
                    }
                    Err(e) => report.errors.push(format!("{}: {e:#}", dest.display())),
                }
                continue;
            }
            first_link.insert((node.device, node.inode), dest.clone());
        }
        if let Err(err) = apply::create(&dest, node) {
            report.errors.push(format!("{}: {err:#}", dest.display()));
            continue;
        }
        created[pos] = true;
        match node.kind {
            NodeKind::Dir => report.dirs_restored += 1,
            NodeKind::File => {
                report.files_restored += 1;
                let file_no = files.len() as u32;
                files.push(pos);
                let mut offset = 0u64;
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
                    match blob_slot.get(id) {
                        Some((p, i)) => by_pack.get_mut(p).expect("pack listed")[*i].1.push(target),
                        None => {
                            let list = by_pack.entry(pack).or_default();
                            blob_slot.insert(*id, (pack, list.len()));
                            list.push((entry, vec![target]));
                        }
                    }
                }
            }
            _ => report.others_restored += 1,
        }
    }
    let mut damaged: std::collections::BTreeSet<usize> = std::collections::BTreeSet::new();
    for (pos, id) in missing {
        report.errors.push(format!(
            "{}: blob {} is missing from the index",
            entries[pos].path.display(),
            id.short()
        ));
        damaged.insert(pos);
    }

    // Phase 2: fill contents, one pack at a time per worker.
    let file_paths: Vec<PathBuf> = files
        .iter()
        .map(|&p| opts.target.join(&entries[p].path))
        .collect();
    opts.progress.set_totals(
        files.len() as u64,
        files.iter().map(|&p| entries[p].node.size).sum(),
    );
    let written = &opts.progress.bytes;
    let failures: Mutex<Vec<(String, Vec<u32>)>> = Mutex::default();
    let (tx, rx) = unbounded();
    for job in by_pack {
        tx.send(job).expect("queue");
    }
    drop(tx);
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            let rx = rx.clone();
            let (file_paths, failures) = (&file_paths, &failures);
            s.spawn(move || {
                for (pack, blobs) in rx {
                    restore_pack(repo, &pack, blobs, file_paths, written, failures);
                }
            });
        }
    });
    for (msg, file_nos) in failures.into_inner().expect("failures") {
        report.errors.push(msg);
        damaged.extend(file_nos.into_iter().map(|f| files[f as usize]));
    }
    report.bytes_restored = written.load(Ordering::Relaxed);
    opts.progress
        .files
        .store(files.len() as u64, Ordering::Relaxed);

    // Phase 3: metadata, deepest entries first so directory mtimes stick.
    for (pos, e) in entries.iter().enumerate().rev() {
        if created[pos]
            && let Err(err) = apply::metadata(&opts.target.join(&e.path), &e.node)
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

/// Largest gap between needed blobs that is read through rather than split
/// into two requests.
const MAX_GAP: u64 = 1 << 20;
/// A read is not extended past this size: each worker holds one span and its
/// decompressed blobs in memory at a time.
const MAX_SPAN: u64 = 4 << 20;

fn restore_pack(
    repo: &Repository,
    pack: &Id,
    mut blobs: Vec<(PackEntry, Vec<Target>)>,
    file_paths: &[PathBuf],
    written: &AtomicU64,
    failures: &Mutex<Vec<(String, Vec<u32>)>>,
) {
    let name = layout::pack(pack);
    blobs.sort_by_key(|(e, _)| e.offset);
    let mut i = 0;
    while i < blobs.len() {
        let start = blobs[i].0.offset as u64;
        let mut end = start + blobs[i].0.stored_len as u64;
        let mut j = i + 1;
        while j < blobs.len()
            && (blobs[j].0.offset as u64) <= end + MAX_GAP
            && end - start < MAX_SPAN
        {
            end = end.max(blobs[j].0.offset as u64 + blobs[j].0.stored_len as u64);
            j += 1;
        }
        // Decrypt the whole span before writing anything, so a bad copy on
        // one pool member is rejected and the span is read from the next.
        let group = &blobs[i..j];
        let mut plains: Vec<Vec<u8>> = Vec::new();
        let read = repo.backend().read_range(&name, start..end, &mut |bytes| {
            plains.clear();
            for (entry, _) in group {
                let off = (entry.offset as u64 - start) as usize;
                let sealed = &bytes[off..off + entry.stored_len as usize];
                let plain = open_blob(
                    repo.key(),
                    entry.kind,
                    &entry.id,
                    entry.compression,
                    entry.raw_len,
                    sealed,
                )
                .with_context(|| format!("blob {}", entry.id.short()))?;
                plains.push(plain);
            }
            Ok(())
        });
        match read {
            Ok(()) => {
                for ((_, targets), plain) in group.iter().zip(&plains) {
                    match write_targets(plain, targets, file_paths) {
                        Ok(()) => {
                            written.fetch_add(
                                plain.len() as u64 * targets.len() as u64,
                                Ordering::Relaxed,
                            );
                        }
                        Err(e) => failures
                            .lock()
                            .expect("failures")
                            .push((format!("{e:#}"), targets.iter().map(|t| t.file).collect())),
                    }
                }
            }
            Err(_) => {
                // Find out blob by blob which ones are bad, keeping the good ones.
                for (entry, targets) in group {
                    let range = entry.offset as u64..entry.offset as u64 + entry.stored_len as u64;
                    let result = repo.backend().read_range(&name, range, &mut |sealed| {
                        let plain = open_blob(
                            repo.key(),
                            entry.kind,
                            &entry.id,
                            entry.compression,
                            entry.raw_len,
                            sealed,
                        )?;
                        write_targets(&plain, targets, file_paths)?;
                        written.fetch_add(
                            plain.len() as u64 * targets.len() as u64,
                            Ordering::Relaxed,
                        );
                        Ok(())
                    });
                    if let Err(e) = result {
                        failures.lock().expect("failures").push((
                            format!(
                                "pack {name}: blob {}: {}",
                                entry.id.short(),
                                crate::error::one_line(&e)
                            ),
                            targets.iter().map(|t| t.file).collect(),
                        ));
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

fn write_targets(plain: &[u8], targets: &[Target], file_paths: &[PathBuf]) -> Result<()> {
    // Files are created at full length: an all-zero chunk (a hole of a VM
    // image, often thousands of times over) needs no write at all.
    if plain.iter().all(|&b| b == 0) {
        return Ok(());
    }
    for t in targets {
        let runs = data_runs(plain, t.offset);
        if runs.is_empty() {
            continue;
        }
        let path = &file_paths[t.file as usize];
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        for r in runs {
            f.write_all_at(&plain[r.clone()], t.offset + r.start as u64)
                .with_context(|| format!("writing {}", path.display()))?;
        }
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
