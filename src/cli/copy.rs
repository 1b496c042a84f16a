//! `strata copy`: snapshots from another repository into this one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::maintenance::copy::{CopyOptions, copy_snapshots};
use crate::repo::{OnDamage, Repository};
use crate::report::bytes;
use crate::session::{Ctx, PasswordSource, default_threads};

/// Arguments of `copy`.
#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The repository to copy from: a path, file://, s3://, az:// or gs://
    /// (cloud credentials from the usual environment variables).
    #[arg(long, env = "STRATA_FROM_REPO", value_name = "URL")]
    from_repo: String,
    /// File holding the source repository's password (or
    /// STRATA_FROM_PASSWORD in the environment).
    #[arg(long, env = "STRATA_FROM_PASSWORD_FILE", value_name = "FILE")]
    from_password_file: Option<PathBuf>,
    /// Command that prints the source repository's password.
    #[arg(long, env = "STRATA_FROM_PASSWORD_COMMAND", value_name = "COMMAND")]
    from_password_command: Option<String>,
    /// object_store option for the source, KEY=VALUE (repeatable), e.g.
    /// aws_endpoint=http://127.0.0.1:9000.
    #[arg(long = "from-option", value_name = "KEY=VALUE")]
    from_options: Vec<String>,
    /// Snapshots to copy (ids, prefixes or `latest`); default: all.
    snapshots: Vec<String>,
    /// Seal and compress threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs `copy`.
pub fn run(ctx: &Ctx, args: CopyArgs) -> Result<i32> {
    super::interrupt::release_locks_on_interrupt();
    let mut options = BTreeMap::new();
    for kv in &args.from_options {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--from-option takes KEY=VALUE, got {kv:?}");
        };
        options.insert(k.trim().to_string(), v.to_string());
    }
    let source = crate::store::open_store(&args.from_repo, &options, None, &Default::default())
        .with_context(|| format!("source repository {}", args.from_repo))?;
    let password = PasswordSource {
        file: args.from_password_file.clone(),
        command: args.from_password_command.clone(),
        env_var: "STRATA_FROM_PASSWORD",
        prompt: "source repository password: ",
        hint: "use --from-password-file, --from-password-command or STRATA_FROM_PASSWORD",
    }
    .read(false)?;
    let src = Repository::open(Arc::new(source), &password)
        .with_context(|| format!("source repository {}", args.from_repo))?;
    let dst = ctx.open()?;
    if src.config().id == dst.config().id {
        bail!("the source and the target are the same repository; nothing to copy");
    }
    let wanted = if args.snapshots.is_empty() {
        src.snapshots(OnDamage::Skip)?.objects
    } else {
        let mut w = Vec::new();
        for spec in &args.snapshots {
            w.push(src.find_snapshot(spec)?);
        }
        w.sort_by_key(|s| s.1.time);
        w.dedup_by_key(|s| s.0);
        w
    };
    let uploads = dst.backend().default_uploads();
    let report = copy_snapshots(
        &src,
        &dst,
        &wanted,
        CopyOptions {
            threads: args.threads.unwrap_or_else(default_threads),
            uploads,
        },
    )?;
    ctx.report_notices(dst.backend().as_ref());
    for c in &report.copied {
        ctx.out.line(format!(
            "copied {} -> {} ({} added)",
            c.source.short(),
            c.target.short(),
            bytes(c.data_added)
        ));
        ctx.out.json(&serde_json::json!({
            "message_type": "copied", "source": c.source, "target": c.target,
            "data_added": c.data_added,
        }));
    }
    for (s, t) in &report.skipped {
        ctx.out.line(format!(
            "skipped {} (copied before as {})",
            s.short(),
            t.short()
        ));
    }
    ctx.out.line(format!(
        "{} snapshots copied, {} already here",
        report.copied.len(),
        report.skipped.len()
    ));
    ctx.out.json(&serde_json::json!({
        "message_type": "summary", "copied": report.copied.len(), "skipped": report.skipped.len(),
        "data_added": report.copied.iter().map(|c| c.data_added).sum::<u64>(),
    }));
    Ok(0)
}
