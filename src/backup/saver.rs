//! The write side of a backup: deduplicates blobs, compresses and encrypts
//! them on worker threads, packs them, uploads packs with bounded concurrency
//! and writes index files for uploaded packs.
//!
//! Ordering guarantee: an index file only names packs whose upload finished,
//! so whatever an interrupted backup already uploaded is reusable next time.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Result, anyhow};
use crossbeam_channel::{Receiver, Sender, bounded};

use super::buffers::BufferPool;
use crate::id::Id;
use crate::repo::Repository;
use crate::repo::blob::{BlobType, SealedBlob, seal_blob_into};
use crate::repo::index::{Index, IndexFile};
use crate::repo::layout;
use crate::repo::pack::{FinishedPack, PackBuilder};

/// Packs per index file written while a backup runs.
const PACKS_PER_INDEX: usize = 4;
/// An index is also written once its oldest pack has waited this long, so an
/// interrupted backup leaves little that the next run cannot re-use.
const INDEX_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(10);

/// Final figures of a save session.
#[derive(Default, Debug, Clone, Copy)]
pub struct SaveTotals {
    /// New blobs stored.
    pub blobs_added: u64,
    /// Plaintext bytes of new blobs.
    pub raw_added: u64,
    /// Bytes added to the repository (packs as stored).
    pub stored_added: u64,
}

/// Byte counters of a save session.
#[derive(Default, Debug)]
pub struct SaveStats {
    /// New blobs stored.
    pub blobs_added: AtomicU64,
    /// Plaintext bytes of new blobs.
    pub raw_added: AtomicU64,
    /// Bytes added to the repository (packs as stored).
    pub stored_added: AtomicU64,
}

/// Sealed-blob buffers kept for reuse. An upload hands a whole pack's back
/// at once; keeping half a pack's worth of average chunks saves most fresh
/// allocations without holding much memory idle.
const SPARE_SEALED: usize = 8;

struct Shared {
    repo: Arc<Repository>,
    known: Arc<Index>,
    in_flight: Mutex<HashSet<Id>>,
    error: Mutex<Option<anyhow::Error>>,
    pending_index: Mutex<IndexFile>,
    /// When the oldest pack in `pending_index` was uploaded.
    pending_since: Mutex<Option<std::time::Instant>>,
    stats: SaveStats,
    /// Spare chunk copies (archiver → seal workers → back).
    chunk_buffers: BufferPool,
    /// Spare sealed-blob buffers (seal workers → packer → uploaders → back).
    sealed_buffers: BufferPool,
}

impl Shared {
    fn fail(&self, e: anyhow::Error) {
        let mut slot = self.error.lock().expect("error slot");
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    fn failed(&self) -> bool {
        self.error.lock().expect("error slot").is_some()
    }

    /// Writes an index for uploaded packs once enough have gathered
    /// (or always, when `force`).
    fn flush_index(&self, force: bool) -> Result<()> {
        let file = {
            let mut pending = self.pending_index.lock().expect("pending index");
            let mut since = self.pending_since.lock().expect("pending since");
            if pending.packs.is_empty() {
                return Ok(());
            }
            let oldest = *since.get_or_insert_with(std::time::Instant::now);
            let due = pending.packs.len() >= PACKS_PER_INDEX || oldest.elapsed() >= INDEX_MAX_AGE;
            if !force && !due {
                return Ok(());
            }
            *since = None;
            std::mem::take(&mut *pending)
        };
        self.repo.save_index(&file)?;
        Ok(())
    }
}

/// Receives blobs and makes them durable in the repository.
pub struct Saver {
    shared: Arc<Shared>,
    blob_tx: Option<Sender<(BlobType, Id, Vec<u8>)>>,
    workers: Vec<JoinHandle<()>>,
    packer: Option<JoinHandle<()>>,
    uploaders: Vec<JoinHandle<()>>,
}

impl Saver {
    /// Starts the worker threads. `known` is the repository's index at start.
    pub fn start(
        repo: Arc<Repository>,
        known: Arc<Index>,
        threads: usize,
        uploads: usize,
    ) -> Saver {
        let shared = Arc::new(Shared {
            repo: repo.clone(),
            known,
            in_flight: Mutex::default(),
            error: Mutex::default(),
            pending_index: Mutex::default(),
            pending_since: Mutex::default(),
            stats: SaveStats::default(),
            chunk_buffers: BufferPool::new(threads + 1),
            sealed_buffers: BufferPool::new(SPARE_SEALED),
        });
        let (blob_tx, blob_rx) = bounded::<(BlobType, Id, Vec<u8>)>(threads * 2);
        let (sealed_tx, sealed_rx) = bounded::<SealedBlob>(threads * 2);
        // Every finished pack waiting here is a pack size of memory.
        let (pack_tx, pack_rx) = bounded::<FinishedPack>(0);

        let level = repo.config().compression_level;
        let workers = (0..threads)
            .map(|i| {
                let rx = blob_rx.clone();
                let tx = sealed_tx.clone();
                let repo = repo.clone();
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("strata-seal-{i}"))
                    .spawn(move || {
                        for (kind, id, data) in rx {
                            let sealed = seal_blob_into(repo.key(), kind, id, &data, level, |n| {
                                shared.sealed_buffers.take(n)
                            });
                            shared.chunk_buffers.give(data);
                            if tx.send(sealed).is_err() {
                                break;
                            }
                        }
                    })
                    .expect("spawn seal worker")
            })
            .collect();
        drop(sealed_tx);

        let packer = {
            let repo = repo.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("strata-packer".into())
                .spawn(move || run_packer(&repo, &shared, sealed_rx, pack_tx))
                .expect("spawn packer")
        };

        let uploaders = (0..uploads)
            .map(|i| {
                let rx = pack_rx.clone();
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("strata-upload-{i}"))
                    .spawn(move || run_uploader(&shared, rx))
                    .expect("spawn uploader")
            })
            .collect();

        Saver {
            shared,
            blob_tx: Some(blob_tx),
            workers,
            packer: Some(packer),
            uploaders,
        }
    }

    /// True when the blob is neither in the repository nor already queued;
    /// marks it queued. Callers that get `true` must then call [`Saver::save`].
    pub fn claim(&self, id: &Id) -> bool {
        if self.shared.known.contains(id) {
            return false;
        }
        self.shared
            .in_flight
            .lock()
            .expect("in-flight set")
            .insert(*id)
    }

    /// True when the blob is in the repository or queued in this session.
    pub fn has(&self, id: &Id) -> bool {
        self.shared.known.contains(id)
            || self
                .shared
                .in_flight
                .lock()
                .expect("in-flight set")
                .contains(id)
    }

    /// Queues a claimed blob; blocks when the pipeline is full (backpressure).
    pub fn save(&self, kind: BlobType, id: Id, data: Vec<u8>) -> Result<()> {
        self.shared
            .stats
            .blobs_added
            .fetch_add(1, Ordering::Relaxed);
        self.shared
            .stats
            .raw_added
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let tx = self.blob_tx.as_ref().expect("saver is running");
        if self.shared.failed() || tx.send((kind, id, data)).is_err() {
            return Err(self.error_text());
        }
        Ok(())
    }

    /// The first error, as text (the error itself stays for `finish`).
    fn error_text(&self) -> anyhow::Error {
        match &*self.shared.error.lock().expect("error slot") {
            Some(e) => anyhow!("{}", crate::error::one_line(e)),
            None => anyhow!("the upload pipeline stopped"),
        }
    }

    /// An empty buffer for a chunk copy of `len` bytes (a recycled one when
    /// possible); hand it to [`Saver::save`].
    pub fn chunk_buffer(&self, len: usize) -> Vec<u8> {
        self.shared.chunk_buffers.take(len)
    }

    /// Claims and queues a blob if it is new; returns whether it was new.
    pub fn save_if_new(&self, kind: BlobType, data: &[u8]) -> Result<(Id, bool)> {
        let id = self.shared.repo.key().id_of(data);
        if self.claim(&id) {
            self.save(kind, id, data.to_vec())?;
            return Ok((id, true));
        }
        Ok((id, false))
    }

    /// Counters so far.
    pub fn stats(&self) -> &SaveStats {
        &self.shared.stats
    }

    fn take_error(&self) -> anyhow::Error {
        self.shared
            .error
            .lock()
            .expect("error slot")
            .take()
            .unwrap_or_else(|| anyhow!("the upload pipeline stopped"))
    }

    /// Flushes every open pack, waits for uploads and writes the final index.
    /// After `Ok`, every saved blob is durable and indexed.
    pub fn finish(mut self) -> Result<SaveTotals> {
        self.blob_tx.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(p) = self.packer.take() {
            let _ = p.join();
        }
        for u in self.uploaders.drain(..) {
            let _ = u.join();
        }
        if self.shared.failed() {
            // Index what did get uploaded, so a re-run can reuse it.
            let _ = self.shared.flush_index(true);
            return Err(self.take_error());
        }
        self.shared.flush_index(true)?;
        let s = &self.shared.stats;
        Ok(SaveTotals {
            blobs_added: s.blobs_added.load(Ordering::Relaxed),
            raw_added: s.raw_added.load(Ordering::Relaxed),
            stored_added: s.stored_added.load(Ordering::Relaxed),
        })
    }
}

fn run_packer(
    repo: &Repository,
    shared: &Shared,
    rx: Receiver<SealedBlob>,
    tx: Sender<FinishedPack>,
) {
    let target = repo.config().pack_size as usize;
    let mut data = PackBuilder::new();
    let mut trees = PackBuilder::new();
    for blob in rx {
        if shared.failed() {
            continue; // drain so the workers never block
        }
        let builder = if blob.kind == BlobType::Tree {
            &mut trees
        } else {
            &mut data
        };
        builder.add(blob);
        if builder.len() >= target {
            let full = std::mem::take(builder);
            if tx.send(full.finish(repo.key())).is_err() {
                return;
            }
        }
    }
    for builder in [data, trees] {
        if !builder.is_empty() && !shared.failed() && tx.send(builder.finish(repo.key())).is_err() {
            return;
        }
    }
}

fn run_uploader(shared: &Shared, rx: Receiver<FinishedPack>) {
    for pack in rx {
        if shared.failed() {
            continue;
        }
        let size = pack.len() as u64;
        match shared
            .repo
            .backend()
            .put_parts(&layout::pack(&pack.id), &pack.parts)
        {
            Ok(()) => {
                for part in pack.parts {
                    if let Ok(buffer) = part.try_into_mut() {
                        shared.sealed_buffers.give(buffer.into());
                    }
                }
                shared.stats.stored_added.fetch_add(size, Ordering::Relaxed);
                shared
                    .pending_index
                    .lock()
                    .expect("pending index")
                    .packs
                    .push((pack.id, pack.entries));
                if let Err(e) = shared.flush_index(false) {
                    shared.fail(e);
                }
            }
            Err(e) => shared.fail(e),
        }
    }
}
