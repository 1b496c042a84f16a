//! `strata check`.

use anyhow::{Result, bail};
use clap::Args;

use crate::error::exit;
use crate::maintenance::check::{ReadData, check};
use crate::session::Ctx;

/// Arguments of `check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Read and verify every pack.
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Read and verify a random share of packs, e.g. `10%`.
    #[arg(long, value_name = "PCT%")]
    read_data_subset: Option<String>,
}

/// Parses `10%` (or `10`) into a percentage in (0, 100].
pub fn parse_percent(s: &str) -> Result<f64> {
    let v: f64 = s.trim().trim_end_matches('%').parse().map_err(|_| {
        anyhow::anyhow!("--read-data-subset takes a percentage such as 10%, got {s:?}")
    })?;
    if !(v > 0.0 && v <= 100.0) {
        bail!("--read-data-subset must be more than 0% and at most 100%, got {s:?}");
    }
    Ok(v)
}

/// Runs the check.
pub fn run(ctx: &Ctx, args: CheckArgs) -> Result<i32> {
    let read = match (&args.read_data_subset, args.read_data) {
        (Some(p), _) => ReadData::Subset(parse_percent(p)?),
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    let repo = ctx.open()?;
    let result = check(&repo, read);
    ctx.report_notices(repo.backend().as_ref());
    let r = result?;
    for w in &r.warnings {
        ctx.out.warn(w);
    }
    let uploads = report_uploads(ctx, repo.backend().as_ref());
    for e in &r.errors {
        if ctx.out.json {
            ctx.out
                .json(&serde_json::json!({"message_type": "error", "message": e}));
        } else {
            eprintln!("error: {e}");
        }
    }
    ctx.out.json(&serde_json::json!({
        "message_type": "summary",
        "snapshots": r.snapshots, "trees": r.trees, "packs": r.packs,
        "packs_read": r.packs_read, "blobs_read": r.blobs_read,
        "errors": r.errors.len(), "warnings": r.warnings.len(),
        "incomplete_uploads": uploads,
    }));
    ctx.out.line(format!(
        "checked {} snapshots, {} trees, {} packs ({} read, {} blobs verified)",
        r.snapshots, r.trees, r.packs, r.packs_read, r.blobs_read
    ));
    if r.errors.is_empty() {
        ctx.out.line("no errors found");
        Ok(exit::OK)
    } else {
        bail!(
            "check found {} error(s): the repository is damaged",
            r.errors.len()
        )
    }
}

/// Lists this repository's incomplete multipart uploads (left by
/// interrupted backups, billed as storage): a warning, not damage. Returns
/// how many there are.
fn report_uploads(ctx: &Ctx, backend: &dyn crate::store::Backend) -> usize {
    let uploads = match crate::maintenance::uploads::list(backend) {
        Ok(u) => u,
        Err(e) => {
            ctx.out.warn(format!(
                "cannot list incomplete multipart uploads: {}",
                crate::error::one_line(&e)
            ));
            return 0;
        }
    };
    for u in &uploads {
        let started = u
            .initiated
            .map_or_else(|| "at an unknown time".into(), |t| t.to_rfc3339());
        ctx.out.json(&serde_json::json!({
            "message_type": "incomplete_upload", "key": u.key, "upload_id": u.id,
            "initiated": u.initiated,
        }));
        if !ctx.out.json {
            ctx.out.line(format!(
                "incomplete multipart upload of {} started {started}",
                u.key
            ));
        }
    }
    if !uploads.is_empty() {
        ctx.out.warn(format!(
            "{} incomplete multipart upload(s) left by interrupted backups: `strata prune` aborts those older than its grace period",
            uploads.len()
        ));
    }
    uploads.len()
}

#[cfg(test)]
mod tests {
    use super::parse_percent;

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("10%").unwrap(), 10.0);
        assert_eq!(parse_percent("2.5").unwrap(), 2.5);
        assert!(parse_percent("0%").is_err());
        assert!(parse_percent("101%").is_err());
        assert!(parse_percent("abc").is_err());
    }
}
