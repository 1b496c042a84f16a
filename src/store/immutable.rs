//! S3 Object Lock settings of a repository or pool member, and opening a
//! store with them (docs/IMMUTABILITY.md).
//!
//! `object_store` cannot send the object-lock headers, so a store with
//! `object_lock` set writes every object through `aws-sdk-s3` instead
//! (`s3lock.rs`, behind the `object-lock` cargo feature); reads, listings and
//! deletes stay on `object_store`.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::ObjectBackend;

/// Longest retention accepted (100 years): anything longer is a typo.
pub const MAX_DAYS: u32 = 36_500;

/// How strictly S3 holds a locked object version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Nobody can delete or shorten it before the date, except principals
    /// granted `s3:BypassGovernanceRetention` who ask to bypass.
    #[serde(alias = "GOVERNANCE")]
    Governance,
    /// Nobody at all, the account root included, until the date.
    #[serde(alias = "COMPLIANCE")]
    Compliance,
}

/// `object_lock = { mode = "governance", days = 30 }` in `[repository]` or
/// `[[pool.members]]`: every object written gets that retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLockConfig {
    /// Retention mode.
    pub mode: LockMode,
    /// Days each written object version is kept, counted from its write.
    pub days: u32,
}

impl ObjectLockConfig {
    /// Checks the setting fits `url` and this build; the error is one line
    /// for a config-file message.
    pub fn check(&self, url: &str) -> Result<()> {
        if !url.starts_with("s3://") {
            bail!("object_lock works only on S3 (s3://) storage, not on {url}");
        }
        if self.days == 0 || self.days > MAX_DAYS {
            bail!(
                "object_lock days = {} must be between 1 and {MAX_DAYS}",
                self.days
            );
        }
        if !cfg!(feature = "object-lock") {
            bail!(
                "object_lock needs S3 Object Lock support, which this strata was built without: build it with `cargo build --release --features object-lock`"
            );
        }
        Ok(())
    }
}

/// Opens a store like [`super::open_url`]; with `object_lock`, every write
/// goes through aws-sdk-s3 with that retention.
pub fn open_store(
    url: &str,
    options: &BTreeMap<String, String>,
    object_lock: Option<&ObjectLockConfig>,
    storage_classes: &super::storage_class::StorageClasses,
) -> Result<ObjectBackend> {
    super::storage_class::check(url, storage_classes)?;
    if object_lock.is_some() && !storage_classes.is_empty() {
        bail!(
            "storage_class and object_lock cannot be combined yet (the Object Lock writer sets no class)"
        );
    }
    let mut backend = super::open_url(url, options)?;
    backend.storage_classes = storage_classes.clone();
    if let Some(lock) = object_lock {
        lock.check(url)?;
        backend.locked = Some(LockedWriter::new(url, options, *lock)?);
    }
    Ok(backend)
}

#[cfg(feature = "object-lock")]
pub use super::s3lock::LockedWriter;

/// Stands in for the aws-sdk-s3 writer in builds without the `object-lock`
/// feature; it cannot be made ([`ObjectLockConfig::check`] refuses first).
#[cfg(not(feature = "object-lock"))]
pub enum LockedWriter {}

#[cfg(not(feature = "object-lock"))]
impl LockedWriter {
    fn new(_: &str, _: &BTreeMap<String, String>, _: ObjectLockConfig) -> Result<LockedWriter> {
        bail!("this strata was built without the object-lock feature")
    }

    /// Never called: no value exists.
    pub async fn put(&self, _key: &str, _bytes: bytes::Bytes) -> Result<()> {
        match *self {}
    }

    /// Never called: no value exists.
    pub async fn ensure_bucket(&self) -> Result<()> {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let c: ObjectLockConfig = toml::from_str("mode = \"governance\"\ndays = 7").unwrap();
        assert_eq!(c.mode, LockMode::Governance);
        assert_eq!(c.days, 7);
        let c: ObjectLockConfig = toml::from_str("mode = \"COMPLIANCE\"\ndays = 1").unwrap();
        assert_eq!(c.mode, LockMode::Compliance);
        assert!(toml::from_str::<ObjectLockConfig>("mode = \"legal\"\ndays = 1").is_err());
        assert!(toml::from_str::<ObjectLockConfig>("mode = \"governance\"").is_err());
        assert!(
            toml::from_str::<ObjectLockConfig>("mode = \"governance\"\ndays = 1\nyears = 1")
                .is_err()
        );
        let err = c.check("az://c/p").unwrap_err().to_string();
        assert!(err.contains("only on S3"), "{err}");
        let zero = ObjectLockConfig { days: 0, ..c };
        assert!(zero.check("s3://b/p").is_err());
        let ok = c.check("s3://b/p");
        if cfg!(feature = "object-lock") {
            ok.unwrap();
        } else {
            assert!(
                ok.unwrap_err()
                    .to_string()
                    .contains("--features object-lock")
            );
        }
    }
}
