//! Run history for the charts: the agent's job runs and the console's
//! restores, in memory and in a small JSON file that survives restarts.

use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Runs kept per kind.
const KEEP_RUNS: usize = 2000;
const KEEP_RESTORES: usize = 200;

/// One finished job run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Run {
    /// Job name.
    pub job: String,
    /// `backup`, `prune` or `check`.
    pub kind: String,
    /// Unix time it ended.
    pub end: f64,
    /// Seconds it took.
    pub duration_s: f64,
    /// It succeeded.
    pub ok: bool,
    /// Source bytes read (backups).
    pub bytes_read: u64,
    /// Bytes added to the repository (backups).
    pub bytes_added: u64,
    /// Backup rate, bytes per second.
    pub rate: f64,
    /// The snapshot it made (full id).
    pub snapshot: Option<String>,
}

/// One finished restore.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RestoreRun {
    /// Unix time it ended.
    pub end: f64,
    /// Seconds it took.
    pub duration_s: f64,
    /// Bytes restored.
    pub bytes: u64,
    /// Recovery rate, bytes per second.
    pub rate: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Data {
    #[serde(default)]
    runs: Vec<Run>,
    #[serde(default)]
    restores: Vec<RestoreRun>,
}

/// The history, saved to `file` after each change when there is one.
#[derive(Debug, Default)]
pub struct History {
    file: Option<PathBuf>,
    data: Mutex<Data>,
}

impl History {
    /// Loads `file` (a missing or unreadable file starts an empty history).
    pub fn load(file: Option<PathBuf>) -> History {
        let data = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        History {
            file,
            data: Mutex::new(data),
        }
    }

    /// An in-memory history built from `runs` (for `strata ui`).
    pub fn from_runs(runs: Vec<Run>) -> History {
        History {
            file: None,
            data: Mutex::new(Data {
                runs,
                restores: Vec::new(),
            }),
        }
    }

    /// Records a job run.
    pub fn record_run(&self, run: Run) {
        let mut d = self.data.lock().expect("history");
        d.runs.push(run);
        let extra = d.runs.len().saturating_sub(KEEP_RUNS);
        d.runs.drain(..extra);
        self.save(&d);
    }

    /// Records a restore.
    pub fn record_restore(&self, r: RestoreRun) {
        let mut d = self.data.lock().expect("history");
        d.restores.push(r);
        let extra = d.restores.len().saturating_sub(KEEP_RESTORES);
        d.restores.drain(..extra);
        self.save(&d);
    }

    /// The runs of `job`, oldest first.
    pub fn runs_of(&self, job: &str) -> Vec<Run> {
        let d = self.data.lock().expect("history");
        d.runs.iter().filter(|r| r.job == job).cloned().collect()
    }

    /// Job names with runs, in order of first appearance.
    pub fn jobs(&self) -> Vec<String> {
        let d = self.data.lock().expect("history");
        let mut out: Vec<String> = Vec::new();
        for r in &d.runs {
            if !out.contains(&r.job) {
                out.push(r.job.clone());
            }
        }
        out
    }

    /// The restores, oldest first.
    pub fn restores(&self) -> Vec<RestoreRun> {
        self.data.lock().expect("history").restores.clone()
    }

    /// Writes the file (temporary name, then rename); a failure is logged
    /// once per change and the history stays in memory.
    fn save(&self, d: &Data) {
        let Some(file) = &self.file else { return };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = file.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec(d).map_err(std::io::Error::other)?)?;
            std::fs::rename(&tmp, file)
        };
        if let Err(e) = write() {
            tracing::warn!(
                "cannot save the console history to {}: {e}; it is kept in memory",
                file.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(job: &str, end: f64) -> Run {
        Run {
            job: job.into(),
            kind: "backup".into(),
            end,
            duration_s: 1.0,
            ok: true,
            bytes_read: 10,
            bytes_added: 5,
            rate: 10.0,
            snapshot: None,
        }
    }

    #[test]
    fn survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub/h.json");
        let h = History::load(Some(f.clone()));
        h.record_run(run("a", 1.0));
        h.record_run(run("b", 2.0));
        h.record_restore(RestoreRun {
            end: 3.0,
            duration_s: 1.0,
            bytes: 9,
            rate: 9.0,
        });
        let again = History::load(Some(f));
        assert_eq!(again.runs_of("a"), vec![run("a", 1.0)]);
        assert_eq!(again.jobs(), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(again.restores().len(), 1);
    }

    #[test]
    fn keeps_a_bounded_number() {
        let h = History::default();
        for i in 0..KEEP_RUNS + 5 {
            h.record_run(run("a", i as f64));
        }
        let runs = h.runs_of("a");
        assert_eq!(runs.len(), KEEP_RUNS);
        assert_eq!(runs[0].end, 5.0);
    }
}
