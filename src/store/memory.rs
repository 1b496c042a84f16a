//! An in-memory object store with injected faults, for library tests and the
//! deterministic consistency simulation (tests/simulation.rs).
//!
//! [`MemStore`] is the store itself: objects, each with the modification time
//! the store's own (possibly skewed) clock gave it. Used directly it never
//! fails, which makes it the simulation's oracle view. [`FaultyStore`] is one
//! client's door to a `MemStore`: it injects failures decided by a seeded
//! hash of (seed, store, operation, folder, how often this client did that
//! operation in that folder), so a run replays the same faults whatever the
//! threads' timing, and it can crash the client (every later request fails)
//! after a given number of writes.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{Backend, LocationMissing, NotFound, ObjectInfo};

/// A virtual clock in whole seconds, shared by the stores of a simulation.
#[derive(Debug)]
pub struct SimClock(AtomicI64);

impl SimClock {
    /// A clock starting at a fixed, arbitrary date (2026-01-01).
    pub fn new() -> Arc<SimClock> {
        Arc::new(SimClock(AtomicI64::new(1_767_225_600)))
    }
    /// Now, in seconds since the epoch.
    pub fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
    /// Moves time forward.
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs.max(0), Ordering::SeqCst);
    }
}

#[derive(Debug, Clone)]
struct Obj {
    bytes: Bytes,
    modified: i64,
}

/// An object store held in memory.
#[derive(Debug)]
pub struct MemStore {
    name: String,
    clock: Arc<SimClock>,
    /// Seconds this store's clock is ahead of the shared one (negative: behind).
    skew: i64,
    objects: Mutex<BTreeMap<String, Obj>>,
    present: AtomicBool,
}

impl MemStore {
    /// An empty store (its location exists) whose clock runs `skew` seconds
    /// off the shared `clock`.
    pub fn new(name: &str, clock: Arc<SimClock>, skew: i64) -> Arc<MemStore> {
        Arc::new(MemStore {
            name: name.to_string(),
            clock,
            skew,
            objects: Mutex::default(),
            present: AtomicBool::new(true),
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn now(&self) -> i64 {
        self.clock.now() + self.skew
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Obj>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loses everything, the location included (a wiped member).
    pub fn wipe(&self) {
        self.objects().clear();
        self.present.store(false, Ordering::SeqCst);
    }

    /// Every key held, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.objects().keys().cloned().collect()
    }

    /// The bytes of an object, if held.
    pub fn peek(&self, key: &str) -> Option<Bytes> {
        self.objects().get(key).map(|o| o.bytes.clone())
    }

    /// Puts bytes under a key without any of the checks a client makes
    /// (an old object put back, a corrupted copy).
    pub fn plant(&self, key: &str, bytes: Bytes) {
        let modified = self.now();
        self.objects()
            .insert(key.to_string(), Obj { bytes, modified });
    }

    fn check_present(&self) -> Result<()> {
        if self.present.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(anyhow!(LocationMissing(self.location())))
        }
    }
}

fn time(secs: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(secs, 0)
}

impl Backend for MemStore {
    fn location(&self) -> String {
        format!("mem://{}", self.name)
    }

    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.present.store(true, Ordering::SeqCst);
        self.plant(key, Bytes::from(bytes));
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.objects()
            .get(key)
            .map(|o| o.bytes.to_vec())
            .ok_or_else(|| anyhow!(NotFound(key.to_string())))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let objects = self.objects();
        let o = objects
            .get(key)
            .ok_or_else(|| anyhow!(NotFound(key.to_string())))?;
        let (start, end) = (range.start as usize, range.end as usize);
        if start > end || end > o.bytes.len() {
            bail!(
                "short read of {key}: {start}..{end} of {} bytes",
                o.bytes.len()
            );
        }
        Ok(o.bytes[start..end].to_vec())
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.check_present()?;
        Ok(self
            .objects()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, o)| ObjectInfo {
                key: k.clone(),
                size: o.bytes.len() as u64,
                modified: time(o.modified),
            })
            .collect())
    }

    fn size(&self, key: &str) -> Result<u64> {
        self.objects()
            .get(key)
            .map(|o| o.bytes.len() as u64)
            .ok_or_else(|| anyhow!(NotFound(key.to_string())))
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.objects().remove(key);
        Ok(())
    }

    fn exists(&self) -> Result<bool> {
        Ok(self.present.load(Ordering::SeqCst))
    }

    fn create(&self) -> Result<()> {
        self.present.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn default_uploads(&self) -> usize {
        1
    }
}

/// How often each kind of fault strikes, in thousandths of the requests of
/// that kind.
#[derive(Debug, Clone, Default)]
pub struct FaultRates {
    /// A listing fails.
    pub list_fails: u32,
    /// A read fails (I/O error, not "missing").
    pub read_fails: u32,
    /// A write fails before it is stored.
    pub write_fails: u32,
    /// A write is stored, but the client is told it failed.
    pub write_lost_ack: u32,
    /// A write is applied twice (harmless for content-named objects).
    pub write_duplicated: u32,
    /// A delete fails.
    pub delete_fails: u32,
    /// A listing leaves out objects written in the last ten seconds.
    pub stale_list: u32,
}

/// Something to run in the middle of a client's command.
type Interleaved = Box<dyn FnOnce() + Send>;

/// One client's faults: rates, the seed, the crash point, and another
/// client's command to run in the middle of this one's.
pub struct ClientFaults {
    seed: u64,
    rates: FaultRates,
    /// Writes (puts and deletes) left before the client crashes; negative: never.
    writes_left: AtomicI64,
    crashed: AtomicBool,
    counters: Mutex<HashMap<(String, &'static str, String), u32>>,
    /// Writes attempted so far.
    writes: AtomicI64,
    /// Run before the given write (by count).
    interleaved: Mutex<Option<(i64, Interleaved)>>,
}

impl std::fmt::Debug for ClientFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientFaults")
            .field("seed", &self.seed)
            .field("rates", &self.rates)
            .finish_non_exhaustive()
    }
}

impl ClientFaults {
    /// Faults at `rates`, decided by `seed`; no crash planned.
    pub fn new(seed: u64, rates: FaultRates) -> Arc<ClientFaults> {
        Arc::new(ClientFaults {
            seed,
            rates,
            writes_left: AtomicI64::new(-1),
            crashed: AtomicBool::new(false),
            counters: Mutex::default(),
            writes: AtomicI64::new(0),
            interleaved: Mutex::default(),
        })
    }

    /// Runs `f` just before the client's `n`-th write from now on (another
    /// client's command, in the middle of this one's). Dropped unrun if the
    /// client writes less.
    pub fn interleave_at_write(&self, n: i64, f: Interleaved) {
        let at = self.writes.load(Ordering::SeqCst) + n.max(1);
        *self.interleaved.lock().unwrap_or_else(|e| e.into_inner()) = Some((at, f));
    }

    /// Drops an interleaved command that did not run.
    pub fn clear_interleaved(&self) -> bool {
        self.interleaved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .is_some()
    }

    /// Crashes the client when it attempts its `n`-th write from now on
    /// (that write and everything after it fail).
    pub fn crash_at_write(&self, n: i64) {
        self.writes_left.store(n.max(1), Ordering::SeqCst);
    }

    /// True once the planned crash happened.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Whether a fault of `rate` strikes this request: a hash of the seed,
    /// the store, the operation, the folder of the key and how many times
    /// this client did that operation in that folder. Names are left out
    /// (object names hold random keys and nonces, and differ from run to
    /// run); requests in one folder come in a fixed order from one thread,
    /// so a seed replays the same faults.
    fn strikes(&self, store: &str, op: &'static str, key: &str, rate: u32) -> bool {
        if rate == 0 {
            return false;
        }
        let folder = key.split('/').next().unwrap_or_default().to_string();
        let n = {
            let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
            let slot = c
                .entry((store.to_string(), op, folder.clone()))
                .or_default();
            *slot += 1;
            *slot
        };
        let mut h = blake3::Hasher::new();
        h.update(&self.seed.to_le_bytes());
        h.update(store.as_bytes());
        h.update(op.as_bytes());
        h.update(folder.as_bytes());
        h.update(&n.to_le_bytes());
        let v = u32::from_le_bytes(h.finalize().as_bytes()[..4].try_into().expect("4 bytes"));
        v % 1000 < rate
    }

    fn check_crash(&self, write: bool) -> Result<()> {
        if self.crashed() {
            bail!("simulated crash: the client is gone");
        }
        if write {
            let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
            let due = {
                let mut slot = self.interleaved.lock().unwrap_or_else(|e| e.into_inner());
                match slot.as_ref() {
                    Some((at, _)) if *at == n => slot.take().map(|(_, f)| f),
                    _ => None,
                }
            };
            if let Some(f) = due {
                f();
            }
            let left = self.writes_left.load(Ordering::SeqCst);
            if left > 0 && self.writes_left.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.crashed.store(true, Ordering::SeqCst);
                bail!("simulated crash: the client is gone");
            }
        }
        Ok(())
    }
}

/// A client's faulty door to a [`MemStore`].
pub struct FaultyStore {
    store: Arc<MemStore>,
    faults: Arc<ClientFaults>,
    /// The store is down for this client: every request fails.
    pub down: AtomicBool,
}

impl FaultyStore {
    /// A door to `store` with `faults`.
    pub fn new(store: Arc<MemStore>, faults: Arc<ClientFaults>) -> Arc<FaultyStore> {
        Arc::new(FaultyStore {
            store,
            faults,
            down: AtomicBool::new(false),
        })
    }

    fn gate(&self, write: bool) -> Result<()> {
        self.faults.check_crash(write)?;
        if self.down.load(Ordering::SeqCst) {
            bail!(
                "cannot reach the endpoint (simulated outage of {})",
                self.store.name
            );
        }
        Ok(())
    }

    fn fault(&self, op: &'static str, key: &str, rate: u32) -> bool {
        self.faults.strikes(&self.store.name, op, key, rate)
    }
}

impl Backend for FaultyStore {
    fn location(&self) -> String {
        self.store.location()
    }

    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.gate(true)?;
        let r = &self.faults.rates;
        if self.fault("put", key, r.write_fails) {
            bail!("simulated write failure of {key}");
        }
        self.store.put(key, bytes.clone())?;
        if self.fault("dup", key, r.write_duplicated) {
            self.store.put(key, bytes)?;
        }
        if self.fault("ack", key, r.write_lost_ack) {
            bail!("simulated lost answer to the write of {key}");
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.gate(false)?;
        if self.fault("get", key, self.faults.rates.read_fails) {
            bail!("simulated read failure of {key}");
        }
        self.store.get(key)
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        self.gate(false)?;
        if self.fault("get", key, self.faults.rates.read_fails) {
            bail!("simulated read failure of {key}");
        }
        self.store.get_range(key, range)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.gate(false)?;
        let r = &self.faults.rates;
        if self.fault("list", prefix, r.list_fails) {
            bail!("simulated listing failure of {prefix}");
        }
        let mut all = self.store.list(prefix)?;
        if self.fault("stale", prefix, r.stale_list) {
            let cutoff = time(self.store.now() - 10);
            all.retain(|o| o.modified <= cutoff);
        }
        Ok(all)
    }

    fn size(&self, key: &str) -> Result<u64> {
        self.gate(false)?;
        if self.fault("get", key, self.faults.rates.read_fails) {
            bail!("simulated read failure of {key}");
        }
        self.store.size(key)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.gate(true)?;
        if self.fault("delete", key, self.faults.rates.delete_fails) {
            bail!("simulated delete failure of {key}");
        }
        self.store.delete(key)
    }

    fn exists(&self) -> Result<bool> {
        self.gate(false)?;
        self.store.exists()
    }

    fn create(&self) -> Result<()> {
        self.gate(true)?;
        self.store.create()
    }

    fn default_uploads(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_replay_by_seed() {
        let run = |seed| {
            let store = MemStore::new("m", SimClock::new(), 0);
            let faults = ClientFaults::new(
                seed,
                FaultRates {
                    write_fails: 300,
                    ..FaultRates::default()
                },
            );
            let door = FaultyStore::new(store, faults);
            (0..200)
                .map(|i| door.put(&format!("k{}", i % 7), vec![1]).is_ok())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let failures = run(7).iter().filter(|ok| !**ok).count();
        assert!((30..100).contains(&failures), "{failures} of 200 failed");
    }

    #[test]
    fn crash_stops_every_later_request() {
        let store = MemStore::new("m", SimClock::new(), 0);
        let faults = ClientFaults::new(1, FaultRates::default());
        let door = FaultyStore::new(store.clone(), faults.clone());
        faults.crash_at_write(2);
        door.put("a", vec![1]).unwrap();
        assert!(door.put("b", vec![2]).is_err());
        assert!(door.get("a").is_err());
        assert!(faults.crashed());
        assert_eq!(store.keys(), vec!["a".to_string()]);
    }

    #[test]
    fn wiped_store_lists_as_missing() {
        let store = MemStore::new("m", SimClock::new(), 0);
        store.put("a", vec![1]).unwrap();
        store.wipe();
        let err = store.list("").unwrap_err();
        assert!(crate::store::is_location_missing(&err));
    }
}
