//! A deterministic simulation of several clients sharing a repository on a
//! pool of 1–4 in-memory members with injected faults: list failures, failed,
//! duplicated and unacknowledged writes, failed deletes, failed reads,
//! outages, a member wiped, old objects put back, clock skew per member and
//! crashes at any write. A seeded scheduler interleaves backup, forget,
//! prune, repair, `pool repair`, restore and check; after every step the
//! invariants of docs/CONSISTENCY.md are checked against the stores
//! themselves:
//! - every acknowledged snapshot not forgotten reads back bit-identical from
//!   the pool;
//! - a forgotten snapshot never comes back;
//! - a restore with the restore command's code never leaves a file under
//!   its own name with other bytes, and one that reports success restores
//!   every file;
//! - after `pool repair` reports every member whole, each member alone holds
//!   every such snapshot, and `check --read-data` passes on it.
//!
//! `cargo test --test simulation` runs a few thousand steps. More:
//! `STRATA_SIM_SEEDS=100 STRATA_SIM_STEPS=2000 cargo test --release --test
//! simulation -- --nocapture` (or `scripts/simulate`). A failing run prints
//! its seed; `STRATA_SIM_SEED=<seed>` replays just that one.
//!
//! It needs nothing from tests/common: it drives the library on in-memory
//! stores, never the binary, and every choice (file contents included) comes
//! from the one seeded generator so that a seed replays exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use strata::backup::{BackupOptions, Source, run_backup};
use strata::crypto::keyfile::KdfParams;
use strata::id::Id;
use strata::maintenance::check::{ReadData, check};
use strata::maintenance::forget::forget_snapshots;
use strata::maintenance::prune::{PruneOptions, prune};
use strata::maintenance::repair::{repair_index, repair_snapshots};
use strata::pool::Pool;
use strata::repo::snapshot::BackupMode;
use strata::repo::tree::NodeKind;
use strata::repo::{RepoConfig, Repository};
use strata::store::Backend;
use strata::store::memory::{ClientFaults, FaultRates, FaultyStore, MemStore, SimClock};

const PASSWORD: &[u8] = b"simulation";
const CHEAP: KdfParams = KdfParams {
    memory_kib: 1024,
    iterations: 1,
    parallelism: 1,
};

/// File path (absolute, without the leading `/`) → bytes.
type Content = BTreeMap<String, Vec<u8>>;

struct Client {
    name: String,
    source: PathBuf,
    faults: Arc<ClientFaults>,
    doors: Vec<Arc<FaultyStore>>,
}

struct Sim {
    rng: StdRng,
    clock: Arc<SimClock>,
    stores: Vec<Arc<MemStore>>,
    quorum: usize,
    rates: FaultRates,
    clients: Vec<Client>,
    down: Vec<bool>,
    wiped: Option<usize>,
    /// A copy was damaged in place and no `pool repair --read-data` has
    /// replaced it yet.
    corrupted: bool,
    /// Snapshots whose backup returned success, with what they hold.
    acked: BTreeMap<Id, Content>,
    /// Snapshots whose forget returned success.
    forgotten: BTreeSet<Id>,
    /// Snapshots whose forget failed part-way: either state is allowed.
    limbo: BTreeSet<Id>,
    /// Metadata objects seen in the stores, for putting old copies back.
    history: BTreeMap<String, Bytes>,
    log: Vec<String>,
    step: usize,
    /// Files written so far (each gets its own mtime).
    file_writes: u32,
    _tmp: tempfile::TempDir,
}

impl Sim {
    fn new(seed: u64) -> Result<Sim> {
        let mut rng = StdRng::seed_from_u64(seed);
        let clock = SimClock::new();
        strata::entropy::set_simulated_now(clock.now());
        let n = rng.random_range(1..=4usize);
        let quorum = rng.random_range(1..=n);
        let stores: Vec<Arc<MemStore>> = (0..n)
            .map(|i| {
                MemStore::new(
                    &format!("m{i}"),
                    clock.clone(),
                    rng.random_range(-300..=300),
                )
            })
            .collect();
        let rates = FaultRates {
            list_fails: rng.random_range(0..40),
            read_fails: rng.random_range(0..20),
            write_fails: rng.random_range(0..30),
            write_lost_ack: rng.random_range(0..20),
            write_duplicated: rng.random_range(0..20),
            delete_fails: rng.random_range(0..40),
            // One seed in four lists late: objects written in the last ten
            // (virtual) seconds may be missing from a listing.
            stale_list: if rng.random_range(0..4) == 0 {
                rng.random_range(5..40)
            } else {
                0
            },
        };
        // A fixed place, so snapshot paths are the same in a replay.
        let tmp = tempfile::Builder::new()
            .prefix(&format!("strata-sim-{seed}-"))
            .rand_bytes(0)
            .tempdir()
            .or_else(|_| {
                let _ = std::fs::remove_dir_all(
                    std::env::temp_dir().join(format!("strata-sim-{seed}-")),
                );
                tempfile::Builder::new()
                    .prefix(&format!("strata-sim-{seed}-"))
                    .rand_bytes(0)
                    .tempdir()
            })?;
        let mut sim = Sim {
            rng,
            clock,
            stores,
            quorum,
            rates,
            clients: Vec::new(),
            down: vec![false; n],
            wiped: None,
            corrupted: false,
            acked: BTreeMap::new(),
            forgotten: BTreeSet::new(),
            limbo: BTreeSet::new(),
            history: BTreeMap::new(),
            log: Vec::new(),
            step: 0,
            file_writes: 0,
            _tmp: tmp,
        };
        let clients = sim.rng.random_range(1..=3usize);
        for c in 0..clients {
            let source = sim._tmp.path().join(format!("c{c}")).join("src");
            std::fs::create_dir_all(&source)?;
            let faults = ClientFaults::new(sim.rng.random(), sim.rates.clone());
            let doors = sim.doors(&faults);
            sim.clients.push(Client {
                name: format!("client{c}"),
                source,
                faults,
                doors,
            });
        }
        let oracle = sim.oracle();
        let config = RepoConfig {
            pack_size: 1 << 20,
            ..RepoConfig::new()
        };
        Repository::init_with(oracle, PASSWORD, CHEAP, config)?;
        sim.log.push(format!(
            "{n} members, write quorum {quorum}, {clients} clients, rates {:?}",
            sim.rates
        ));
        Ok(sim)
    }

    fn doors(&self, faults: &Arc<ClientFaults>) -> Vec<Arc<FaultyStore>> {
        self.stores
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let d = FaultyStore::new(s.clone(), faults.clone());
                d.down
                    .store(self.down[i], std::sync::atomic::Ordering::SeqCst);
                d
            })
            .collect()
    }

    /// The stores as they are, without faults.
    fn oracle(&self) -> Arc<dyn Backend> {
        Self::backend_of(
            self.stores
                .iter()
                .map(|s| (s.name().to_string(), s.clone() as Arc<dyn Backend>))
                .collect(),
            self.quorum,
        )
    }

    fn backend_of(stores: Vec<(String, Arc<dyn Backend>)>, quorum: usize) -> Arc<dyn Backend> {
        if stores.len() == 1 {
            return stores.into_iter().next().expect("one store").1;
        }
        Arc::new(Pool::from_stores(stores, quorum))
    }

    /// Client `c`'s doors to the stores, named.
    fn client_doors(&self, c: usize) -> Vec<(String, Arc<dyn Backend>)> {
        self.clients[c]
            .doors
            .iter()
            .zip(&self.stores)
            .map(|(d, s)| (s.name().to_string(), d.clone() as Arc<dyn Backend>))
            .collect()
    }

    fn client_backend(&self, c: usize) -> Arc<dyn Backend> {
        Self::backend_of(self.client_doors(c), self.quorum)
    }

    fn client_repo(&self, c: usize) -> Result<Arc<Repository>> {
        Ok(Arc::new(Repository::open(
            self.client_backend(c),
            PASSWORD,
        )?))
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(self.clock.now(), 0).expect("valid time")
    }

    /// Changes a client's files: new, changed, removed, duplicated.
    fn mutate(&mut self, c: usize) -> Result<()> {
        let src = self.clients[c].source.clone();
        for _ in 0..self.rng.random_range(1..=3) {
            let f = src.join(format!("f{}", self.rng.random_range(0..8)));
            match self.rng.random_range(0..10) {
                0 => {
                    let _ = std::fs::remove_file(&f);
                }
                1 => {
                    // Same bytes as another file: deduplicated.
                    let other = src.join(format!("f{}", self.rng.random_range(0..8)));
                    if let Ok(b) = std::fs::read(other) {
                        std::fs::write(&f, b)?;
                    }
                }
                _ => {
                    let len = if self.rng.random_range(0..8) == 0 {
                        self.rng.random_range(60_000..200_000)
                    } else {
                        self.rng.random_range(0..12_000)
                    };
                    let mut bytes = vec![0u8; len];
                    self.rng.fill(&mut bytes[..]);
                    std::fs::write(&f, bytes)?;
                }
            }
            if f.exists() {
                // An mtime from the simulation's clock, unique per write, so
                // a replay records the same one and a change is always seen.
                self.file_writes += 1;
                let mtime = std::time::UNIX_EPOCH
                    + Duration::new(self.clock.now() as u64, self.file_writes % 1_000_000_000);
                std::fs::File::options()
                    .write(true)
                    .open(&f)?
                    .set_modified(mtime)?;
            }
        }
        Ok(())
    }

    fn read_source(dir: &Path) -> Result<Content> {
        let mut out = Content::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let path = e.path();
            let key = path.strip_prefix("/")?.to_string_lossy().into_owned();
            out.insert(key, std::fs::read(&path)?);
        }
        Ok(out)
    }

    fn act(&mut self, c: usize) -> Result<String> {
        let roll = self.rng.random_range(0..100);
        let live: Vec<Id> = self.live_snapshots();
        if roll < 35 || (live.len() < 2 && roll < 60) {
            self.mutate(c)?;
            let content = Self::read_source(&self.clients[c].source)?;
            let repo = self.client_repo(c)?;
            let full = self.rng.random_range(0..6) == 0;
            let during = self.plan_interleaved(c, &live);
            let report = run_backup(
                repo,
                BackupOptions {
                    time: Some(self.now()),
                    source: Source::Paths(vec![self.clients[c].source.clone()]),
                    mode: if full {
                        BackupMode::Full
                    } else {
                        BackupMode::Incremental
                    },
                    tags: Vec::new(),
                    host: self.clients[c].name.clone(),
                    excludes: Vec::new(),
                    filters: Default::default(),
                    compression: Default::default(),
                    threads: 1,
                    uploads: 1,
                    progress: Arc::default(),
                    scan_totals: false,
                    cancel: None,
                },
            );
            let during = self.settle_interleaved(c, during);
            let report = report.map_err(|e| match during.is_empty() {
                true => e,
                false => e.context(during.clone()),
            })?;
            self.acked.insert(report.snapshot_id, content);
            return Ok(format!("backup -> {}{during}", report.snapshot_id.short()));
        }
        if roll < 50 || live.len() > 10 {
            let Some(&victim) = live.get(self.rng.random_range(0..live.len().max(1))) else {
                return Ok("forget: nothing to forget".into());
            };
            let repo = self.client_repo(c)?;
            let r = repo
                .require_complete_views(None)
                .and_then(|()| forget_snapshots(&repo, &[victim]));
            return match r {
                Ok(()) => {
                    self.forgotten.insert(victim);
                    Ok(format!("forget {}", victim.short()))
                }
                Err(e) => {
                    self.limbo.insert(victim);
                    Err(e.context(format!("forget {}", victim.short())))
                }
            };
        }
        if roll < 65 {
            let grace = self.grace();
            let max_unused = [0.0, 5.0, 50.0][self.rng.random_range(0..3)];
            let repo = self.client_repo(c)?;
            let r = prune(
                &repo,
                &PruneOptions {
                    max_unused_pct: max_unused,
                    grace: Duration::from_secs(grace),
                    dry_run: false,
                    finishing: false,
                },
            )?;
            return Ok(format!(
                "prune grace {grace}s max-unused {max_unused}%: deleted {} marked {} repacked {} rescued {} records merged {}",
                r.packs_deleted,
                r.packs_marked,
                r.packs_repacked,
                r.packs_rescued,
                r.deletion_records_merged
            ));
        }
        if roll < 75 {
            return self.pool_repair(c);
        }
        if roll < 79 {
            let repo = self.client_repo(c)?;
            let r = repair_index(&repo, false)?;
            return Ok(format!("repair index: {} reindexed", r.reindexed));
        }
        if roll < 82 {
            let repo = self.client_repo(c)?;
            let removed = repair_snapshots(&repo, false)?;
            // Only damage makes a snapshot go; the simulation damages none.
            if let Some(name) = removed.first() {
                return Err(Invariant::wrap(anyhow::anyhow!(
                    "repair snapshots removed {name}, which is not damaged"
                )));
            }
            return Ok("repair snapshots".into());
        }
        if roll < 88 && self.stores.len() > 1 {
            // Outages end more often than they start: the pool spends most
            // of its time whole or with one member down.
            let downs: Vec<usize> = (0..self.stores.len()).filter(|&i| self.down[i]).collect();
            let m = if !downs.is_empty() && self.rng.random_range(0..10) < 7 {
                downs[self.rng.random_range(0..downs.len())]
            } else {
                self.rng.random_range(0..self.stores.len())
            };
            self.down[m] = !self.down[m];
            for client in &self.clients {
                client.doors[m]
                    .down
                    .store(self.down[m], std::sync::atomic::Ordering::SeqCst);
            }
            return Ok(format!(
                "member m{m} {}",
                if self.down[m] { "down" } else { "up" }
            ));
        }
        if roll < 93 {
            return Ok(self.put_back());
        }
        if roll < 94 && self.quorum >= 2 && self.wiped.is_none() && !self.corrupted {
            let m = self.rng.random_range(0..self.stores.len());
            self.stores[m].wipe();
            self.wiped = Some(m);
            return Ok(format!("member m{m} wiped"));
        }
        if roll < 96 && self.wiped.is_none() {
            return Ok(self.corrupt());
        }
        if roll < 98 && !live.is_empty() {
            let victim = live[self.rng.random_range(0..live.len())];
            return self.restore(c, victim);
        }
        let repo = self.client_repo(c)?;
        let r = check(&repo, ReadData::None)?;
        Ok(format!("check: {} errors", r.errors.len()))
    }

    /// A prune grace period. Where listings can be late, it must be longer
    /// than the delay (docs/CONSISTENCY.md): no `0s` then.
    fn grace(&mut self) -> u64 {
        let choices: &[u64] = if self.rates.stale_list > 0 {
            &[600, 3600]
        } else {
            &[0, 600, 3600]
        };
        choices[self.rng.random_range(0..choices.len())]
    }

    /// Sometimes plans another client's prune or forget to run in the
    /// middle of client `c`'s next command, before one of its writes.
    fn plan_interleaved(&mut self, c: usize, live: &[Id]) -> Option<Interleaving> {
        if self.clients.len() < 2 || self.rng.random_range(0..4) != 0 {
            return None;
        }
        let mut b = self.rng.random_range(0..self.clients.len() - 1);
        if b >= c {
            b += 1;
        }
        let backend = self.client_backend(b);
        let outcome: Arc<std::sync::Mutex<Option<Result<String, String>>>> = Arc::default();
        let victim = (!live.is_empty() && self.rng.random_range(0..3) == 0)
            .then(|| live[self.rng.random_range(0..live.len())]);
        let grace = self.grace();
        let slot = outcome.clone();
        let run = move || {
            let r = (|| -> Result<String> {
                let repo = Arc::new(Repository::open(backend, PASSWORD)?);
                match victim {
                    Some(v) => {
                        repo.require_complete_views(None)?;
                        forget_snapshots(&repo, &[v])?;
                        Ok(format!("forget {}", v.short()))
                    }
                    None => {
                        let r = prune(
                            &repo,
                            &PruneOptions {
                                max_unused_pct: 0.0,
                                grace: Duration::from_secs(grace),
                                dry_run: false,
                                finishing: false,
                            },
                        )?;
                        Ok(format!(
                            "prune grace {grace}s: deleted {} marked {} waiting {}",
                            r.packs_deleted, r.packs_marked, r.markers_waiting
                        ))
                    }
                }
            })();
            *slot.lock().expect("outcome") = Some(r.map_err(|e| format!("{e:#}")));
        };
        let at = self.rng.random_range(1..12);
        self.clients[c]
            .faults
            .interleave_at_write(at, Box::new(run));
        Some(Interleaving {
            client: b,
            at,
            victim,
            outcome,
        })
    }

    /// Records what an interleaved command did; returns a note for the log.
    fn settle_interleaved(&mut self, c: usize, during: Option<Interleaving>) -> String {
        let Some(i) = during else {
            return String::new();
        };
        if self.clients[c].faults.clear_interleaved() {
            return String::new();
        }
        let outcome = i.outcome.lock().expect("outcome").take();
        if let Some(v) = i.victim {
            match &outcome {
                Some(Ok(_)) => {
                    self.forgotten.insert(v);
                }
                _ => {
                    self.limbo.insert(v);
                }
            }
        }
        let what = match outcome {
            Some(Ok(s)) => s,
            Some(Err(e)) => format!("failed: {e}"),
            None => "did not finish".into(),
        };
        format!(" [before write {} client{} ran: {what}]", i.at, i.client)
    }

    /// Flips a byte of one copy of an object that another member holds
    /// intact (damage in place: same size, so only reading tells).
    fn corrupt(&mut self) -> String {
        if self.stores.len() < 2 {
            return "corrupt: a single store".into();
        }
        let m = self.rng.random_range(0..self.stores.len());
        let candidates: Vec<String> = self.stores[m]
            .keys()
            .into_iter()
            .filter(|k| {
                ["data/", "index/", "snapshots/", "keys/", "config"]
                    .iter()
                    .any(|p| k.starts_with(p))
            })
            .filter(|k| {
                let mine = self.stores[m].peek(k);
                self.stores
                    .iter()
                    .enumerate()
                    .any(|(i, s)| i != m && s.peek(k).is_some() && s.peek(k) == mine)
            })
            .collect();
        if candidates.is_empty() {
            return format!("corrupt: m{m} holds nothing another member holds too");
        }
        let key = candidates[self.rng.random_range(0..candidates.len())].clone();
        let mut bytes = self.stores[m].peek(&key).expect("held").to_vec();
        if bytes.is_empty() {
            return format!("corrupt: {key} is empty");
        }
        let at = self.rng.random_range(0..bytes.len());
        bytes[at] ^= 1 << self.rng.random_range(0..8);
        self.stores[m].plant(&key, bytes.into());
        self.corrupted = true;
        format!("corrupted {key} on m{m}")
    }

    /// Puts an old copy of a metadata object back on a member.
    fn put_back(&mut self) -> String {
        let m = self.rng.random_range(0..self.stores.len());
        let keys: Vec<&String> = self
            .history
            .keys()
            .filter(|k| self.stores[m].peek(k).is_none())
            .collect();
        if keys.is_empty() || self.wiped == Some(m) {
            return format!("put back: m{m} holds every old object");
        }
        let key = keys[self.rng.random_range(0..keys.len())].clone();
        self.stores[m].plant(&key, self.history[&key].clone());
        format!("put back {key} on m{m}")
    }

    fn pool_repair(&mut self, c: usize) -> Result<String> {
        if self.stores.len() < 2 {
            return Ok("pool repair: a single store".into());
        }
        let pool = Arc::new(Pool::from_stores(self.client_doors(c), self.quorum));
        // Opening sets the verifier: copies are authenticated first.
        Repository::open(pool.clone(), PASSWORD)?;
        let read_data = self.corrupted;
        let r = strata::pool::status::repair(&pool, false, read_data);
        if !r.errors.is_empty() {
            bail!("pool repair: {}", r.errors.join("; "));
        }
        if !r.verified {
            bail!("pool repair did not verify copies");
        }
        self.wiped = None;
        self.corrupted = false;
        // Declared whole: each member alone holds every live snapshot. Not
        // promised where listings are late: repair copies what it lists.
        if self.rates.stale_list > 0 {
            return Ok(format!(
                "pool repair (late listings): copied {:?}",
                r.copied
            ));
        }
        for (i, store) in self.stores.iter().enumerate() {
            let repo = Repository::open(store.clone(), PASSWORD)
                .with_context(|| format!("member m{i} alone, after pool repair"))?;
            let live = self.live_snapshots();
            Self::verify_snapshots(&repo, &live, &self.acked, &self.forgotten, &self.limbo)
                .with_context(|| format!("member m{i} alone, after pool repair said whole"))
                .map_err(Invariant::wrap)?;
            let report = check(&repo, ReadData::All)?;
            if !report.errors.is_empty() {
                return Err(Invariant::wrap(anyhow::anyhow!(
                    "check on member m{i} after pool repair: {}",
                    report.errors.join("; ")
                )));
            }
        }
        Ok(format!(
            "pool repair{}: copied {:?}, replaced {:?}",
            if read_data { " --read-data" } else { "" },
            r.copied,
            r.replaced
        ))
    }

    /// Restores a snapshot through the client's faulty doors with the
    /// restore command's own code. It may fail (faults); it may never leave
    /// a file under its own name with other bytes than were backed up, and
    /// when it reports success every file is there.
    fn restore(&mut self, c: usize, id: Id) -> Result<String> {
        let repo = self.client_repo(c)?;
        let (_, snapshot) = repo.find_snapshot(&id.to_hex())?;
        let target = self._tmp.path().join(format!("restore-{}", self.step));
        let result = strata::restore::restore(
            &repo,
            &snapshot,
            &strata::restore::RestoreOptions {
                target: target.clone(),
                includes: Vec::new(),
                verify: false,
                threads: 2,
                progress: Arc::default(),
                overwrite: Default::default(),
                stop: Arc::default(),
                delete: false,
                xattrs: false,
            },
        );
        let expected = &self.acked[&id];
        let complete =
            matches!(&result, Ok(r) if r.errors.is_empty() && r.damaged_files.is_empty());
        let mut wrong = None;
        for (key, bytes) in expected {
            match std::fs::read(target.join(key)) {
                Ok(got) if got != *bytes => wrong = Some(format!("{key}: other bytes")),
                Err(e) if complete => wrong = Some(format!("{key}: {e}")),
                _ => {}
            }
        }
        let _ = std::fs::remove_dir_all(&target);
        if let Some(w) = wrong {
            return Err(Invariant::wrap(anyhow::anyhow!(
                "restore of {} {}: {w}",
                id.short(),
                if complete {
                    "reported success"
                } else {
                    "failed part-way"
                }
            )));
        }
        match result {
            Ok(r) => Ok(format!(
                "restore {}: {} files, {} errors, {} damaged",
                id.short(),
                r.files_restored,
                r.errors.len(),
                r.damaged_files.len()
            )),
            Err(e) => Err(e.context(format!("restore {}", id.short()))),
        }
    }

    /// Where a pack is, and which index files on each member name it: what
    /// a failing run prints to help find the cause.
    fn explain(&self, key: &str) -> String {
        let Some(pack) = key.rsplit('/').next().and_then(|h| h.parse::<Id>().ok()) else {
            return String::new();
        };
        let mut out = format!("where {key} is:\n");
        for (i, store) in self.stores.iter().enumerate() {
            let present = store.peek(key).is_some();
            let repo = match Repository::open(store.clone(), PASSWORD) {
                Ok(r) => r,
                Err(e) => {
                    out.push_str(&format!("  m{i}: present {present}; cannot open: {e:#}\n"));
                    continue;
                }
            };
            let recorded = repo.deleted().map(|d| d.contains(key));
            out.push_str(&format!(
                "  m{i}: present {present}; deletion recorded {recorded:?}\n"
            ));
            let mut files = Vec::new();
            for k in store.keys().into_iter().filter(|k| k.starts_with("index/")) {
                let Ok(id) = k["index/".len()..].parse::<Id>() else {
                    continue;
                };
                let Ok(file) = repo
                    .load_object(strata::repo::ObjectKind::Index, &id)
                    .and_then(|b| strata::repo::index::IndexFile::decode(&b))
                else {
                    out.push_str(&format!("    {k}: unreadable\n"));
                    continue;
                };
                files.push((id, file));
            }
            for (id, file) in &files {
                let superseded_by: Vec<String> = files
                    .iter()
                    .filter(|(_, f)| f.supersedes.contains(id))
                    .map(|(o, _)| o.short())
                    .collect();
                if file.packs.iter().any(|(p, _)| *p == pack) {
                    out.push_str(&format!(
                        "    index/{} names it; supersedes {:?}; superseded by {superseded_by:?}; in history {}\n",
                        id.short(),
                        file.supersedes.iter().map(|s| s.short()).collect::<Vec<_>>(),
                        self.history.contains_key(&format!("index/{id}")),
                    ));
                }
            }
        }
        out
    }

    fn live_snapshots(&self) -> Vec<Id> {
        self.acked
            .keys()
            .filter(|id| !self.forgotten.contains(id) && !self.limbo.contains(id))
            .copied()
            .collect()
    }

    /// Every live snapshot is listed and reads back as acknowledged; no
    /// forgotten snapshot is listed.
    fn verify_snapshots(
        repo: &Repository,
        live: &[Id],
        acked: &BTreeMap<Id, Content>,
        forgotten: &BTreeSet<Id>,
        limbo: &BTreeSet<Id>,
    ) -> Result<()> {
        let listed: BTreeMap<Id, strata::repo::snapshot::Snapshot> = repo
            .snapshots(strata::repo::OnDamage::Skip)?
            .objects
            .into_iter()
            .collect();
        for id in listed.keys() {
            if forgotten.contains(id) {
                bail!("forgotten snapshot {} came back", id.short());
            }
            if !acked.contains_key(id) && !limbo.contains(id) {
                // A backup that failed after its snapshot was written (a
                // lost acknowledgement) is allowed to exist.
            }
        }
        let index = repo.load_index()?;
        for id in live {
            let snap = listed
                .get(id)
                .with_context(|| format!("acknowledged snapshot {} is not listed", id.short()))?;
            let mut got = Content::new();
            read_tree(repo, &index, &snap.tree, "", &mut got)
                .with_context(|| format!("reading snapshot {}", id.short()))?;
            if got != acked[id] {
                bail!(
                    "snapshot {} reads back different: {} files, expected {}",
                    id.short(),
                    got.len(),
                    acked[id].len()
                );
            }
        }
        Ok(())
    }

    fn check_invariants(&mut self) -> Result<()> {
        let repo = Repository::open(self.oracle(), PASSWORD)?;
        let live = self.live_snapshots();
        Self::verify_snapshots(&repo, &live, &self.acked, &self.forgotten, &self.limbo)?;
        for s in &self.stores {
            for key in s.keys() {
                if !key.starts_with("data/")
                    && !key.starts_with("locks/")
                    && !self.history.contains_key(&key)
                    && let Some(b) = s.peek(&key)
                {
                    self.history.insert(key, b);
                }
            }
        }
        Ok(())
    }

    fn run(&mut self, steps: usize) -> Result<()> {
        for step in 0..steps {
            self.step = step;
            self.clock
                .advance(self.rng.random_range(0..1200) * self.rng.random_range(0..2));
            strata::entropy::set_simulated_now(self.clock.now());
            let c = self.rng.random_range(0..self.clients.len());
            if self.rng.random_range(0..10) == 0 {
                let at = self.rng.random_range(1..40);
                self.clients[c].faults.crash_at_write(at);
            }
            let started = std::time::Instant::now();
            let outcome = self.act(c);
            let crashed = self.clients[c].faults.crashed();
            let what = match &outcome {
                Ok(s) => s.clone(),
                Err(e) => format!("failed: {}", strata::error::one_line(e)),
            };
            self.log.push(format!(
                "step {step} {:.0}ms {}{}: {what}",
                started.elapsed().as_secs_f64() * 1000.0,
                self.clients[c].name,
                if crashed { " (crashed)" } else { "" }
            ));
            if let Err(e) = outcome
                && e.downcast_ref::<Invariant>().is_some()
            {
                return Err(e);
            }
            for i in 0..self.clients.len() {
                if self.clients[i].faults.crashed() {
                    // The client restarts with a fresh process.
                    let faults = ClientFaults::new(self.rng.random(), self.rates.clone());
                    self.clients[i].doors = self.doors(&faults);
                    self.clients[i].faults = faults;
                }
            }
            self.check_invariants()
                .with_context(|| format!("after step {step}"))?;
        }
        Ok(())
    }
}

/// Another client's command planned to run inside a backup.
struct Interleaving {
    client: usize,
    at: i64,
    victim: Option<Id>,
    outcome: Arc<std::sync::Mutex<Option<Result<String, String>>>>,
}

/// An invariant broken inside an action (as opposed to the action failing).
#[derive(Debug)]
struct Invariant(String);

impl std::fmt::Display for Invariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invariant broken: {}", self.0)
    }
}

impl std::error::Error for Invariant {}

impl Invariant {
    fn wrap(e: anyhow::Error) -> anyhow::Error {
        anyhow::Error::new(Invariant(format!("{e:#}")))
    }
}

fn read_tree(
    repo: &Repository,
    index: &strata::repo::index::Index,
    tree: &Id,
    prefix: &str,
    out: &mut Content,
) -> Result<()> {
    let tree = repo.read_tree(index, tree)?;
    for node in &tree.nodes {
        let name = String::from_utf8_lossy(&node.name.0).into_owned();
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        match node.kind {
            NodeKind::Dir => {
                let sub = node.subtree.context("a directory without a tree")?;
                read_tree(repo, index, &sub, &path, out)?;
            }
            NodeKind::File => {
                let mut bytes = Vec::new();
                for blob in &node.content {
                    bytes.extend(repo.read_blob(
                        index,
                        strata::repo::blob::BlobType::Data,
                        blob,
                    )?);
                }
                out.insert(path, bytes);
            }
            _ => {}
        }
    }
    Ok(())
}

fn run_seed(seed: u64, steps: usize) -> Result<(), String> {
    // Names (nonces, salts, ids) from the seed: the run replays exactly.
    strata::entropy::predictable_for_simulation(Some(seed));
    let mut sim = Sim::new(seed).map_err(|e| format!("seed {seed}: setup: {e:#}"))?;
    match sim.run(steps) {
        Ok(()) => {
            if std::env::var_os("STRATA_SIM_VERBOSE").is_some() {
                for l in &sim.log {
                    eprintln!("seed {seed}: {l}");
                }
            }
            Ok(())
        }
        Err(e) => {
            let verbose = std::env::var_os("STRATA_SIM_VERBOSE").is_some();
            let tail: Vec<&String> = sim
                .log
                .iter()
                .rev()
                .take(if verbose { usize::MAX } else { 25 })
                .collect();
            let mut msg = format!(
                "seed {seed} failed at step {}: {e:#}\nreplay: STRATA_SIM_SEED={seed} STRATA_SIM_STEPS={steps} cargo test --test simulation -- --nocapture\nsetup: {}\nlast steps (newest first):\n",
                sim.step, sim.log[0]
            );
            for l in tail {
                msg.push_str(&format!("  {l}\n"));
            }
            if let Some(key) = format!("{e:#}")
                .split_whitespace()
                .find(|w| w.starts_with("data/"))
            {
                msg.push_str(&sim.explain(key.trim_end_matches(':')));
            }
            Err(msg)
        }
    }
}

#[test]
fn seeded_simulation_keeps_every_invariant() {
    // SAFETY: set before any thread of this test binary reads them.
    unsafe {
        std::env::set_var("STRATA_NO_CACHE", "1");
        std::env::set_var(
            "STRATA_STATE_DIR",
            std::env::temp_dir().join("strata-sim-state"),
        );
    }
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let steps = env("STRATA_SIM_STEPS").unwrap_or(250) as usize;
    let seeds: Vec<u64> = match env("STRATA_SIM_SEED") {
        Some(one) => vec![one],
        None => {
            let n = env("STRATA_SIM_SEEDS").unwrap_or(16);
            let base = env("STRATA_SIM_BASE").unwrap_or(1);
            (base..base + n).collect()
        }
    };
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    for &seed in &seeds {
        if let Err(msg) = run_seed(seed, steps) {
            eprintln!("{msg}");
            failures.push(msg);
        }
    }
    eprintln!(
        "simulation: {} seeds x {steps} steps in {:.1}s, {} failed",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
