//! The `[pool]` section of the config file.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Result, bail};
use serde::Deserialize;

/// How objects are placed on members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Every object on every member.
    #[default]
    Mirror,
    /// Packs split into data and parity shards (not implemented yet).
    Erasure,
}

/// `[pool]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Placement policy.
    #[serde(default)]
    pub placement: Placement,
    /// Members that must take a write for it to succeed (default: all).
    pub write_quorum: Option<usize>,
    /// The members.
    #[serde(default)]
    pub members: Vec<MemberConfig>,
}

/// `[[pool.members]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Short name used in messages and `pool status`.
    pub name: String,
    /// Repository URL on this member.
    pub url: String,
    /// object_store configuration keys (aws_*, azure_*, google_*).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Reads prefer members with a lower value (default 100); among equals,
    /// the fastest to answer goes first. Lets a nearby or egress-free member
    /// serve restores.
    #[serde(default = "default_priority")]
    pub read_priority: u32,
    /// S3 Object Lock retention for every object written to this member.
    pub object_lock: Option<crate::store::ObjectLockConfig>,
    /// S3 storage class per kind of object (`{ data = "STANDARD_IA" }`).
    #[serde(default)]
    pub storage_class: crate::store::storage_class::StorageClasses,
}

fn default_priority() -> u32 {
    100
}

impl PoolConfig {
    /// Checks the pool makes sense; returns the effective write quorum.
    pub fn validate(&self) -> Result<usize> {
        if self.placement == Placement::Erasure {
            bail!("[pool] placement = \"erasure\" is not supported yet; use \"mirror\"");
        }
        if self.members.is_empty() {
            bail!("[pool] has no members: add [[pool.members]] entries with a name and url");
        }
        let mut names = HashSet::new();
        for m in &self.members {
            if m.name.is_empty()
                || !m
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                bail!(
                    "[[pool.members]] name {:?} must be letters, digits, - or _",
                    m.name
                );
            }
            if !names.insert(m.name.as_str()) {
                bail!("[[pool.members]] name {:?} is used twice", m.name);
            }
            if let Some(lock) = &m.object_lock {
                lock.check(&m.url)
                    .map_err(|e| anyhow::anyhow!("[[pool.members]] {:?}: {e}", m.name))?;
            }
            crate::store::storage_class::check(&m.url, &m.storage_class)
                .map_err(|e| anyhow::anyhow!("[[pool.members]] {:?}: {e}", m.name))?;
        }
        let n = self.members.len();
        let q = self.write_quorum.unwrap_or(n);
        if q == 0 || q > n {
            bail!("[pool] write_quorum = {q} must be between 1 and the number of members ({n})");
        }
        Ok(q)
    }
}
