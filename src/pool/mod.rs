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
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use futures::future::join_all;

use crate::store::{
    Backend, NotFound, ObjectBackend, ObjectInfo, block_on, is_not_found, open_store,
};
use config::PoolConfig;

/// One member of the pool.
pub struct Member {
    /// Name from the config.
    pub name: String,
    /// Its store.
    pub backend: ObjectBackend,
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
}

impl Pool {
    /// Opens every member of a pool config.
    pub fn open(cfg: &PoolConfig) -> Result<Pool> {
        let write_quorum = cfg.validate()?;
        let mut members = Vec::new();
        for m in &cfg.members {
            let backend = open_store(&m.url, &m.options, m.object_lock.as_ref())
                .map_err(|e| anyhow!("pool member {}: {e:#}", m.name))?;
            members.push(Member {
                name: m.name.clone(),
                backend,
                read_priority: m.read_priority,
                served: AtomicU64::new(0),
            });
        }
        let order = (0..members.len()).collect();
        Ok(Pool {
            members,
            write_quorum,
            order: Mutex::new(order),
            lagging: Mutex::default(),
            notices: Mutex::default(),
            gap_warned: Mutex::default(),
            bad_copies: Mutex::default(),
            to_heal: Mutex::default(),
        })
    }

    /// The members.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Orders reads by configured priority, then by how fast each member
    /// answers a small request; members that fail go last.
    pub fn rank_members(&self, probe_key: &str) {
        let probes = block_on(join_all(self.members.iter().map(|m| async move {
            let t = Instant::now();
            // A member that lacks the probe object is behind, like a failing one.
            let ok = m.backend.size_async(probe_key).await.is_ok();
            (ok, t.elapsed())
        })));
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

    fn demote(&self, member: usize) {
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
                    .and_then(|bytes| block_on(self.members[member].backend.put_async(key, bytes)));
                match copied {
                    Ok(()) => done += 1,
                    Err(e) => {
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

    fn fetch_from_others(&self, except: usize, key: &str) -> Result<Bytes> {
        let order = self.order.lock().expect("order").clone();
        let mut last = anyhow!("no other member holds {key}");
        for i in order.into_iter().filter(|&i| i != except) {
            match block_on(self.members[i].backend.get_async(key)) {
                Ok(b) => return Ok(b),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Tries members in read order until one yields bytes `accept` takes.
    fn read_with(
        &self,
        key: &str,
        fetch: &dyn Fn(&ObjectBackend) -> Result<Bytes>,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let order = self.order.lock().expect("order").clone();
        let mut problems = Vec::new();
        let mut missing_on = Vec::new();
        let mut damaged_on = Vec::new();
        let mut all_missing = true;
        for i in order {
            let m = &self.members[i];
            match fetch(&m.backend) {
                Ok(bytes) => match accept(&bytes) {
                    Ok(()) => {
                        m.served.fetch_add(bytes.len() as u64, Ordering::Relaxed);
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
                    Err(e) => {
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
                },
                Err(e) if is_not_found(&e) => {
                    missing_on.push(i);
                }
                Err(e) => {
                    all_missing = false;
                    self.demote(i);
                    problems.push(format!("member {}: {}", m.name, crate::error::one_line(&e)));
                }
            }
        }
        if all_missing {
            return Err(anyhow!(NotFound(key.to_string())));
        }
        bail!(
            "{key}: no pool member has a good copy ({})",
            problems.join("; ")
        )
    }
}

impl Backend for Pool {
    fn location(&self) -> String {
        let names: Vec<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
        format!("pool [{}]", names.join(", "))
    }

    fn heal_lagging(&self) -> bool {
        self.heal();
        self.lagging.lock().expect("lagging").is_empty()
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
        if key.starts_with("snapshots/") {
            self.heal();
        }
        let bytes: object_store::PutPayload = parts.iter().cloned().collect();
        let targets: Vec<usize> = (0..self.members.len())
            .filter(|&i| !self.is_lagging(i))
            .collect();
        let results = block_on(join_all(
            targets
                .iter()
                .map(|&i| self.members[i].backend.put_async(key, bytes.clone())),
        ));
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
        self.read_with(key, &|b| block_on(b.get_async(key)), accept)
    }

    fn read_range(
        &self,
        key: &str,
        range: Range<u64>,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.read_with(
            key,
            &|b| block_on(b.get_range_async(key, range.clone())),
            accept,
        )
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let results = block_on(join_all(
            self.members.iter().map(|m| m.backend.list_async(prefix)),
        ));
        let mut seen = std::collections::BTreeMap::new();
        let mut failures = Vec::new();
        for (m, r) in self.members.iter().zip(results) {
            match r {
                Ok(list) => {
                    for o in list {
                        // The newest copy's time: a lock refreshed on some
                        // members only is still live, and a marker's age
                        // counts from its latest write (both the safe side).
                        match seen.entry(o.key.clone()) {
                            std::collections::btree_map::Entry::Vacant(v) => {
                                v.insert(o);
                            }
                            std::collections::btree_map::Entry::Occupied(mut e) => {
                                if o.modified > e.get().modified {
                                    e.get_mut().modified = o.modified;
                                }
                            }
                        }
                    }
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

    fn size(&self, key: &str) -> Result<u64> {
        let order = self.order.lock().expect("order").clone();
        let mut errors = Vec::new();
        let mut all_missing = true;
        for i in order {
            match block_on(self.members[i].backend.size_async(key)) {
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
        let results = block_on(join_all(
            self.members.iter().map(|m| m.backend.delete_async(key)),
        ));
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

    fn served(&self) -> Vec<(String, u64)> {
        self.members
            .iter()
            .map(|m| (m.name.clone(), m.served.load(Ordering::Relaxed)))
            .collect()
    }

    fn request_counts(&self) -> Vec<crate::store::RequestCounts> {
        self.members
            .iter()
            .map(|m| {
                let (requests, errors) = m.backend.request_counts();
                crate::store::RequestCounts {
                    member: m.name.clone(),
                    requests,
                    errors,
                }
            })
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
            let result = block_on(from.backend.get_async(&key))
                .and_then(|bytes| block_on(to.backend.put_async(&key, bytes)));
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
}
