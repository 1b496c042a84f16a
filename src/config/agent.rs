//! The `[agent]` and `[[jobs]]` sections of the config file and their
//! validation (the environment overrides are in [`super::env`]).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::Deserialize;
use toml::Spanned;

use super::ConfigFile;
use super::text::{key_line, line_of};
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

/// A socket address, checked when the config is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_listen(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses `HOST:PORT` with a numeric host, e.g. `0.0.0.0:9898` or `[::]:9898`.
pub fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    s.trim().parse().map(ListenAddr).map_err(|_| {
        format!("invalid listen address {s:?}: write an IP and a port, e.g. \"0.0.0.0:9898\"")
    })
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

/// A percentage written as `"5%"` or `5`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percent(pub f64);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Float(f64),
        }
        let v = match Raw::deserialize(d)? {
            Raw::Text(s) => s.trim().trim_end_matches('%').trim().parse::<f64>().ok(),
            Raw::Int(i) => Some(i as f64),
            Raw::Float(f) => Some(f),
        };
        match v {
            Some(p) if (0.0..=100.0).contains(&p) => Ok(Percent(p)),
            _ => Err(serde::de::Error::custom(
                "expected a percentage from 0 to 100, e.g. \"5%\"",
            )),
        }
    }
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

/// A value written either alone or as a list: `"x"` or `["x", "y"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<T> {
            Many(Vec<T>),
            One(T),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Many(v)) => Ok(OneOrMany(v)),
            Ok(Raw::One(v)) => Ok(OneOrMany(vec![v])),
            Err(_) => Err(serde::de::Error::custom(
                "expected a string or a list of strings",
            )),
        }
    }
}

/// A size in bytes, written as `"10MiB"`, `"500k"` or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Text(s)) => crate::report::parse_size(&s)
                .map(Size)
                .map_err(serde::de::Error::custom),
            Ok(Raw::Int(i)) if i >= 0 => Ok(Size(i as u64)),
            _ => Err(serde::de::Error::custom(
                "expected a size such as \"10MiB\" or a number of bytes",
            )),
        }
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

/// Checks the agent's parts of a parsed config: job names, sources, limits.
/// `text` is the file's content, for line numbers.
pub fn validate(file: &ConfigFile, text: &str) -> Result<()> {
    let jobs = file.jobs.as_deref().unwrap_or_default();
    let mut names = HashSet::new();
    for job in jobs {
        let line = line_of(text, job.name.span().start);
        let name = job.name();
        let at = |msg: String| anyhow::anyhow!("line {line}, [[jobs]] {name:?}: {msg}");
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(at(
                "field `name` must be 1 to 64 letters, digits, - or _".into()
            ));
        }
        if !names.insert(name.to_string()) {
            return Err(at("field `name` is used by another job".into()));
        }
        match (&job.command, job.paths.is_empty()) {
            (Some(_), false) => {
                return Err(at("give either `paths` or `command`, not both".into()));
            }
            (None, true) => {
                return Err(at(
                    "field `paths` (or `command`) is missing: nothing to back up".into(),
                ));
            }
            (Some(cmd), true) if cmd.is_empty() || cmd[0].is_empty() => {
                return Err(at(
                    "field `command` must name a program, e.g. [\"pg_dump\", \"app\"]".into(),
                ));
            }
            _ => {}
        }
        if job.command.is_none() && job.stdin_name.is_some() {
            return Err(at("field `stdin_name` needs a `command`".into()));
        }
        let stdin = job.stdin_file_name();
        if job.command.is_some()
            && (stdin.is_empty()
                || stdin == "."
                || stdin == ".."
                || stdin.contains('/')
                || stdin.contains('\0'))
        {
            return Err(at(format!(
                "field `stdin_name` must be a plain file name, got {stdin:?}"
            )));
        }
        for p in &job.excludes {
            if let Err(e) = globset::Glob::new(p) {
                return Err(at(format!("field `excludes`: bad pattern {p:?}: {e}")));
            }
        }
        if job.command.is_some() {
            let set = [
                ("excludes", !job.excludes.is_empty()),
                ("exclude_file", !job.exclude_file.0.is_empty()),
                ("exclude_if_present", !job.exclude_if_present.0.is_empty()),
                ("exclude_caches", job.exclude_caches),
                ("one_file_system", job.one_file_system),
                ("exclude_larger_than", job.exclude_larger_than.is_some()),
            ];
            if let Some((key, _)) = set.iter().find(|(_, on)| *on) {
                return Err(at(format!(
                    "field `{key}` applies to `paths`, not to a `command`; remove it"
                )));
            }
        }
        for f in &job.exclude_file.0 {
            if let Err(e) = crate::backup::read_exclude_file(f) {
                return Err(at(format!(
                    "field `exclude_file`: {}",
                    crate::error::one_line(&e)
                )));
            }
        }
        for n in &job.exclude_if_present.0 {
            if n.is_empty() || n == "." || n == ".." || n.contains('/') || n.contains('\0') {
                return Err(at(format!(
                    "field `exclude_if_present` takes plain file names such as \".nobackup\", got {n:?}"
                )));
            }
        }
        if let Some(h) = &job.hooks
            && let Err(e) = h.validate()
        {
            return Err(at(e));
        }
        if job.hook_timeout.is_some_and(|t| t.0.is_zero()) {
            return Err(at("field `hook_timeout` must be more than 0s".into()));
        }
        if job.threads == Some(0) {
            return Err(at("field `threads` must be at least 1".into()));
        }
        if job.uploads.is_some_and(|u| u == 0 || u > 64) {
            return Err(at("field `uploads` must be from 1 to 64".into()));
        }
        if let Some(r) = &job.retention
            && r.policy().is_empty()
        {
            return Err(at(
                "field `retention` has no keep_* rule (it would remove every snapshot); add e.g. keep_last = 10"
                    .into(),
            ));
        }
    }
    if let Some(a) = &file.agent
        && let Some(h) = &a.host
        && h.trim().is_empty()
    {
        let line = key_line(text, "agent", "host").unwrap_or(0);
        bail!("line {line}, [agent]: field `host` must not be empty");
    }
    if let Some(a) = &file.agent {
        let mut names: Vec<String> = jobs.iter().map(|j| j.name().to_string()).collect();
        names.extend(a.prune.as_ref().map(|_| "prune".to_string()));
        names.extend(a.check.as_ref().map(|_| "check".to_string()));
        let headers: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim().replace(' ', "").starts_with("[[agent.notify]]"))
            .map(|(i, _)| i + 1)
            .collect();
        for (i, n) in a.notify.iter().enumerate() {
            if let Err(e) = n.validate(&names) {
                let line = headers.get(i).copied().unwrap_or(0);
                bail!("line {line}, [[agent.notify]] entry {}: {e}", i + 1);
            }
        }
    }
    Ok(())
}

/// Reads the bearer token (STRATA_AGENT_TOKEN, else the token file).
pub fn read_token(agent: &AgentConfig, text: &str) -> Result<Option<String>> {
    if let Some(t) = &agent.token {
        return Ok(Some(t.clone()));
    }
    let Some(path) = &agent.token_file else {
        return Ok(None);
    };
    let line = key_line(text, "agent", "token_file")
        .map(|l| format!("line {l}, "))
        .unwrap_or_default();
    let raw = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "{line}[agent] field `token_file`: cannot read {}: {e}",
            path.display()
        )
    })?;
    let token = raw.lines().next().unwrap_or_default().trim().to_string();
    if token.is_empty() {
        bail!(
            "{line}[agent] field `token_file`: {} is empty",
            path.display()
        );
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile> {
        let file: ConfigFile = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!(crate::config::text::toml_error(text, &e)))?;
        validate(&file, text)?;
        Ok(file)
    }

    const GOOD: &str = r#"
[repository]
url = "/tmp/repo"

[agent]
listen = "0.0.0.0:9898"
grace_period = "45s"
run_missed = true

[agent.prune]
schedule = "0 30 3 * * *"
max_unused = "10%"

[agent.check]
schedule = "0 0 4 * * SUN"
read_data_subset = "5%"

[[jobs]]
name = "volume"
paths = ["/data"]
schedule = "*/15 * * * *"
jitter = "1m"
retention = { keep_last = 10, keep_daily = 7, keep_within = "2d" }

[[jobs]]
name = "db"
command = ["pg_dump", "-Fc", "app"]
stdin_name = "app.dump"
schedule = "0 * * * *"
"#;

    #[test]
    fn a_full_config_parses() {
        let f = parse(GOOD).unwrap();
        let a = f.agent.unwrap();
        assert_eq!(a.listen.unwrap().0.port(), 9898);
        assert_eq!(a.grace_period.unwrap().0.as_secs(), 45);
        assert_eq!(a.prune.unwrap().max_unused.unwrap().0, 10.0);
        let jobs = f.jobs.unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[1].snapshot_paths(), vec!["/app.dump".to_string()]);
        assert_eq!(jobs[0].retention.as_ref().unwrap().policy().last, 10);
        let f = parse(&GOOD.replace("jitter = \"1m\"", "compression = \"max\"")).unwrap();
        assert_eq!(
            f.jobs.unwrap()[0].compression,
            Some(crate::backup::CompressionSetting::Max)
        );
    }

    fn error_of(text: &str) -> String {
        crate::error::one_line(&parse(text).expect_err("refused"))
    }

    #[test]
    fn errors_name_line_and_field() {
        let bad_key = GOOD.replace("jitter = \"1m\"", "jiter = \"1m\"");
        let e = error_of(&bad_key);
        assert!(e.contains("line 22") && e.contains("jiter"), "{e}");
        let bad_cron = GOOD.replace("*/15 * * * *", "*/15 * * *");
        let e = error_of(&bad_cron);
        assert!(e.contains("line 21") && e.contains("cron"), "{e}");
        let bad_listen = GOOD.replace("0.0.0.0:9898", "localhost");
        let e = error_of(&bad_listen);
        assert!(e.contains("line 6") && e.contains("listen"), "{e}");
        let dup = GOOD.replace("name = \"db\"", "name = \"volume\"");
        let e = error_of(&dup);
        assert!(e.contains("line 26") && e.contains("name"), "{e}");
        let both = GOOD.replace("stdin_name = \"app.dump\"", "paths = [\"/x\"]");
        assert!(error_of(&both).contains("not both"));
        let empty_retention = GOOD.replace(
            "retention = { keep_last = 10, keep_daily = 7, keep_within = \"2d\" }",
            "retention = {}",
        );
        assert!(error_of(&empty_retention).contains("retention"));
        let bad_pct = GOOD.replace("\"5%\"", "\"150%\"");
        assert!(error_of(&bad_pct).contains("percentage"));
        let bad_compression = GOOD.replace("jitter = \"1m\"", "compression = \"best\"");
        let e = error_of(&bad_compression);
        assert!(
            e.contains("line 22") && e.contains("invalid compression"),
            "{e}"
        );
    }

    #[test]
    fn key_lines() {
        assert_eq!(key_line(GOOD, "agent", "grace_period"), Some(7));
        assert_eq!(key_line(GOOD, "repository", "url"), Some(3));
        assert_eq!(key_line(GOOD, "repository", "password_file"), None);
    }
}
