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
    /// How new blobs were compressed (absent in snapshots of older
    /// versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<SnapshotCompression>,
}

/// How the blobs a backup added were compressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCompression {
    /// The setting as given: `off`, `fastest`, `default`, `max` or a zstd
    /// level.
    pub setting: String,
    /// The zstd level used (0: none). Blobs the repository already held
    /// keep the compression they were stored with.
    pub level: i32,
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
    /// Where `strata copy` took it from (absent for a snapshot made here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<OriginalSnapshot>,
}

/// The snapshot a copy was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginalSnapshot {
    /// The source repository's id.
    pub repository: String,
    /// The snapshot's id there.
    pub snapshot: Id,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_without_newer_fields_still_decode() {
        let old = br#"{"time":"2026-01-01T00:00:00Z","tree":"0000000000000000000000000000000000000000000000000000000000000000","paths":["/a"],"hostname":"h","username":"u","summary":{"files_new":1,"files_changed":0,"files_unmodified":0,"dirs":1,"bytes_read":1,"total_bytes":1,"data_added":1,"duration_s":0.5}}"#;
        let s = Snapshot::decode(old).unwrap();
        assert_eq!(s.summary.compression, None);
        assert_eq!(s.summary.excluded, 0);
        assert_eq!(s.mode, BackupMode::Incremental);
        let mut s2 = s.clone();
        s2.summary.compression = Some(SnapshotCompression {
            setting: "max".into(),
            level: 19,
        });
        let text = String::from_utf8(s2.encode()).unwrap();
        assert!(
            text.contains(r#""compression":{"setting":"max","level":19}"#),
            "{text}"
        );
        assert_eq!(Snapshot::decode(text.as_bytes()).unwrap(), s2);
        // Written without the field when there is no setting.
        assert!(
            !String::from_utf8(s.encode())
                .unwrap()
                .contains("compression")
        );
    }
}
