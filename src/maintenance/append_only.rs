//! Refusing prune early under append-only credentials (docs/IMMUTABILITY.md).
//!
//! Backup agents are best given credentials that may write but not delete
//! (then a stolen agent cannot destroy its own backups). Prune deletes packs,
//! index files and deletion markers, so with such credentials it would stop
//! half-way; instead it asks first, before writing or removing anything.

use anyhow::{Result, bail};

use crate::repo::Repository;

/// Name of the object the probe deletes in each folder. It never exists:
/// S3, Azure and GCS check permission before existence, so the delete either
/// is refused or removes nothing (on a versioned bucket it leaves a delete
/// marker on this one key).
const PROBE: &str = "strata-delete-probe";

/// Fails with a one-line explanation when the credentials may not delete
/// in every folder prune deletes from (packs, index files, markers).
pub fn check_prune_may_delete(repo: &Repository) -> Result<()> {
    if let Some((folder, refused)) = repo.prune_delete_refusal(PROBE)? {
        bail!(
            "prune needs delete permission on {} ({folder}): these credentials look append-only; run prune with credentials that may delete",
            refused.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::store::{AccessDenied, is_access_denied};

    #[test]
    fn recognises_refusals() {
        // A 401/403 as the store reports it, under context.
        let denied = anyhow::anyhow!(AccessDenied).context("deleting data/x in s3://b/p");
        assert!(is_access_denied(&denied));
        // An S3 multi-object delete whose entry was refused (HTTP 200).
        let bulk = anyhow::anyhow!(
            "Generic S3 error: DeleteObjects request failed for key p/data/x: Access Denied. (code: AccessDenied)"
        );
        assert!(is_access_denied(&bulk));
        let other = anyhow::anyhow!("cannot reach the endpoint (connection refused)");
        assert!(!is_access_denied(&other));
    }
}
