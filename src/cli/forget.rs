//! `strata forget` and `strata prune`.

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::maintenance::prune::{PruneOptions, PruneReport, prune};
use crate::maintenance::retention::{Grouping, Policy, apply};
use crate::repo::OnDamage;
use crate::report::bytes;
use crate::session::Ctx;

/// How prune runs (shared by `forget --prune` and `prune`).
#[derive(Args, Debug, Clone)]
pub struct PruneArgs {
    /// Repack packs with more than this share unused (percent).
    #[arg(long, value_name = "PCT", default_value = "5")]
    max_unused: String,
    /// Packs marked for deletion are deleted by a prune run at least this
    /// long after marking, and only once no backup that started before the
    /// marking is running. `0s` deletes at once when no backup runs.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    grace: String,
}

impl PruneArgs {
    fn options(&self, dry_run: bool) -> Result<PruneOptions> {
        let pct: f64 = self
            .max_unused
            .trim_end_matches('%')
            .parse()
            .ok()
            .filter(|v: &f64| (0.0..=100.0).contains(v))
            .with_context(|| {
                format!(
                    "--max-unused takes a percentage from 0 to 100, got {:?}",
                    self.max_unused
                )
            })?;
        let grace = humantime::parse_duration(&self.grace).with_context(|| {
            format!(
                "--grace takes a duration such as 1h or 30m, got {:?}",
                self.grace
            )
        })?;
        Ok(PruneOptions {
            max_unused_pct: pct,
            grace,
            dry_run,
            finishing: false,
        })
    }
}

/// Arguments of `forget`.
#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to forget by id (in addition to the policy).
    snapshots: Vec<String>,
    /// Keep the N newest snapshots.
    #[arg(long, default_value_t = 0)]
    keep_last: usize,
    /// Keep the newest snapshot of each of the last N hours.
    #[arg(long, default_value_t = 0)]
    keep_hourly: usize,
    /// ... of the last N days.
    #[arg(long, default_value_t = 0)]
    keep_daily: usize,
    /// ... of the last N ISO weeks.
    #[arg(long, default_value_t = 0)]
    keep_weekly: usize,
    /// ... of the last N months.
    #[arg(long, default_value_t = 0)]
    keep_monthly: usize,
    /// ... of the last N years.
    #[arg(long, default_value_t = 0)]
    keep_yearly: usize,
    /// Keep snapshots within this duration of the newest one (e.g. 7d, 36h).
    #[arg(long, value_name = "DURATION")]
    keep_within: Option<String>,
    /// Keep snapshots with this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "TAG")]
    keep_tags: Vec<String>,
    /// Group by any of host, paths, tags (comma separated).
    #[arg(long, default_value = "host,paths")]
    group_by: String,
    /// Only consider snapshots of this host.
    #[arg(long)]
    host: Option<String>,
    /// Only consider snapshots with this tag.
    #[arg(long)]
    tag: Option<String>,
    /// Show what would be forgotten and why, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Run prune afterwards.
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    prune_args: PruneArgs,
}

fn grouping(s: &str) -> Result<Grouping> {
    let mut g = Grouping {
        host: false,
        paths: false,
        tags: false,
    };
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "host" => g.host = true,
            "paths" => g.paths = true,
            "tags" => g.tags = true,
            other => bail!("--group-by takes host, paths and tags, got {other:?}"),
        }
    }
    Ok(g)
}

/// Applies a retention policy.
pub fn forget(ctx: &Ctx, args: ForgetArgs) -> Result<i32> {
    super::interrupt::release_locks_on_interrupt();
    let within = match &args.keep_within {
        Some(d) => Some(
            chrono::Duration::from_std(
                humantime::parse_duration(d)
                    .with_context(|| format!("--keep-within takes a duration, got {d:?}"))?,
            )
            .context("--keep-within is too long")?,
        ),
        None => None,
    };
    let policy = Policy {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        yearly: args.keep_yearly,
        within,
        tags: args.keep_tags.clone(),
    };
    if policy.is_empty() && args.snapshots.is_empty() {
        bail!("no policy given: add --keep-* rules or snapshot ids (nothing was forgotten)");
    }
    let group = grouping(&args.group_by)?;
    let prune_opts = args.prune_args.options(args.dry_run)?;
    let repo = ctx.open()?;
    if args.prune && !args.dry_run {
        // Refuse before forgetting anything rather than half-way.
        crate::maintenance::append_only::check_prune_may_delete(&repo)?;
    }
    if !args.dry_run {
        // Forget decides on every member's listing, or not at all.
        repo.require_complete_views(None)?;
    }
    let all = repo.snapshots(OnDamage::Refuse)?.objects;
    let mut remove = Vec::new();
    for spec in &args.snapshots {
        remove.push(repo.find_snapshot(spec)?.0);
    }
    if !policy.is_empty() {
        let chosen: Vec<_> = all
            .iter()
            .filter(|(_, s)| args.host.as_ref().is_none_or(|h| &s.hostname == h))
            .filter(|(_, s)| args.tag.as_ref().is_none_or(|t| s.tags.contains(t)))
            .cloned()
            .collect();
        let decisions = apply(&chosen, &policy, group);
        let mut current = String::new();
        for d in &decisions {
            if d.group != current {
                ctx.out.line(format!("{}:", d.group));
                current = d.group.clone();
            }
            let mut v = serde_json::to_value(d)?;
            v["message_type"] = "decision".into();
            ctx.out.json(&v);
            let what = if d.keep { "keep  " } else { "remove" };
            ctx.out.line(format!(
                "  {what} {}  {}  {}",
                d.id.short(),
                d.time
                    .with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S %a"),
                if d.keep {
                    d.reasons.join(", ")
                } else {
                    "matches no keep rule".into()
                }
            ));
            if !d.keep {
                remove.push(d.id);
            }
        }
    }
    remove.sort();
    remove.dedup();
    let kept = all.len() - remove.len();
    if args.dry_run {
        ctx.out.line(format!(
            "would remove {} snapshots, keep {kept}",
            remove.len()
        ));
    } else {
        crate::maintenance::forget::forget_snapshots(&repo, &remove)?;
        ctx.out
            .line(format!("removed {} snapshots, kept {kept}", remove.len()));
    }
    ctx.out.json(&serde_json::json!({
        "message_type": "summary", "removed": remove.len(), "kept": kept, "dry_run": args.dry_run,
    }));
    if args.prune {
        let r = prune(&repo, &prune_opts)?;
        print_prune(ctx, &r, args.dry_run);
        abort_stale_uploads(ctx, &repo, &prune_opts);
    }
    Ok(0)
}

/// Arguments of `prune`.
#[derive(Args, Debug)]
pub struct PruneCmdArgs {
    /// Show what would be done, change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    prune_args: PruneArgs,
}

/// Reclaims space.
pub fn run_prune(ctx: &Ctx, args: PruneCmdArgs) -> Result<i32> {
    super::interrupt::release_locks_on_interrupt();
    let opts = args.prune_args.options(args.dry_run)?;
    let repo = ctx.open()?;
    let r = prune(&repo, &opts)?;
    ctx.report_notices(repo.backend().as_ref());
    print_prune(ctx, &r, args.dry_run);
    abort_stale_uploads(ctx, &repo, &opts);
    Ok(0)
}

/// After a prune: aborts the incomplete multipart uploads older than the
/// grace period (left by killed backups) and says so. Failing to is a
/// warning: the prune itself is done.
fn abort_stale_uploads(ctx: &Ctx, repo: &crate::repo::Repository, opts: &PruneOptions) {
    use crate::maintenance::uploads::abort_stale;
    match abort_stale(repo.backend().as_ref(), opts.grace, opts.dry_run) {
        Ok(r) => {
            if r.aborted > 0 || r.kept > 0 || !r.errors.is_empty() {
                let mut v = serde_json::to_value(&r).expect("report serializes");
                v["message_type"] = "incomplete_uploads".into();
                v["dry_run"] = opts.dry_run.into();
                ctx.out.json(&v);
            }
            if r.aborted > 0 {
                let verb = if opts.dry_run {
                    "would abort"
                } else {
                    "aborted"
                };
                ctx.out.line(format!(
                    "{verb} {} incomplete multipart upload(s) left by interrupted backups",
                    r.aborted
                ));
            }
            if r.kept > 0 {
                ctx.out.line(format!(
                    "kept {} incomplete multipart upload(s) younger than the grace period",
                    r.kept
                ));
            }
            for e in &r.errors {
                ctx.out
                    .warn(format!("cannot abort an incomplete upload: {e}"));
            }
        }
        Err(e) => ctx.out.warn(format!(
            "cannot list incomplete multipart uploads: {}",
            crate::error::one_line(&e)
        )),
    }
}

fn print_prune(ctx: &Ctx, r: &PruneReport, dry_run: bool) {
    let mut v = serde_json::to_value(r).expect("report serializes");
    v["message_type"] = "prune".into();
    v["dry_run"] = dry_run.into();
    ctx.out.json(&v);
    let (del, mark) = if dry_run {
        ("would delete", "would mark")
    } else {
        ("deleted", "marked")
    };
    ctx.out.line(format!(
        "{del} {} packs, freeing {}",
        r.packs_deleted,
        bytes(r.bytes_freed)
    ));
    ctx.out.line(format!(
        "{mark} {} packs ({}) for deletion, {} of them repacked ({} copied)",
        r.packs_marked,
        bytes(r.bytes_marked),
        r.packs_repacked,
        bytes(r.bytes_repacked)
    ));
    if r.orphans_marked > 0 {
        ctx.out.line(format!(
            "{} of the marked packs are left over from interrupted backups (no index names them)",
            r.orphans_marked
        ));
    }
    if r.packs_rescued > 0 {
        ctx.out.line(format!(
            "kept {} marked packs that a snapshot still needs",
            r.packs_rescued
        ));
    }
    for w in &r.waiting_reasons {
        ctx.out.line(format!("waiting: {w}"));
    }
}
