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
use crate::repo::pack_write::{PackWriter, store_pack};
use crate::store::Spool;

/// When an index file is written while a backup runs: once this many packs
/// wait for one, or once the oldest of them has waited this long, so an
/// interrupted backup leaves little that the next run cannot re-use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IndexEvery {
    packs: usize,
    age: std::time::Duration,
}

/// On local disk, where a write costs nothing but time.
const INDEX_EVERY_LOCAL: IndexEvery = IndexEvery {
    packs: 4,
    age: std::time::Duration::from_secs(10),
};
/// On object storage every index file is a billed request: with 16 MiB
/// packs, one index per 16 packs is 4 PUTs per GiB on top of the 64 pack
/// PUTs, within the budget of 70 write requests per GiB (measured: 69 for
/// 1 GiB in all). Two minutes keep that on a slow uplink too (about 9 per
/// GiB at 1 MB/s), while a killed backup loses little.
const INDEX_EVERY_CLOUD: IndexEvery = IndexEvery {
    packs: 16,
    age: std::time::Duration::from_secs(120),
};

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

struct SaverState {
    repo: Arc<Repository>,
    known: Arc<Index>,
    in_flight: Mutex<HashSet<Id>>,
    error: Mutex<Option<anyhow::Error>>,
    pending_index: Mutex<IndexFile>,
    /// When `pending_index` is written.
    index_every: IndexEvery,
    /// When the oldest pack in `pending_index` was uploaded.
    pending_since: Mutex<Option<std::time::Instant>>,
    stats: SaveStats,
    /// Spare chunk copies (archiver → seal workers → back).
    chunk_buffers: BufferPool,
    /// Spare sealed-blob buffers (seal workers → packer → uploaders → back).
    sealed_buffers: BufferPool,
}

impl SaverState {
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
            let every = self.index_every;
            let due = pending.packs.len() >= every.packs || oldest.elapsed() >= every.age;
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
    shared: Arc<SaverState>,
    blob_tx: Option<Sender<(BlobType, Id, Vec<u8>)>>,
    workers: Vec<JoinHandle<()>>,
    /// Packs in memory: the packer thread. Spooled packs: the placer, and
    /// the uploaders' channel to send the last packs on at the end.
    packer: Option<JoinHandle<()>>,
    placer: Option<(Arc<Placer>, Sender<ReadyPack>)>,
    uploaders: Vec<JoinHandle<()>>,
}

impl Saver {
    /// Starts the worker threads. `known` is the repository's index at start.
    /// Blobs are compressed at the repository's level.
    pub fn start(
        repo: Arc<Repository>,
        known: Arc<Index>,
        threads: usize,
        uploads: usize,
    ) -> Saver {
        let level = repo.config().compression_level;
        Saver::start_with_level(repo, known, threads, uploads, level)
    }

    /// [`Saver::start`] with zstd level `level` for new blobs (0: none).
    pub fn start_with_level(
        repo: Arc<Repository>,
        known: Arc<Index>,
        threads: usize,
        uploads: usize,
        level: i32,
    ) -> Saver {
        let shared = Arc::new(SaverState {
            repo: repo.clone(),
            known,
            in_flight: Mutex::default(),
            error: Mutex::default(),
            pending_index: Mutex::default(),
            index_every: if repo.backend().can_spool() {
                INDEX_EVERY_LOCAL
            } else {
                INDEX_EVERY_CLOUD
            },
            pending_since: Mutex::default(),
            stats: SaveStats::default(),
            chunk_buffers: BufferPool::new(threads + 1),
            sealed_buffers: BufferPool::new(SPARE_SEALED),
        });
        let (blob_tx, blob_rx) = bounded::<(BlobType, Id, Vec<u8>)>(threads * 2);
        let (sealed_tx, sealed_rx) = bounded::<SealedBlob>(threads * 2);
        // Every finished pack waiting here is a pack size of memory.
        let (pack_tx, pack_rx) = bounded::<ReadyPack>(0);
        let placer = repo
            .backend()
            .can_spool()
            .then(|| Arc::new(Placer::new(repo.config().pack_size as usize)));

        let workers = (0..threads)
            .map(|i| {
                let rx = blob_rx.clone();
                let tx = sealed_tx.clone();
                let packs = pack_tx.clone();
                let placer = placer.clone();
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
                            match &placer {
                                Some(placer) => {
                                    if shared.failed() {
                                        continue; // drain so the archiver never blocks
                                    }
                                    if let Err(e) = placer.put(&repo, &shared, sealed, &packs) {
                                        shared.fail(e);
                                    }
                                }
                                None => {
                                    if tx.send(sealed).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    })
                    .expect("spawn seal worker")
            })
            .collect();
        drop(sealed_tx);

        let (packer, placer) = match placer {
            Some(placer) => (None, Some((placer, pack_tx))),
            None => {
                let repo = repo.clone();
                let shared = shared.clone();
                let packer = std::thread::Builder::new()
                    .name("strata-packer".into())
                    .spawn(move || run_packer(&repo, &shared, sealed_rx, pack_tx))
                    .expect("spawn packer");
                (Some(packer), None)
            }
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
            packer,
            placer,
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
        if let Some((placer, packs)) = self.placer.take()
            && !self.shared.failed()
            && let Err(e) = placer.close(&self.shared.repo, &packs)
        {
            self.shared.fail(e);
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

/// A pack ready to be made durable.
struct ReadyPack {
    /// The pack; its parts are all its bytes, or nothing when spooled.
    pack: FinishedPack,
    /// Size of the whole pack file.
    size: u64,
    /// Holds the pack's bytes, written already, to be committed.
    spool: Option<Arc<dyn Spool>>,
}

/// Packs built in memory by the packer thread (stores that take whole
/// objects), handed to the uploaders when full.
fn run_packer(
    repo: &Repository,
    shared: &SaverState,
    rx: Receiver<SealedBlob>,
    tx: Sender<ReadyPack>,
) {
    let mut writer = PackWriter::new(repo.config().pack_size as usize);
    let ready = |pack: FinishedPack| {
        let size = pack.len() as u64;
        ReadyPack {
            pack,
            size,
            spool: None,
        }
    };
    for blob in rx {
        if shared.failed() {
            continue; // drain so the workers never block
        }
        if let Some(pack) = writer.add(repo, blob)
            && tx.send(ready(pack)).is_err()
        {
            return;
        }
    }
    for pack in writer.finish(repo) {
        if shared.failed() || tx.send(ready(pack)).is_err() {
            return;
        }
    }
}

/// A pack being written in place on a store that spools (local disk).
struct SpoolPack {
    spool: Arc<dyn Spool>,
    builder: PackBuilder,
    /// Blobs placed but not written yet.
    outstanding: usize,
    /// Takes no more blobs; finished once `outstanding` is 0.
    full: bool,
}

/// Packs filled in place by the seal workers themselves: each sealed blob
/// gets the next offset of its open pack and is written there at once with
/// a positioned write, so no pack is held in memory and the copies into the
/// page cache run on every worker instead of one packer thread.
struct Placer {
    target: usize,
    /// The open data pack and the open tree pack.
    open: Mutex<[Option<Arc<Mutex<SpoolPack>>>; 2]>,
}

impl Placer {
    fn new(target: usize) -> Placer {
        Placer {
            target,
            open: Mutex::default(),
        }
    }

    /// Writes a sealed blob into its open pack (starting one if needed) and
    /// sends the pack on when this blob completed it.
    fn put(
        &self,
        repo: &Repository,
        shared: &SaverState,
        blob: SealedBlob,
        tx: &Sender<ReadyPack>,
    ) -> Result<()> {
        let (pack, spool, offset) = {
            let mut open = self.open.lock().expect("open packs");
            let slot = &mut open[usize::from(blob.kind == BlobType::Tree)];
            if slot.is_none() {
                let spool = repo
                    .backend()
                    .spool()?
                    .ok_or_else(|| anyhow!("the store stopped taking spooled packs"))?;
                *slot = Some(Arc::new(Mutex::new(SpoolPack {
                    spool: Arc::from(spool),
                    builder: PackBuilder::new(),
                    outstanding: 0,
                    full: false,
                })));
            }
            let pack = slot.clone().expect("slot just filled");
            let mut p = pack.lock().expect("spool pack");
            let offset = p.builder.len() as u64;
            p.builder.record(&blob);
            p.outstanding += 1;
            if p.builder.len() >= self.target {
                p.full = true;
                *slot = None;
            }
            let spool = p.spool.clone();
            drop(p);
            (pack, spool, offset)
        };
        let written = spool.write_at(&blob.bytes, offset);
        shared.sealed_buffers.give(blob.bytes);
        let done = {
            let mut p = pack.lock().expect("spool pack");
            p.outstanding -= 1;
            p.full && p.outstanding == 0
        };
        written?;
        if done {
            self.send(repo, &pack, tx)?;
        }
        Ok(())
    }

    /// Writes the header of a pack whose blobs are all written and hands it
    /// to the uploaders.
    fn send(
        &self,
        repo: &Repository,
        pack: &Arc<Mutex<SpoolPack>>,
        tx: &Sender<ReadyPack>,
    ) -> Result<()> {
        let (builder, spool) = {
            let mut p = pack.lock().expect("spool pack");
            (std::mem::take(&mut p.builder), p.spool.clone())
        };
        let mut offset = builder.len() as u64;
        let mut pack = builder.finish(repo.key());
        for part in std::mem::take(&mut pack.parts) {
            spool.write_at(&part, offset)?;
            offset += part.len() as u64;
        }
        // A closed channel means the backup is failing already.
        let _ = tx.send(ReadyPack {
            pack,
            size: offset,
            spool: Some(spool),
        });
        Ok(())
    }

    /// Closes the packs still open (every worker has stopped).
    fn close(&self, repo: &Repository, tx: &Sender<ReadyPack>) -> Result<()> {
        let open = std::mem::take(&mut *self.open.lock().expect("open packs"));
        for pack in open.into_iter().flatten() {
            if !pack.lock().expect("spool pack").builder.is_empty() {
                self.send(repo, &pack, tx)?;
            }
        }
        Ok(())
    }
}

fn run_uploader(shared: &SaverState, rx: Receiver<ReadyPack>) {
    for ReadyPack { pack, size, spool } in rx {
        if shared.failed() {
            continue;
        }
        let key = layout::pack(&pack.id);
        let stored = match spool {
            Some(spool) => spool.commit(&key),
            None => store_pack(&shared.repo, &pack),
        };
        match stored {
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
