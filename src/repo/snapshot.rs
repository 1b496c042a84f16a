//! Snapshots: the commit point of a backup, pointing at a root tree.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::Id;

/// How a backup chose its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackupMode {
    /// No parent: every file is read again.
    Full,
    /// Parent: the latest snapshot of the same host and paths.
    #[default]
    Incremental,
    /// Parent: the latest full snapshot of the same host and paths.
    Differential,
}

impl std::fmt::Display for BackupMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackupMode::Full => "full",
            BackupMode::Incremental => "incremental",
            BackupMode::Differential => "differential",
        })
    }
}

/// Figures recorded with a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    /// Files seen for the first time.
    pub files_new: u64,
    /// Files changed since the parent.
    pub files_changed: u64,
    /// Files unchanged since the parent.
    pub files_unmodified: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Total size of the files in the snapshot.
    pub total_bytes: u64,
    /// Entries (files, directories, ...) exclude rules left out; a left-out
    /// directory counts once. Absent in snapshots of older versions.
    #[serde(default)]
    pub excluded: u64,
    /// Bytes added to the repository (after dedup and compression).
    pub data_added: u64,
    /// Wall time of the backup in seconds.
    pub duration_s: f64,
}

/// A snapshot object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the backup started.
    pub time: DateTime<Utc>,
    /// Root tree.
    pub tree: Id,
    /// Backed-up paths as given (absolute).
    pub paths: Vec<String>,
    /// Host name.
    pub hostname: String,
    /// User name.
    pub username: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Backup mode.
    #[serde(default)]
    pub mode: BackupMode,
    /// Parent snapshot used for change detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    /// Figures of the run.
    #[serde(default)]
    pub summary: SnapshotSummary,
    /// strata version that wrote it.
    #[serde(default)]
    pub program_version: String,
}

impl Snapshot {
    /// Serializes the snapshot.
    pub fn encode(&self) -> Vec<u8> {
        // JSON has no NaN or infinity: a nonsense duration is stored as 0
        // rather than making the snapshot unreadable.
        if !self.summary.duration_s.is_finite() {
            let mut s = self.clone();
            s.summary.duration_s = 0.0;
            return s.encode();
        }
        serde_json::to_vec(self).expect("snapshot serializes")
    }

    /// Parses a snapshot.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot> {
        serde_json::from_slice(bytes).context("snapshot is not valid")
    }
}
