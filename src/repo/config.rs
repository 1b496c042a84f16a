//! The repository config object: format version and parameters.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;

/// The repository format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Contents of the `config` object (JSON, encrypted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Repository format version.
    pub version: u32,
    /// Random repository id (hex), also sealed in every key file.
    pub id: String,
    /// Chunk size bounds.
    pub chunker: ChunkerParams,
    /// zstd level for blobs (0 = no compression).
    pub compression_level: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
}

impl RepoConfig {
    /// A new config with defaults and a fresh id.
    pub fn new() -> RepoConfig {
        RepoConfig {
            version: FORMAT_VERSION,
            id: crate::id::Id::random().to_hex(),
            chunker: ChunkerParams::default(),
            compression_level: 3,
            pack_size: 16 * 1024 * 1024,
        }
    }

    /// Serializes the config.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("config serializes")
    }

    /// Parses and validates a config.
    pub fn decode(bytes: &[u8]) -> Result<RepoConfig> {
        let c: RepoConfig =
            serde_json::from_slice(bytes).context("repository config is not valid")?;
        if c.version != FORMAT_VERSION {
            bail!(
                "repository format version {} is not supported by this strata (it reads {FORMAT_VERSION})",
                c.version
            );
        }
        c.chunker.validate()?;
        if !(-7..=22).contains(&c.compression_level) {
            bail!("compression level {} out of range", c.compression_level);
        }
        if !(1024 * 1024..=1024 * 1024 * 1024).contains(&c.pack_size) {
            bail!("pack size {} out of range", c.pack_size);
        }
        Ok(c)
    }
}

impl Default for RepoConfig {
    fn default() -> Self {
        Self::new()
    }
}
