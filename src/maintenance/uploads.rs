//! Incomplete multipart uploads: a backup killed while uploading an object
//! in parts leaves them behind, invisible to listings but billed as
//! storage. `check` lists this repository's; `prune` aborts those older than
//! its grace period (a younger one may belong to a backup still running).
//! Only S3 keeps them (Azure drops uncommitted blocks after a week itself).

use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::store::{Backend, PendingUpload};

/// What [`abort_stale`] did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct UploadsReport {
    /// Uploads aborted (or, in a dry run, that would be).
    pub aborted: usize,
    /// Uploads younger than the grace period (or of unknown age), kept.
    pub kept: usize,
    /// Uploads that could not be aborted, one message each.
    pub errors: Vec<String>,
}

/// Whether an upload started at `initiated` is older than `grace` at `now`;
/// one of unknown age never is.
pub fn is_stale(initiated: Option<DateTime<Utc>>, grace: Duration, now: DateTime<Utc>) -> bool {
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    initiated.is_some_and(|t| now.signed_duration_since(t) > grace)
}

/// This repository's incomplete multipart uploads, oldest first.
pub fn list(backend: &dyn Backend) -> Result<Vec<PendingUpload>> {
    let mut uploads = backend.incomplete_uploads()?;
    uploads.sort_by_key(|u| u.initiated);
    Ok(uploads)
}

/// Aborts the incomplete uploads older than `grace` (none with `dry_run`).
pub fn abort_stale(backend: &dyn Backend, grace: Duration, dry_run: bool) -> Result<UploadsReport> {
    let now = Utc::now();
    let mut report = UploadsReport::default();
    for u in list(backend)? {
        if !is_stale(u.initiated, grace, now) {
            report.kept += 1;
            continue;
        }
        if dry_run {
            report.aborted += 1;
            continue;
        }
        match backend.abort_upload(&u) {
            Ok(()) => report.aborted += 1,
            Err(e) => report
                .errors
                .push(format!("{}: {}", u.key, crate::error::one_line(&e))),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uploads_older_than_the_grace_period_are_stale() {
        let now = Utc::now();
        let hour = Duration::from_secs(3600);
        let ago = |s: i64| Some(now - chrono::Duration::seconds(s));
        assert!(is_stale(ago(3601), hour, now));
        assert!(!is_stale(ago(3599), hour, now));
        assert!(!is_stale(None, hour, now));
        assert!(!is_stale(ago(10 * 86_400), Duration::MAX, now));
        assert!(is_stale(ago(1), Duration::ZERO, now));
    }
}
