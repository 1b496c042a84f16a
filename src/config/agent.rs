//! The `[agent]` and `[[jobs]]` sections of the config file; their value
//! types are in [`values`], their validation in [`validate`] (the
//! environment overrides are in [`super::env`]).

mod validate;
mod values;

pub use validate::{read_token, validate};
pub use values::{ListenAddr, OneOrMany, Percent, Size, parse_listen};

use std::path::PathBuf;

use anyhow::Result;
use serde::Deserialize;
use toml::Spanned;

use crate::agent::schedule::{ConfigDuration, Schedule};
use crate::repo::snapshot::BackupMode;

/// Where the agent listens when nothing else is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9898";

/// `[agent]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Address of the HTTP listener (default 127.0.0.1:9898).
    pub listen: Option<ListenAddr>,
    /// File holding the bearer token required by every endpoint but /healthz.
    pub token_file: Option<PathBuf>,
    /// The token itself (only from STRATA_AGENT_TOKEN, never from the file).
    #[serde(skip)]
    pub token: Option<String>,
    /// How long a running job may take to checkpoint or finish after
    /// SIGTERM (default 30s).
    pub grace_period: Option<ConfigDuration>,
    /// `auto` (JSON unless stderr is a terminal), `json` or `text`.
    pub log_format: Option<LogFormat>,
    /// Host name recorded in snapshots (default: the machine's). Set it in
    /// Kubernetes, where pod names change on every restart.
    pub host: Option<String>,
    /// Default of every job's `run_missed`.
    #[serde(default)]
    pub run_missed: bool,
    /// Create the repository at start-up when it does not exist yet.
    #[serde(default)]
    pub init: bool,
    /// How often an idle agent probes the store for /readyz and the pool
    /// member gauges (default: [`crate::agent::readiness::default_interval`]).
    pub probe_interval: Option<ConfigDuration>,
    /// Scheduled `prune`.
    pub prune: Option<PruneJob>,
    /// Scheduled `check --read-data-subset`.
    pub check: Option<CheckJob>,
    /// Notifications after runs (`[[agent.notify]]`, see
    /// [`notify`](crate::agent::notify)).
    #[serde(default)]
    pub notify: Vec<crate::agent::notify::NotifyConfig>,
    /// The web console (`[agent.console]`).
    pub console: Option<crate::console::ConsoleConfig>,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON unless standard error is a terminal.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// `[agent.prune]`: scheduled prune.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneJob {
    /// When to run.
    pub schedule: Schedule,
    /// Up to this much random delay per run.
    pub jitter: Option<ConfigDuration>,
    /// Repack packs with more than this share unused (default 5%).
    pub max_unused: Option<Percent>,
    /// Marked packs are deleted this long after marking at the earliest (default 1h).
    pub grace: Option<ConfigDuration>,
}

/// `[agent.check]`: scheduled check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckJob {
    /// When to run.
    pub schedule: Schedule,
    /// Up to this much random delay per run.
    pub jitter: Option<ConfigDuration>,
    /// Read and verify this share of packs (e.g. "5%"); none reads no data.
    pub read_data_subset: Option<Percent>,
}

/// `[[jobs]]`: one scheduled backup.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Unique name: letters, digits, `-` and `_` (used in URLs and metrics).
    pub name: Spanned<String>,
    /// Files and directories to back up.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// Or: a command whose standard output is backed up, as an argument list
    /// (e.g. `["pg_dump", "-Fc", "app"]`; no shell unless you name one).
    pub command: Option<Vec<String>>,
    /// File name of the command's output in the snapshot (default: the job name).
    pub stdin_name: Option<String>,
    /// Tags for the snapshots.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Glob patterns to leave out.
    #[serde(default)]
    pub excludes: Vec<String>,
    /// Files of exclude patterns (one glob a line, `#` comments), as
    /// `backup --exclude-file`: a path or a list of paths.
    #[serde(default)]
    pub exclude_file: OneOrMany<PathBuf>,
    /// Leave out directories holding an entry of this name (a name or a
    /// list), as `backup --exclude-if-present`.
    #[serde(default)]
    pub exclude_if_present: OneOrMany<String>,
    /// Leave out directories holding a valid CACHEDIR.TAG.
    #[serde(default)]
    pub exclude_caches: bool,
    /// Do not cross into other file systems below the paths.
    #[serde(default)]
    pub one_file_system: bool,
    /// Leave out files larger than this (`"10MiB"`, or a number of bytes).
    pub exclude_larger_than: Option<Size>,
    /// Compression of new data (default: `[repository] compression`, else
    /// the repository's level).
    pub compression: Option<crate::backup::CompressionSetting>,
    /// Commands run before and after each run, and when it fails (see
    /// [`hooks`](crate::agent::hooks)).
    pub hooks: Option<crate::agent::hooks::Hooks>,
    /// How long each hook may run (default 5m).
    pub hook_timeout: Option<ConfigDuration>,
    /// When to run.
    pub schedule: Schedule,
    /// Up to this much random delay per run.
    pub jitter: Option<ConfigDuration>,
    /// full, incremental (default) or differential.
    #[serde(default)]
    pub mode: BackupMode,
    /// Run once at start-up when a scheduled run was missed (default:
    /// `[agent] run_missed`).
    pub run_missed: Option<bool>,
    /// Applied to this job's snapshots after each successful backup.
    pub retention: Option<Retention>,
    /// Reader and compressor threads (default: one per core).
    pub threads: Option<usize>,
    /// Pack uploads in flight.
    pub uploads: Option<usize>,
}

impl JobConfig {
    /// The exclude patterns of `excludes` and every `exclude_file`, read now.
    pub fn exclude_patterns(&self) -> Result<Vec<String>> {
        let mut out = self.excludes.clone();
        for f in &self.exclude_file.0 {
            out.extend(crate::backup::read_exclude_file(f)?);
        }
        Ok(out)
    }

    /// The job's exclude rules besides glob patterns.
    pub fn filters(&self) -> crate::backup::Filters {
        crate::backup::Filters {
            exclude_if_present: self.exclude_if_present.0.clone(),
            exclude_caches: self.exclude_caches,
            one_file_system: self.one_file_system,
            exclude_larger_than: self.exclude_larger_than.map(|s| s.0),
        }
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }

    /// The paths the snapshot records, as the archiver writes them
    /// ([`snapshot_paths`](crate::backup::snapshot_paths)), or
    /// `/NAME` for a command.
    pub fn snapshot_paths(&self) -> Vec<String> {
        if self.command.is_some() {
            return vec![format!("/{}", self.stdin_file_name())];
        }
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        crate::backup::snapshot_paths(&cwd, &self.paths)
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    }

    /// File name of a command's output in the snapshot.
    pub fn stdin_file_name(&self) -> String {
        self.stdin_name
            .clone()
            .unwrap_or_else(|| self.name().to_string())
    }
}

/// `retention = { keep_last = 10, keep_daily = 7 }`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep the N newest snapshots.
    #[serde(default)]
    pub keep_last: usize,
    /// ... the newest of each of the last N hours.
    #[serde(default)]
    pub keep_hourly: usize,
    /// ... days.
    #[serde(default)]
    pub keep_daily: usize,
    /// ... ISO weeks.
    #[serde(default)]
    pub keep_weekly: usize,
    /// ... months.
    #[serde(default)]
    pub keep_monthly: usize,
    /// ... years.
    #[serde(default)]
    pub keep_yearly: usize,
    /// Keep every snapshot within this duration of the newest.
    pub keep_within: Option<ConfigDuration>,
    /// Keep snapshots with any of these tags.
    #[serde(default)]
    pub keep_tags: Vec<String>,
}

impl Retention {
    /// The policy for `maintenance::retention`.
    pub fn policy(&self) -> crate::maintenance::retention::Policy {
        crate::maintenance::retention::Policy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: self
                .keep_within
                .and_then(|d| chrono::Duration::from_std(d.0).ok()),
            tags: self.keep_tags.clone(),
        }
    }
}
