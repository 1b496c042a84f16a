//! Prune and check jobs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::agent::config::{CheckJob, PruneJob};
use crate::maintenance::check::{ReadData, check};
use crate::maintenance::prune::{PruneOptions, prune};
use crate::repo::Repository;

use super::Outcome;

/// Prunes (5% unused allowed and a one-hour grace unless configured), then
/// aborts stale multipart uploads.
pub(super) fn run_prune(repo: &Arc<Repository>, p: &PruneJob) -> Result<Outcome> {
    let opts = PruneOptions {
        max_unused_pct: p.max_unused.map_or(5.0, |v| v.0),
        grace: p.grace.map_or(Duration::from_secs(3600), |g| g.0),
        dry_run: false,
        finishing: false,
    };
    let r = prune(repo, &opts)?;
    let mut message = format!(
        "deleted {} packs ({}), marked {} ({}), repacked {}",
        r.packs_deleted,
        crate::report::bytes(r.bytes_freed),
        r.packs_marked,
        crate::report::bytes(r.bytes_marked),
        r.packs_repacked
    );
    for w in &r.waiting_reasons {
        message.push_str(&format!("; waiting: {w}"));
    }
    // Incomplete multipart uploads left by killed backups.
    match crate::maintenance::uploads::abort_stale(repo.backend().as_ref(), opts.grace, false) {
        Ok(u) if u.aborted > 0 => message.push_str(&format!(
            "; aborted {} incomplete multipart upload(s)",
            u.aborted
        )),
        Ok(_) => {}
        Err(e) => message.push_str(&format!(
            "; cannot list incomplete multipart uploads: {}",
            crate::error::one_line(&e)
        )),
    }
    Ok(Outcome {
        message,
        backup: None,
        ..Default::default()
    })
}

/// Checks the repository, reading the configured subset of the data.
pub(super) fn run_check(repo: &Repository, c: &CheckJob) -> Result<Outcome> {
    let read = match c.read_data_subset {
        Some(p) if p.0 > 0.0 => ReadData::Subset(p.0),
        _ => ReadData::None,
    };
    let r = check(repo, read)?;
    for w in &r.warnings {
        tracing::warn!(job = "check", "{w}");
    }
    for e in &r.errors {
        tracing::error!(job = "check", "{e}");
    }
    if !r.errors.is_empty() {
        bail!(
            "check found {} error(s): the repository is damaged",
            r.errors.len()
        );
    }
    Ok(Outcome {
        message: format!(
            "checked {} snapshots, {} trees, {} packs ({} read, {} blobs verified): no errors",
            r.snapshots, r.trees, r.packs, r.packs_read, r.blobs_read
        ),
        backup: None,
        ..Default::default()
    })
}
