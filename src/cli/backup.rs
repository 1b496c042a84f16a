//! `strata backup`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::session::{Ctx, default_threads};
use std::sync::Arc;

use crate::backup::{
    BackupOptions, CompressionSetting, Filters, Source, read_exclude_file, run_backup,
};
use crate::error::exit;
use crate::repo::snapshot::BackupMode;
use crate::report::{bytes, rate};

/// Arguments of `backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up.
    paths: Vec<PathBuf>,
    /// full: read everything; incremental: skip files unchanged since the last
    /// snapshot; differential: skip files unchanged since the last full one.
    #[arg(long, value_enum, default_value_t = BackupMode::Incremental)]
    mode: BackupMode,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Host name to record (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// Leave out paths matching a glob (repeatable); without `/` it matches names.
    #[arg(long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    /// Read exclude patterns from FILE (repeatable): one glob a line, as
    /// --exclude; blank lines and lines starting with `#` are ignored.
    #[arg(long = "exclude-file", value_name = "FILE")]
    exclude_files: Vec<PathBuf>,
    /// Leave out every directory that contains an entry named NAME
    /// (repeatable), e.g. .nobackup.
    #[arg(long = "exclude-if-present", value_name = "NAME")]
    exclude_if_present: Vec<String>,
    /// Leave out directories holding a valid CACHEDIR.TAG
    /// (https://bford.info/cachedir/).
    #[arg(long)]
    exclude_caches: bool,
    /// Stay on the file system of each named path: mount points below it
    /// are recorded as empty directories.
    #[arg(long)]
    one_file_system: bool,
    /// Compression of new data: off, fastest, default (the repository's
    /// level), max, or a zstd level from -7 to 22 (default: [repository]
    /// compression in the config file, else default).
    #[arg(long, value_name = "LEVEL", allow_negative_numbers = true)]
    compression: Option<CompressionSetting>,
    /// Leave out files larger than SIZE (e.g. 10MiB, 2GiB; K, M, G mean
    /// 1000s and Ki, Mi, Gi 1024s, as in --limit-upload).
    #[arg(long, value_name = "SIZE", value_parser = crate::report::parse_size)]
    exclude_larger_than: Option<u64>,
    /// Back up standard input as one file.
    #[arg(long)]
    stdin: bool,
    /// File name for --stdin.
    #[arg(long, value_name = "NAME", default_value = "stdin")]
    stdin_name: String,
    /// Reader and compressor threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Record this time for the snapshot instead of now (RFC 3339, e.g.
    /// 2026-01-31T23:00:00Z), as when importing older backups.
    #[arg(long, value_name = "TIME")]
    time: Option<String>,
    /// Pack uploads in flight at once, each to every pool member (default:
    /// 2 for a local disk, 4 for object stores).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    uploads: Option<u16>,
    /// Do not store extended attributes, POSIX ACLs and file capabilities.
    #[arg(long)]
    no_xattrs: bool,
}

/// Runs a backup.
pub fn run(ctx: &Ctx, args: BackupArgs) -> Result<i32> {
    super::interrupt::release_locks_on_interrupt();
    crate::fsmeta::capture_xattrs(!args.no_xattrs);
    let filters = Filters {
        exclude_if_present: args.exclude_if_present.clone(),
        exclude_caches: args.exclude_caches,
        one_file_system: args.one_file_system,
        exclude_larger_than: args.exclude_larger_than,
    };
    let mut excludes = args.excludes.clone();
    for f in &args.exclude_files {
        excludes.extend(read_exclude_file(f)?);
    }
    let source = if args.stdin {
        if !args.paths.is_empty() {
            bail!("--stdin takes no paths");
        }
        if !excludes.is_empty() || !filters.is_empty() {
            bail!("exclude options apply to paths, not to --stdin: remove them");
        }
        Source::Stdin {
            name: args.stdin_name.clone(),
            reader: Box::new(std::io::stdin()),
        }
    } else {
        if args.paths.is_empty() {
            bail!("nothing to back up: give one or more paths, or --stdin");
        }
        Source::Paths(args.paths.clone())
    };
    let time = match &args.time {
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .with_context(|| {
                    format!("--time takes an RFC 3339 time such as 2026-01-31T23:00:00Z, got {t:?}")
                })?
                .with_timezone(&chrono::Utc),
        ),
        None => None,
    };
    let repo = ctx.open()?;
    let progress = Arc::new(crate::progress::Counters::default());
    let display = crate::progress::Display::start("backup", progress.clone(), ctx.out);
    let opts = BackupOptions {
        time,
        source,
        mode: args.mode,
        tags: args.tags,
        host: args.host.unwrap_or_else(crate::sysinfo::hostname),
        excludes,
        filters,
        compression: args.compression.or(ctx.compression).unwrap_or_default(),
        threads: args.threads.unwrap_or_else(default_threads),
        uploads: args
            .uploads
            .map_or_else(|| repo.backend().default_uploads(), usize::from),
        scan_totals: display.active(),
        progress,
        cancel: None,
    };
    let result = run_backup(repo.clone(), opts);
    display.finish();
    ctx.report_notices(repo.backend().as_ref());
    let report = result?;
    for w in &report.warnings {
        ctx.out.warn(w);
    }
    let s = &report.snapshot.summary;
    let backup_rate = rate(s.total_bytes, s.duration_s);
    let parent = report.snapshot.parent.map(|p| p.to_hex());
    ctx.out.json(&serde_json::json!({
        "message_type": "summary",
        "snapshot_id": report.snapshot_id.to_hex(),
        "files_new": s.files_new,
        "files_changed": s.files_changed,
        "files_unmodified": s.files_unmodified,
        "dirs": s.dirs,
        "bytes_read": s.bytes_read,
        "total_bytes": s.total_bytes,
        "data_added": s.data_added,
        "total_duration_s": s.duration_s,
        "backup_rate_bytes_per_s": backup_rate,
        "mode": report.snapshot.mode,
        "parent": parent,
        "warnings": report.warnings.len(),
        "excluded": s.excluded,
        "compression": s.compression,
        "requests": crate::store::request_tally(),
    }));
    ctx.out.line(format!(
        "files: {} new, {} changed, {} unmodified; {} directories",
        s.files_new, s.files_changed, s.files_unmodified, s.dirs
    ));
    if s.excluded > 0 {
        ctx.out.line(format!(
            "excluded: {} entries left out by exclude rules (-v names them)",
            s.excluded
        ));
    }
    ctx.out.line(format!(
        "read {} of {}, added {} to the repository",
        bytes(s.bytes_read),
        bytes(s.total_bytes),
        bytes(s.data_added)
    ));
    ctx.out.line(format!(
        "{} backup in {:.2}s ({}/s){}",
        report.snapshot.mode,
        s.duration_s,
        bytes(backup_rate as u64),
        parent
            .map(|p| format!(", parent {}", &p[..8]))
            .unwrap_or_default()
    ));
    ctx.out
        .line(format!("snapshot {} saved", report.snapshot_id.short()));
    if report.warnings.is_empty() {
        Ok(exit::OK)
    } else {
        ctx.out.line(format!(
            "{} source file(s) could not be read completely (see warnings); the snapshot holds everything else",
            report.warnings.len()
        ));
        Ok(exit::INCOMPLETE)
    }
}
