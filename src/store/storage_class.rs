//! S3 storage classes per kind of object (`storage_class = { data =
//! "STANDARD_IA" }` in `[repository]` or a pool member): packs can sit in an
//! infrequent-access class while index files and snapshots, read on every
//! run, stay in STANDARD.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

use crate::repo::layout::Folder;

/// Storage class per folder name (`data`, `index`, `snapshots`, `keys`,
/// `config`, `locks`, `deletions`, `deleted`), or `default` for the rest.
pub type StorageClasses = BTreeMap<String, String>;

/// Classes that need a restore request (hours) before an object can be
/// read: strata reads packs directly, so they are refused.
const COLD: [&str; 2] = ["GLACIER", "DEEP_ARCHIVE"];

/// Checks a storage class setting for the repository at `url`.
pub fn check(url: &str, classes: &StorageClasses) -> Result<()> {
    if classes.is_empty() {
        return Ok(());
    }
    if !url.starts_with("s3://") {
        bail!("storage_class applies to S3 (s3://) repositories and members, not {url}");
    }
    let kinds = [
        "data",
        "index",
        "snapshots",
        "keys",
        "config",
        "locks",
        "deletions",
        "deleted",
        "default",
    ];
    for (kind, class) in classes {
        if !kinds.contains(&kind.as_str()) {
            bail!(
                "storage_class: unknown kind {kind:?}; use {}",
                kinds.join(", ")
            );
        }
        let upper = class.to_ascii_uppercase();
        if class.is_empty()
            || !class
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            bail!("storage_class {kind} = {class:?} is not a storage class name");
        }
        if COLD.contains(&upper.as_str()) {
            bail!(
                "storage_class {kind} = {class:?}: cold tiers need a restore request before every read, which strata does not make; use STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING or GLACIER_IR"
            );
        }
    }
    Ok(())
}

/// The class for an object name, if one is set.
pub fn class_for<'a>(classes: &'a StorageClasses, key: &str) -> Option<&'a str> {
    classes
        .get(Folder::of(key).name())
        .or_else(|| classes.get("default"))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_checked_and_looked_up() {
        let mut c = StorageClasses::new();
        c.insert("data".into(), "STANDARD_IA".into());
        check("s3://b/p", &c).unwrap();
        assert!(check("az://c/p", &c).is_err());
        assert_eq!(class_for(&c, "data/ab/abcd"), Some("STANDARD_IA"));
        assert_eq!(class_for(&c, "index/ab"), None);
        c.insert("default".into(), "ONEZONE_IA".into());
        assert_eq!(class_for(&c, "index/ab"), Some("ONEZONE_IA"));
        c.insert("index".into(), "GLACIER".into());
        assert!(
            check("s3://b/p", &c)
                .unwrap_err()
                .to_string()
                .contains("GLACIER_IR")
        );
        let mut bad = StorageClasses::new();
        bad.insert("packs".into(), "STANDARD".into());
        assert!(check("s3://b/p", &bad).is_err());
    }
}
