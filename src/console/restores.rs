//! Restores started from the console: the allowed targets, and the running
//! and finished restores whose progress the browser watches.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::progress::Counters;
use crate::repo::Repository;
use crate::repo::snapshot::Snapshot;
use crate::restore::{Overwrite, RestoreOptions, restore};

use super::history::{History, RestoreRun};

/// Checks that `target` lies at or below one of `allowed`, lexically and
/// once symlinks in its existing part are resolved. Returns the target.
pub fn allowed_target(target: &str, allowed: &[PathBuf]) -> Result<PathBuf, String> {
    let t = Path::new(target.trim());
    if allowed.is_empty() {
        return Err(
            "restores from the console are off: list directories in [agent.console] restore_targets"
                .into(),
        );
    }
    if !t.is_absolute()
        || t.components()
            .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        return Err(format!(
            "restore target {target:?} must be an absolute path without `.` or `..`"
        ));
    }
    let under = |p: &Path| allowed.iter().any(|a| p.starts_with(a));
    if !under(t) {
        return Err(format!(
            "restore target {} is outside the allowed targets ({})",
            t.display(),
            allowed
                .iter()
                .map(|a| a.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // The deepest existing ancestor, with symlinks resolved, must still lie
    // below an allowed target (itself resolved).
    let mut existing = t;
    while !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    let real = existing
        .canonicalize()
        .map_err(|e| format!("restore target {}: {e}", t.display()))?;
    let real_allowed: Vec<PathBuf> = allowed
        .iter()
        .map(|a| a.canonicalize().unwrap_or_else(|_| a.clone()))
        .collect();
    if !real_allowed.iter().any(|a| real.starts_with(a)) {
        return Err(format!(
            "restore target {} leads outside the allowed targets through a symbolic link",
            t.display()
        ));
    }
    Ok(t.to_path_buf())
}

/// Where a restore stands.
#[derive(Debug, Clone)]
pub enum State {
    /// Still going.
    Running,
    /// Finished: files and bytes restored, seconds taken.
    Done(u64, u64, f64),
    /// Failed, one line.
    Failed(String),
}

/// One restore.
pub struct Task {
    /// Number shown in its URL.
    pub id: u64,
    /// Snapshot short id.
    pub snapshot: String,
    /// Path inside the snapshot.
    pub path: String,
    /// Target directory.
    pub target: PathBuf,
    /// Live counters.
    pub counters: Arc<Counters>,
    /// When it began.
    pub started: Instant,
    /// Where it stands.
    pub state: Mutex<State>,
}

/// The console's restores.
#[derive(Default)]
pub struct Restores {
    next: AtomicU64,
    tasks: Mutex<Vec<Arc<Task>>>,
}

impl Restores {
    /// The restore numbered `id`.
    pub fn get(&self, id: u64) -> Option<Arc<Task>> {
        self.tasks
            .lock()
            .expect("restores")
            .iter()
            .find(|t| t.id == id)
            .cloned()
    }

    /// Starts restoring `path` of `snap` into `target` on a thread of its own.
    pub fn start(
        &self,
        repo: Arc<Repository>,
        snap: Snapshot,
        short: String,
        path: String,
        target: PathBuf,
        history: Arc<History>,
    ) -> std::io::Result<Arc<Task>> {
        let task = Arc::new(Task {
            id: self.next.fetch_add(1, Ordering::SeqCst) + 1,
            snapshot: short,
            path: path.clone(),
            target: target.clone(),
            counters: Arc::new(Counters::default()),
            started: Instant::now(),
            state: Mutex::new(State::Running),
        });
        let includes = if path == "/" {
            Vec::new()
        } else {
            vec![globset::escape(&path)]
        };
        let opts = RestoreOptions {
            target,
            includes,
            verify: false,
            threads: crate::session::default_threads(),
            progress: task.counters.clone(),
            overwrite: Overwrite::IfChanged,
            stop: Arc::new(AtomicBool::new(false)),
            delete: false,
            xattrs: true,
        };
        let t = task.clone();
        std::thread::Builder::new()
            .name(format!("strata-restore-{}", task.id))
            .spawn(move || {
                let result = restore(&repo, &snap, &opts);
                let state = match result {
                    Ok(r) if r.errors.is_empty() => {
                        history.record_restore(RestoreRun {
                            end: chrono::Utc::now().timestamp_millis() as f64 / 1000.0,
                            duration_s: r.duration_s,
                            bytes: r.bytes_restored,
                            rate: crate::report::rate(r.bytes_restored, r.duration_s),
                        });
                        tracing::info!(target = %t.target.display(), files = r.files_restored, "console restore finished");
                        State::Done(r.files_restored, r.bytes_restored, r.duration_s)
                    }
                    Ok(r) => State::Failed(format!(
                        "incomplete: {} (and {} more problems)",
                        r.errors[0],
                        r.errors.len() - 1
                    )),
                    Err(e) => State::Failed(crate::error::one_line(&e)),
                };
                *t.state.lock().expect("restore state") = state;
            })?;
        self.tasks.lock().expect("restores").push(task.clone());
        Ok(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_must_lie_below_an_allowed_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("restores");
        std::fs::create_dir(&root).unwrap();
        let allowed = vec![root.clone()];
        let inside = root.join("new/deeper");
        assert_eq!(
            allowed_target(inside.to_str().unwrap(), &allowed).unwrap(),
            inside
        );
        for bad in [
            "/etc".to_string(),
            format!("{}/../escape", root.display()),
            "relative/path".into(),
            format!("{}x", root.display()),
        ] {
            assert!(allowed_target(&bad, &allowed).is_err(), "{bad}");
        }
        // A symlink inside the allowed directory that leads out of it.
        std::os::unix::fs::symlink(dir.path(), root.join("out")).unwrap();
        let e = allowed_target(root.join("out/x").to_str().unwrap(), &allowed).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(
            allowed_target("/tmp", &[])
                .unwrap_err()
                .contains("restore_targets")
        );
    }
}
