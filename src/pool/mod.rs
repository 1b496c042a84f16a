//! The virtual storage pool: several object stores under one repository.
//!
//! Placement is `mirror`: every object goes to every member and a write
//! succeeds once `write_quorum` members hold it. A member that misses a write
//! is *lagging* for the rest of the session: it gets no further writes, so the
//! per-member order "packs, then index, then snapshot" can never be broken.
//! Before a snapshot (the commit point) is written, lagging members are healed
//! by copying what they missed, in the order it was written; a member that
//! cannot be healed does not get the snapshot, and `pool status` / `pool
//! repair` deal with it later.
//!
//! Reads go to the fastest healthy member first and fail over per object when
//! an object is missing, unreadable, or rejected by the caller's verification
//! (authentication failure).

pub mod config;
pub mod status;

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;

use crate::store::{
    Backend, NotFound, ObjectInfo, Replicated, StoreListing, Unsettled, Verifier,
    is_location_missing, is_not_found, open_store,
};
use config::PoolConfig;

/// One member of the pool.
pub struct Member {
    /// Name from the config.
    pub name: String,
    /// Its store.
    pub backend: Arc<dyn Backend>,
    /// Read preference (lower first).
    pub read_priority: u32,
    served: AtomicU64,
}

/// A mirrored pool of members.
pub struct Pool {
    members: Vec<Member>,
    write_quorum: usize,
    /// Read preference: member positions, best first.
    order: Mutex<Vec<usize>>,
    /// Members that missed writes this session, with the keys they missed in order.
    lagging: Mutex<Vec<(usize, Vec<String>)>>,
    notices: Mutex<Vec<String>>,
    /// Members already reported as lacking objects.
    gap_warned: Mutex<Vec<usize>>,
    /// Copies rejected by verification.
    bad_copies: Mutex<Vec<String>>,
    /// Damaged copies to overwrite: (key, damaged member, member that
    /// served a good copy).
    to_heal: Mutex<Vec<(String, usize, usize)>>,
    /// Checks copies before they are written to another member; without
    /// one, only what can be checked without the key is (see `verify_copy`).
    verifier: RwLock<Option<Verifier>>,
    /// Members already reported as still missing objects after healing.
    still_missing_said: Mutex<std::collections::HashSet<usize>>,
}

/// A callback that gets the bytes of one read.
type Accept<'a> = dyn FnMut(&[u8]) -> Result<()> + 'a;

/// One member's read of an object, handing its bytes to the callback.
type MemberRead<'a> = dyn Fn(&dyn Backend, &mut Accept<'_>) -> Result<()> + 'a;

/// Runs `f` on each of `targets` at once (one thread per member: requests to
/// different providers overlap) and returns the results in order.
pub(crate) fn on_members<T: Send>(
    members: &[Member],
    targets: &[usize],
    f: impl Fn(&dyn Backend) -> T + Sync,
) -> Vec<T> {
    if targets.len() == 1 {
        return vec![f(members[targets[0]].backend.as_ref())];
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .map(|&i| {
                let (f, b) = (&f, members[i].backend.as_ref());
                s.spawn(move || f(b))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("pool member thread"))
            .collect()
    })
}

impl Pool {
    /// Opens every member of a pool config.
    pub fn open(cfg: &PoolConfig) -> Result<Pool> {
        let write_quorum = cfg.validate()?;
        let mut members = Vec::new();
        for m in &cfg.members {
            let backend = open_store(&m.url, &m.options, m.object_lock.as_ref(), &m.storage_class)
                .map_err(|e| anyhow!("pool member {}: {e:#}", m.name))?;
            members.push(Member {
                name: m.name.clone(),
                backend: Arc::new(backend),
                read_priority: m.read_priority,
                served: AtomicU64::new(0),
            });
        }
        Ok(Self::with_members(members, write_quorum))
    }

    /// A pool of ready stores (named), for tests and the simulation.
    pub fn from_stores(stores: Vec<(String, Arc<dyn Backend>)>, write_quorum: usize) -> Pool {
        let members = stores
            .into_iter()
            .map(|(name, backend)| Member {
                name,
                backend,
                read_priority: 100,
                served: AtomicU64::new(0),
            })
            .collect::<Vec<_>>();
        let quorum = write_quorum.clamp(1, members.len().max(1));
        Self::with_members(members, quorum)
    }

    fn with_members(members: Vec<Member>, write_quorum: usize) -> Pool {
        let order = (0..members.len()).collect();
        Pool {
            members,
            write_quorum,
            order: Mutex::new(order),
            lagging: Mutex::default(),
            notices: Mutex::default(),
            gap_warned: Mutex::default(),
            bad_copies: Mutex::default(),
            to_heal: Mutex::default(),
            verifier: RwLock::default(),
            still_missing_said: Mutex::default(),
        }
    }

    /// The members.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Orders reads by configured priority, then by how fast each member
    /// answers a small request; members that fail go last.
    pub fn rank_members(&self, probe_key: &str) {
        let all: Vec<usize> = (0..self.members.len()).collect();
        let probes = on_members(&self.members, &all, |b| {
            let t = Instant::now();
            // A member that lacks the probe object is behind, like a failing one.
            let ok = b.size(probe_key).is_ok();
            (ok, t.elapsed())
        });
        let mut order: Vec<usize> = (0..self.members.len()).collect();
        order.sort_by_key(|&i| (self.members[i].read_priority, !probes[i].0, probes[i].1));
        *self.order.lock().expect("order") = order;
    }

    fn notice(&self, msg: String) {
        self.notices.lock().expect("notices").push(msg);
    }

    fn note_gap(&self, member: usize) {
        let mut warned = self.gap_warned.lock().expect("gap warnings");
        if !warned.contains(&member) {
            warned.push(member);
            self.notice(format!(
                "pool member {} lacks objects the other members hold; reading from the others (see `strata pool status`, then `strata pool repair`)",
                self.members[member].name
            ));
        }
    }

    fn member_pos(&self, name: &str) -> usize {
        self.members
            .iter()
            .position(|m| m.name == name)
            .expect("a member of this pool")
    }

    fn demote(&self, member: usize) {
        // The simulation keeps the order fixed: with reads on several
        // threads, which read saw a demotion first would depend on timing,
        // and a seed would not replay the same reads.
        if crate::entropy::in_simulation() {
            return;
        }
        let mut order = self.order.lock().expect("order");
        if let Some(pos) = order.iter().position(|&i| i == member) {
            let m = order.remove(pos);
            order.push(m);
        }
    }

    fn is_lagging(&self, member: usize) -> bool {
        self.lagging
            .lock()
            .expect("lagging")
            .iter()
            .any(|(m, _)| *m == member)
    }

    fn mark_missed(&self, member: usize, key: &str) {
        let mut lagging = self.lagging.lock().expect("lagging");
        match lagging.iter_mut().find(|(m, _)| *m == member) {
            Some((_, keys)) => keys.push(key.to_string()),
            None => lagging.push((member, vec![key.to_string()])),
        }
    }

    /// Copies what lagging members missed, in write order, from members that
    /// hold it. Members healed completely stop lagging.
    fn heal(&self) {
        let lagging = std::mem::take(&mut *self.lagging.lock().expect("lagging"));
        let mut still = Vec::new();
        for (member, keys) in lagging {
            let mut done = 0;
            for key in &keys {
                let copied = self
                    .fetch_from_others(member, key)
                    .and_then(|bytes| self.members[member].backend.put(key, bytes.to_vec()));
                match copied {
                    Ok(()) => done += 1,
                    Err(e) => {
                        // Healing runs before the commit check and again at
                        // the snapshot write: say it once per member.
                        if !self.still_missing_said.lock().expect("said").insert(member) {
                            break;
                        }
                        self.notice(format!(
                            "pool member {} is still missing {} object(s) (first: {key}): {}; run `strata pool repair` when it is back",
                            self.members[member].name,
                            keys.len() - done,
                            crate::error::one_line(&e)
                        ));
                        break;
                    }
                }
            }
            if done < keys.len() {
                still.push((member, keys[done..].to_vec()));
            }
        }
        self.lagging.lock().expect("lagging").extend(still);
    }

    /// A verified copy of `key` from a member other than `except`: a copy
    /// that fails verification is never spread to another member.
    pub(crate) fn fetch_from_others(&self, except: usize, key: &str) -> Result<Bytes> {
        let order = self.order.lock().expect("order").clone();
        let mut problems = Vec::new();
        for i in order.into_iter().filter(|&i| i != except) {
            let m = &self.members[i];
            match m.backend.get(key) {
                Ok(b) => match self.verify_copy(key, &b) {
                    Ok(()) => return Ok(Bytes::from(b)),
                    Err(e) => problems.push(format!(
                        "bad copy on member {} ({})",
                        m.name,
                        crate::error::one_line(&e)
                    )),
                },
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    problems.push(format!("member {}: {}", m.name, crate::error::one_line(&e)))
                }
            }
        }
        if problems.is_empty() {
            bail!("no other member holds {key}");
        }
        bail!("no good copy of {key} to copy: {}", problems.join("; "))
    }

    /// Checks bytes about to be copied to another member: with the
    /// repository's verifier (set once the repository is unlocked) every
    /// object is authenticated; without it, objects named by the hash of
    /// their bytes (key files, deletion records) are still checked.
    pub(crate) fn verify_copy(&self, key: &str, bytes: &[u8]) -> Result<()> {
        if let Some(v) = self.verifier.read().expect("verifier").as_ref() {
            return v(key, bytes);
        }
        crate::repo::layout::verify_plain_named(key, bytes)
    }

    /// True when copies are authenticated before they are spread.
    pub fn verifies_copies(&self) -> bool {
        self.verifier.read().expect("verifier").is_some()
    }

    /// Tries members in read order until one yields bytes `accept` takes.
    /// `read` runs one member's read, handing the bytes to the callback it
    /// is given.
    fn read_with(
        &self,
        key: &str,
        read: &MemberRead<'_>,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let order = self.order.lock().expect("order").clone();
        let mut problems = Vec::new();
        let mut missing_on = Vec::new();
        let mut damaged_on = Vec::new();
        let mut all_missing = true;
        let mut unsettled = false;
        for i in order {
            let m = &self.members[i];
            // Tell the caller's verdict apart from the member's own failure.
            let mut verdict: Option<Result<()>> = None;
            let mut len = 0;
            let outcome = read(m.backend.as_ref(), &mut |bytes| {
                len = bytes.len();
                let r = accept(bytes);
                let failed = r.as_ref().err().map(|e| anyhow!("{e:#}"));
                verdict = Some(r);
                failed.map_or(Ok(()), Err)
            });
            match (outcome, verdict) {
                (Ok(()), _) => {
                    m.served.fetch_add(len as u64, Ordering::Relaxed);
                    // A member that lacks what another holds is behind:
                    // read from it last, and say so once per session.
                    for &gap in &missing_on {
                        self.demote(gap);
                        self.note_gap(gap);
                    }
                    self.to_heal
                        .lock()
                        .expect("to heal")
                        .extend(damaged_on.iter().map(|&bad| (key.to_string(), bad, i)));
                    if !problems.is_empty() {
                        self.notice(format!(
                            "{key}: {}; served by member {}",
                            problems.join("; "),
                            m.name
                        ));
                    }
                    return Ok(());
                }
                (Err(_), Some(Err(e))) => {
                    all_missing = false;
                    damaged_on.push(i);
                    self.bad_copies
                        .lock()
                        .expect("bad copies")
                        .push(format!("{key} on member {}", m.name));
                    problems.push(format!(
                        "bad copy on member {} ({})",
                        m.name,
                        crate::error::one_line(&e)
                    ));
                }
                (Err(e), _) if is_not_found(&e) || is_location_missing(&e) => {
                    missing_on.push(i);
                }
                (Err(e), _) => {
                    all_missing = false;
                    unsettled = true;
                    self.demote(i);
                    problems.push(format!("member {}: {}", m.name, crate::error::one_line(&e)));
                }
            }
        }
        if all_missing {
            return Err(anyhow!(NotFound(key.to_string())));
        }
        let msg = format!(
            "{key}: no pool member has a good copy ({})",
            problems.join("; ")
        );
        // A member that could not be read may hold a good copy: the object
        // is not known to be damaged, whatever the others held.
        if unsettled {
            return Err(anyhow!(Unsettled).context(msg));
        }
        Err(anyhow!(msg))
    }

    /// Every member's listing of `prefix`, or the reasons some could not
    /// list (a member whose location is gone counts as failing).
    fn list_members(&self, prefix: &str) -> Vec<Result<Vec<ObjectInfo>>> {
        let all: Vec<usize> = (0..self.members.len()).collect();
        on_members(&self.members, &all, |b| b.list(prefix))
    }
}

impl Backend for Pool {
    fn location(&self) -> String {
        let names: Vec<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
        format!("pool [{}]", names.join(", "))
    }

    fn default_uploads(&self) -> usize {
        self.members
            .iter()
            .map(|m| m.backend.default_uploads())
            .max()
            .unwrap_or(4)
    }

    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.put_parts(key, &[Bytes::from(bytes)])
    }

    fn put_parts(&self, key: &str, parts: &[Bytes]) -> Result<()> {
        if crate::repo::layout::is_commit_point(key) {
            self.heal();
        }
        let targets: Vec<usize> = (0..self.members.len())
            .filter(|&i| !self.is_lagging(i))
            .collect();
        let results = on_members(&self.members, &targets, |b| b.put_parts(key, parts));
        let mut ok = 0;
        let mut errors = Vec::new();
        for (&i, r) in targets.iter().zip(results) {
            match r {
                Ok(()) => ok += 1,
                Err(e) => {
                    let msg = format!(
                        "member {}: {}",
                        self.members[i].name,
                        crate::error::one_line(&e)
                    );
                    self.notice(format!("{msg}; it will be healed from the others"));
                    errors.push(msg);
                    self.mark_missed(i, key);
                }
            }
        }
        for i in (0..self.members.len()).filter(|i| !targets.contains(i)) {
            self.mark_missed(i, key);
        }
        if ok < self.write_quorum {
            bail!(
                "write quorum not reached for {key}: {ok} of {} members took it, {} needed ({})",
                self.members.len(),
                self.write_quorum,
                errors.join("; ")
            );
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read(key, &mut |b| {
            out = b.to_vec();
            Ok(())
        })?;
        Ok(out)
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_range(key, range, &mut |b| {
            out = b.to_vec();
            Ok(())
        })?;
        Ok(out)
    }

    fn read(&self, key: &str, accept: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.read_with(key, &|b, take| b.read(key, take), accept)
    }

    fn read_range(
        &self,
        key: &str,
        range: Range<u64>,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.read_with(
            key,
            &|b, take| b.read_range(key, range.clone(), take),
            accept,
        )
    }

    /// The union of what every member holds. A member that fails to list is
    /// left out with a notice: enough for backup and restore, which read
    /// what they find and fail over per object. Whatever deletes uses
    /// [`Backend::list_each`] instead.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut seen = std::collections::BTreeMap::new();
        let mut failures = Vec::new();
        for (m, r) in self.members.iter().zip(self.list_members(prefix)) {
            match r {
                Ok(list) => {
                    for o in list {
                        crate::store::merge_newest(&mut seen, o);
                    }
                }
                // A member that lost its location holds nothing.
                Err(e) if is_location_missing(&e) => {
                    self.note_gap(self.member_pos(&m.name));
                }
                Err(e) => {
                    failures.push(format!("member {}: {}", m.name, crate::error::one_line(&e)))
                }
            }
        }
        if failures.len() == self.members.len() {
            bail!(
                "no pool member could list {prefix}: {}",
                failures.join("; ")
            );
        }
        for f in failures {
            self.notice(format!("{f}; listed the other members only"));
        }
        Ok(seen.into_values().collect())
    }

    fn list_each(&self, prefix: &str) -> Result<Vec<StoreListing>> {
        let mut out = Vec::new();
        let mut failures = Vec::new();
        for (m, r) in self.members.iter().zip(self.list_members(prefix)) {
            match r {
                Ok(objects) => out.push(StoreListing {
                    store: m.name.clone(),
                    objects,
                }),
                Err(e) => {
                    failures.push(format!("member {}: {}", m.name, crate::error::one_line(&e)))
                }
            }
        }
        if !failures.is_empty() {
            bail!(
                "not every pool member could list {prefix} ({}): nothing is deleted on a partial view; \
                 bring the member back (`strata pool status`, `strata pool repair`) and run again",
                failures.join("; ")
            );
        }
        Ok(out)
    }

    fn size(&self, key: &str) -> Result<u64> {
        let order = self.order.lock().expect("order").clone();
        let mut errors = Vec::new();
        let mut all_missing = true;
        for i in order {
            match self.members[i].backend.size(key) {
                Ok(s) => return Ok(s),
                Err(e) => {
                    if !is_not_found(&e) {
                        all_missing = false;
                    }
                    errors.push(format!(
                        "member {}: {}",
                        self.members[i].name,
                        crate::error::one_line(&e)
                    ));
                }
            }
        }
        if all_missing {
            return Err(anyhow!(NotFound(key.to_string())));
        }
        bail!("{key}: {}", errors.join("; "))
    }

    fn delete(&self, key: &str) -> Result<()> {
        let all: Vec<usize> = (0..self.members.len()).collect();
        let results = on_members(&self.members, &all, |b| b.delete(key));
        let errors: Vec<String> = self
            .members
            .iter()
            .zip(results)
            .filter_map(|(m, r)| {
                r.err()
                    .map(|e| format!("member {}: {}", m.name, crate::error::one_line(&e)))
            })
            .collect();
        if !errors.is_empty() {
            bail!("deleting {key}: {}", errors.join("; "));
        }
        Ok(())
    }

    fn delete_refused(&self, key: &str) -> Result<Vec<String>> {
        let mut refused = Vec::new();
        for m in &self.members {
            for place in m
                .backend
                .delete_refused(key)
                .map_err(|e| anyhow!("pool member {}: {}", m.name, crate::error::one_line(&e)))?
            {
                refused.push(format!("pool member {} ({place})", m.name));
            }
        }
        Ok(refused)
    }

    fn exists(&self) -> Result<bool> {
        // One reachable member holding the location is enough; an unreachable
        // one only matters when no other member answers.
        let mut first_error = None;
        for m in &self.members {
            match m.backend.exists() {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) => {
                    first_error.get_or_insert_with(|| anyhow!("pool member {}: {e:#}", m.name));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(false),
        }
    }

    fn create(&self) -> Result<()> {
        for m in &self.members {
            m.backend
                .create()
                .map_err(|e| anyhow!("pool member {}: {e:#}", m.name))?;
        }
        Ok(())
    }

    fn request_counts(&self) -> Vec<crate::store::RequestCounts> {
        self.members
            .iter()
            .map(|m| {
                let (requests, errors) = m
                    .backend
                    .request_counts()
                    .first()
                    .map(|c| (c.requests, c.errors))
                    .unwrap_or_default();
                crate::store::RequestCounts {
                    member: m.name.clone(),
                    requests,
                    errors,
                }
            })
            .collect()
    }

    fn replicated(&self) -> Option<&dyn Replicated> {
        Some(self)
    }

    /// Every member's incomplete uploads, each tagged with its member.
    fn incomplete_uploads(&self) -> Result<Vec<crate::store::PendingUpload>> {
        let mut all = Vec::new();
        for m in &self.members {
            let uploads = m
                .backend
                .incomplete_uploads()
                .map_err(|e| anyhow!("pool member {}: {}", m.name, crate::error::one_line(&e)))?;
            all.extend(uploads.into_iter().map(|u| crate::store::PendingUpload {
                store: m.name.clone(),
                ..u
            }));
        }
        Ok(all)
    }

    fn abort_upload(&self, upload: &crate::store::PendingUpload) -> Result<()> {
        let m = self
            .members
            .iter()
            .find(|m| m.name == upload.store)
            .ok_or_else(|| anyhow!("no pool member {} for upload {}", upload.store, upload.key))?;
        m.backend.abort_upload(upload)
    }
}

impl Replicated for Pool {
    fn heal_lagging(&self) -> bool {
        self.heal();
        self.lagging.lock().expect("lagging").is_empty()
    }

    fn served(&self) -> Vec<(String, u64)> {
        self.members
            .iter()
            .map(|m| (m.name.clone(), m.served.load(Ordering::Relaxed)))
            .collect()
    }

    fn heal_bad_copies(&self) -> Vec<String> {
        let work = std::mem::take(&mut *self.to_heal.lock().expect("to heal"));
        let mut said = Vec::new();
        let mut done = std::collections::HashSet::new();
        for (key, bad, good) in work {
            if !done.insert((key.clone(), bad)) {
                continue;
            }
            let (from, to) = (&self.members[good], &self.members[bad]);
            let result = from
                .backend
                .get(&key)
                .and_then(|bytes| {
                    self.verify_copy(&key, &bytes)?;
                    Ok(bytes)
                })
                .and_then(|bytes| to.backend.put(&key, bytes));
            said.push(match result {
                Ok(()) => format!(
                    "healed the damaged copy of {key} on member {} from member {}",
                    to.name, from.name
                ),
                Err(e) => format!(
                    "could not heal the damaged copy of {key} on member {}: {}",
                    to.name,
                    crate::error::one_line(&e)
                ),
            });
        }
        said
    }

    fn take_bad_copies(&self) -> Vec<String> {
        std::mem::take(&mut *self.bad_copies.lock().expect("bad copies"))
    }

    fn take_notices(&self) -> Vec<String> {
        std::mem::take(&mut *self.notices.lock().expect("notices"))
    }

    fn set_verifier(&self, verifier: Verifier) {
        *self.verifier.write().expect("verifier") = Some(verifier);
    }

    fn durable_keys(&self, prefix: &str) -> std::collections::HashSet<String> {
        let mut held: std::collections::HashMap<String, usize> = Default::default();
        for list in self.list_members(prefix).into_iter().flatten() {
            for o in list {
                *held.entry(o.key).or_default() += 1;
            }
        }
        held.into_iter()
            .filter(|(_, n)| *n >= self.write_quorum)
            .map(|(k, _)| k)
            .collect()
    }
}
