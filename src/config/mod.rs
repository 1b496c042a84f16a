//! The config file: its schema, the environment overrides and the helpers
//! for messages about its text. Read by every command (through
//! [`crate::session::Ctx`]) and by the agent.

pub mod agent;
pub mod env;
pub mod text;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::store::ObjectLockConfig;

/// The TOML config file (see config/strata.example.toml).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The repository.
    #[serde(default)]
    pub repository: RepositorySection,
    /// A storage pool of several members.
    pub pool: Option<crate::pool::config::PoolConfig>,
    /// Agent settings (used by `strata agent`).
    pub agent: Option<agent::AgentConfig>,
    /// Scheduled backups (used by `strata agent`).
    pub jobs: Option<Vec<agent::JobConfig>>,
}

/// `[repository]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RepositorySection {
    /// Repository URL or path.
    pub url: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// Backend options (object_store configuration keys).
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
    /// S3 Object Lock retention for every object written
    /// (`object_lock = { mode = "governance", days = 30 }`).
    pub object_lock: Option<ObjectLockConfig>,
    /// Upload limit per second for the whole repository (`"2MiB"`); for a
    /// pool, the total across its members.
    pub limit_upload: Option<String>,
    /// Download limit per second (`"10MiB"`).
    pub limit_download: Option<String>,
    /// S3 storage class per kind of object (`{ data = "STANDARD_IA" }`).
    #[serde(default)]
    pub storage_class: crate::store::storage_class::StorageClasses,
    /// Default compression of backups (`off`, `fastest`, `default`, `max`
    /// or a zstd level).
    pub compression: Option<crate::backup::CompressionSetting>,
}

/// Reads and parses a config file, naming the file, line and field on
/// error; applies the environment overrides (see [`env`]).
pub fn load_config(path: &Path) -> Result<ConfigFile> {
    load_config_text(path).map(|(file, _)| file)
}

/// [`load_config`], also returning the file's text (for line numbers in
/// later checks).
pub fn load_config_text(path: &Path) -> Result<(ConfigFile, String)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let mut file: ConfigFile = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "config file {}: {}",
            path.display(),
            text::toml_error(&text, &e)
        )
    })?;
    env::apply_env(&mut file).with_context(|| format!("config file {}", path.display()))?;
    Ok((file, text))
}
