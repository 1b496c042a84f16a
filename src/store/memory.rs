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
///
/// Everything is decided from the seed and object names, never from the
/// timing of threads: a fault strikes by a hash of the seed, the member, the
/// operation, the name and how many times this client did that operation on
/// that name there; writes (puts and deletes) are counted by name, so the
/// same object written to several pool members at once is one write, its
/// number given by whichever member sees it first. With the simulation's
/// predictable names (`crate::entropy`), a seed replays exactly.
pub struct ClientFaults {
    seed: u64,
    rates: FaultRates,
    /// The write (by number) at which the client crashes; negative: never.
    crash_at: AtomicI64,
    crashed: AtomicBool,
    counters: Mutex<HashMap<(String, &'static str, String), u32>>,
    /// Writes so far, and the number of each written name.
    writes: Mutex<Writes>,
    /// Run before the given write (by number).
    interleaved: Mutex<Option<(i64, Interleaved)>>,
}

#[derive(Default)]
struct Writes {
    count: i64,
    /// The number of each (name, k-th write of it on a member).
    numbers: HashMap<(String, u32), i64>,
    /// How many times each member wrote each name.
    per_member: HashMap<(String, String), u32>,
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
            crash_at: AtomicI64::new(-1),
            crashed: AtomicBool::new(false),
            counters: Mutex::default(),
            writes: Mutex::default(),
            interleaved: Mutex::default(),
        })
    }

    fn writes_so_far(&self) -> i64 {
        self.writes.lock().unwrap_or_else(|e| e.into_inner()).count
    }

    /// Runs `f` just before the client's `n`-th write from now on (another
    /// client's command, in the middle of this one's). Dropped unrun if the
    /// client writes less.
    pub fn interleave_at_write(&self, n: i64, f: Interleaved) {
        let at = self.writes_so_far() + n.max(1);
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

    /// Crashes the client at its `n`-th write from now on: that write lands
    /// on some members (chosen by the seed) and not on others, and every
    /// later request fails.
    pub fn crash_at_write(&self, n: i64) {
        self.crash_at
            .store(self.writes_so_far() + n.max(1), Ordering::SeqCst);
    }

    /// True once the planned crash happened.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    fn hash_below(&self, parts: &[&[u8]], rate: u32) -> bool {
        let mut h = blake3::Hasher::new();
        h.update(&self.seed.to_le_bytes());
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        let v = u32::from_le_bytes(h.finalize().as_bytes()[..4].try_into().expect("4 bytes"));
        v % 1000 < rate
    }

    /// Whether a fault of `rate` strikes this request (see the type's
    /// documentation).
    fn strikes(&self, store: &str, op: &'static str, key: &str, rate: u32) -> bool {
        if rate == 0 {
            return false;
        }
        let n = {
            let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
            let slot = c
                .entry((store.to_string(), op, key.to_string()))
                .or_default();
            *slot += 1;
            *slot
        };
        self.hash_below(
            &[
                store.as_bytes(),
                op.as_bytes(),
                key.as_bytes(),
                &n.to_le_bytes(),
            ],
            rate,
        )
    }

    /// Fails every request after the crash; for a write (`Some(name)`),
    /// numbers it, runs the interleaved command due before it, and crashes
    /// at the planned one.
    fn check_crash(&self, store: &str, write: Option<&str>) -> Result<()> {
        let Some(name) = write else {
            if self.crashed() {
                bail!("simulated crash: the client is gone");
            }
            return Ok(());
        };
        // Held while the interleaved command runs: the other members' writes
        // of the same name wait for it, as they would behind one request.
        let mut writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        let k = {
            let slot = writes
                .per_member
                .entry((store.to_string(), name.to_string()))
                .or_default();
            *slot += 1;
            *slot
        };
        let number = match writes.numbers.get(&(name.to_string(), k)) {
            Some(&n) => n,
            None => {
                writes.count += 1;
                let n = writes.count;
                writes.numbers.insert((name.to_string(), k), n);
                let due = {
                    let mut slot = self.interleaved.lock().unwrap_or_else(|e| e.into_inner());
                    match slot.as_ref() {
                        Some((at, _)) if *at == n && !self.crashed() => slot.take().map(|(_, f)| f),
                        _ => None,
                    }
                };
                if let Some(f) = due {
                    f();
                }
                n
            }
        };
        let crash_at = self.crash_at.load(Ordering::SeqCst);
        if crash_at > 0 && number >= crash_at {
            self.crashed.store(true, Ordering::SeqCst);
            let lands = number == crash_at
                && self.hash_below(&[store.as_bytes(), b"crash", name.as_bytes()], 500);
            if !lands {
                bail!("simulated crash: the client is gone");
            }
        } else if self.crashed() {
            bail!("simulated crash: the client is gone");
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

    fn gate(&self, write: Option<&str>) -> Result<()> {
        self.faults.check_crash(&self.store.name, write)?;
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
        self.gate(Some(key))?;
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
        self.gate(None)?;
        if self.fault("get", key, self.faults.rates.read_fails) {
            bail!("simulated read failure of {key}");
        }
        self.store.get(key)
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        self.gate(None)?;
        if self.fault("get", key, self.faults.rates.read_fails) {
            bail!("simulated read failure of {key}");
        }
        self.store.get_range(key, range)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.gate(None)?;
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
        self.gate(None)?;
        if self.fault("get", key, self.faults.rates.read_fails) {
            bail!("simulated read failure of {key}");
        }
        self.store.size(key)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.gate(Some(&format!("delete {key}")))?;
        if self.fault("delete", key, self.faults.rates.delete_fails) {
            bail!("simulated delete failure of {key}");
        }
        self.store.delete(key)
    }

    fn exists(&self) -> Result<bool> {
        self.gate(None)?;
        self.store.exists()
    }

    fn create(&self) -> Result<()> {
        self.gate(Some("create"))?;
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
        // The crashing write lands or not, as the seed says; nothing after.
        let _ = door.put("b", vec![2]);
        assert!(faults.crashed());
        assert!(door.put("c", vec![3]).is_err());
        assert!(door.get("a").is_err());
        let keys = store.keys();
        assert!(keys.contains(&"a".to_string()) && !keys.contains(&"c".to_string()));

        // One write to several members is one write: it crashes on all of
        // them at once, landing on the ones the seed picks.
        let stores: Vec<_> = (0..8)
            .map(|i| MemStore::new(&format!("m{i}"), SimClock::new(), 0))
            .collect();
        let faults = ClientFaults::new(3, FaultRates::default());
        let doors: Vec<_> = stores
            .iter()
            .map(|s| FaultyStore::new(s.clone(), faults.clone()))
            .collect();
        faults.crash_at_write(1);
        let landed: Vec<bool> = doors.iter().map(|d| d.put("x", vec![1]).is_ok()).collect();
        assert!(
            landed.iter().any(|l| *l) && landed.iter().any(|l| !*l),
            "{landed:?}"
        );
        for (s, l) in stores.iter().zip(&landed) {
            assert_eq!(s.peek("x").is_some(), *l);
        }
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
