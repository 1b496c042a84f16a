//! Non-exclusive backup locks and the exclusive prune lock.
//!
//! A backup never waits for anyone: it writes `locks/<random id>` saying it
//! runs and which deletion markers it has seen, refreshes it every
//! [`REFRESH`], and deletes it when done. Prune reads these to decide when a
//! marked pack may really go (see docs/PRUNE.md). Staleness is judged by the
//! storage server's modification times, never by comparing client clocks.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ObjectKind, Repository, layout};
use crate::id::Id;

/// How often a running backup rewrites its lock.
pub const REFRESH: Duration = Duration::from_secs(5 * 60);
/// A lock not rewritten for this long belongs to a dead process.
pub const STALE: Duration = Duration::from_secs(30 * 60);
/// A backup whose last successful refresh is older than this must not commit
/// (prune may already consider it dead).
const COMMIT_LIMIT: Duration = Duration::from_secs(20 * 60);

/// What a lock says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockInfo {
    /// "backup" or "prune".
    pub kind: String,
    /// Host running it.
    pub hostname: String,
    /// Process id.
    pub pid: u32,
    /// When it started (the holder's clock; informational).
    pub started: DateTime<Utc>,
    /// Deletion markers the holder had seen when it loaded the index.
    #[serde(default)]
    pub seen_markers: Vec<Id>,
    /// The holder's PID namespace (`/proc/self/ns/pid`): containers of one
    /// pod share a host name but not their process ids.
    #[serde(default)]
    pub pid_namespace: Option<String>,
}

/// This process's PID namespace, as the kernel names it.
fn pid_namespace() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.display().to_string())
}

/// Time since boot, suspend included: a backup host that sleeps for an hour
/// must count that hour when it asks whether its lock is still fresh.
fn since_boot() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A lock as found in the repository.
#[derive(Debug, Clone)]
pub struct FoundLock {
    /// Lock id.
    pub id: Id,
    /// Its contents (None if unreadable).
    pub info: Option<LockInfo>,
    /// Server time of its last refresh.
    pub modified: Option<DateTime<Utc>>,
}

/// Lists every lock with its server modification time.
pub fn list_locks(repo: &Repository) -> Result<Vec<FoundLock>> {
    let mut out = Vec::new();
    for o in repo.list(layout::prefix(ObjectKind::Lock))? {
        let Some(id) = o.key.rsplit('/').next().and_then(|n| n.parse::<Id>().ok()) else {
            continue;
        };
        let info = match repo.load_object_as(ObjectKind::Lock, &id) {
            Ok(p) => serde_json::from_slice::<LockInfo>(&p).ok(),
            // Released between the listing and the read.
            Err(e) if crate::store::is_not_found(&e) => continue,
            Err(_) => None,
        };
        out.push(FoundLock {
            id,
            info,
            modified: o.modified,
        });
    }
    Ok(out)
}

/// True when the lock was written on this host, in this PID namespace, by a
/// process that no longer exists (killed): it is dead whatever its age.
pub fn is_dead_here(info: &LockInfo) -> bool {
    if info.hostname != crate::sysinfo::hostname() || info.pid == std::process::id() {
        return false;
    }
    // Same host name is not the same process table (sidecar containers).
    match (&info.pid_namespace, pid_namespace()) {
        (Some(theirs), Some(ours)) if *theirs == ours => {}
        _ => return false,
    }
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(info.pid as libc::pid_t, 0) };
    rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// True when the lock was refreshed within [`STALE`] of `server_now` and its
/// holder is not known to be dead.
pub fn is_live(lock: &FoundLock, server_now: DateTime<Utc>) -> bool {
    if lock.info.as_ref().is_some_and(is_dead_here) {
        return false;
    }
    match lock.modified {
        Some(m) => server_now
            .signed_duration_since(m)
            .to_std()
            .map(|age| age < STALE)
            .unwrap_or(true),
        None => true, // no server time: assume alive (safe side)
    }
}

/// Locks this process holds, so an interrupted command can remove them.
static HELD: Mutex<Vec<(Arc<Repository>, Id)>> = Mutex::new(Vec::new());

/// Deletes every lock this process holds (on SIGINT/SIGTERM, before exit).
pub fn release_all_held() {
    let held = std::mem::take(&mut *HELD.lock().unwrap_or_else(|e| e.into_inner()));
    for (repo, id) in held {
        let _ = repo
            .backend()
            .delete(&layout::object(ObjectKind::Lock, &id));
    }
}

fn forget_held(id: &Id) {
    HELD.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(_, h)| h != id);
}

/// A held lock, refreshed in the background until released.
pub struct Lock {
    repo: Arc<Repository>,
    id: Id,
    info: Arc<Mutex<LockInfo>>,
    /// [`since_boot`] at the last successful write of the lock.
    last_ok: Arc<Mutex<Duration>>,
    /// Dropping it wakes the refresher at once and makes it exit.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Lock {
    /// Writes a new lock of `kind` and starts refreshing it.
    pub fn acquire(repo: &Arc<Repository>, kind: &str) -> Result<Lock> {
        let info = LockInfo {
            kind: kind.into(),
            hostname: crate::sysinfo::hostname(),
            pid: std::process::id(),
            started: crate::entropy::now(),
            seen_markers: Vec::new(),
            pid_namespace: pid_namespace(),
        };
        let id = Id::random();
        repo.save_object_as(ObjectKind::Lock, &id, &serde_json::to_vec(&info)?)
            .context("writing the lock")?;
        HELD.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((repo.clone(), id));
        let info = Arc::new(Mutex::new(info));
        let last_ok = Arc::new(Mutex::new(since_boot()));
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = {
            let (repo, info, last_ok) = (repo.clone(), info.clone(), last_ok.clone());
            std::thread::Builder::new()
                .name("strata-lock".into())
                .spawn(move || {
                    let mut next = since_boot() + REFRESH;
                    loop {
                        // Short waits, re-checked against the boot clock, so
                        // time spent suspended counts towards the refresh.
                        let wait = next
                            .saturating_sub(since_boot())
                            .min(Duration::from_secs(1));
                        match stopped.recv_timeout(wait) {
                            Err(RecvTimeoutError::Timeout) => {}
                            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                        }
                        if since_boot() < next {
                            continue;
                        }
                        next = since_boot() + REFRESH;
                        let body = serde_json::to_vec(&*info.lock().expect("lock info"))
                            .expect("lock serializes");
                        if repo.save_object_as(ObjectKind::Lock, &id, &body).is_ok() {
                            *last_ok.lock().expect("lock time") = since_boot();
                        }
                    }
                })?
        };
        Ok(Lock {
            repo: repo.clone(),
            id,
            info,
            last_ok,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Records the deletion markers seen and rewrites the lock at once
    /// (no write when the lock already says so: a lock is written with none
    /// seen, and most runs find no marker).
    pub fn set_seen_markers(&self, markers: Vec<Id>) -> Result<()> {
        let body = {
            let mut info = self.info.lock().expect("lock info");
            if info.seen_markers == markers {
                return Ok(());
            }
            info.seen_markers = markers;
            serde_json::to_vec(&*info)?
        };
        self.repo
            .save_object_as(ObjectKind::Lock, &self.id, &body)?;
        *self.last_ok.lock().expect("lock time") = since_boot();
        Ok(())
    }

    /// This lock's id.
    pub fn id(&self) -> Id {
        self.id
    }

    /// Fails when the lock has not been refreshed for so long that prune may
    /// have taken its holder for dead: such a backup must not commit.
    pub fn check_fresh(&self) -> Result<()> {
        let age = since_boot().saturating_sub(*self.last_ok.lock().expect("lock time"));
        if age > COMMIT_LIMIT {
            bail!(
                "this backup could not refresh its lock for {}s (storage unreachable?); not committing a snapshot that prune may have raced",
                age.as_secs()
            );
        }
        Ok(())
    }

    /// Stops refreshing and deletes the lock.
    pub fn release(mut self) {
        self.stop_thread();
        forget_held(&self.id);
        let _ = self
            .repo
            .backend()
            .delete(&layout::object(ObjectKind::Lock, &self.id));
    }

    fn stop_thread(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_thread();
            forget_held(&self.id);
            let _ = self
                .repo
                .backend()
                .delete(&layout::object(ObjectKind::Lock, &self.id));
        }
    }
}
