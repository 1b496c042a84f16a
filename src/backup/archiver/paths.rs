//! The named paths: made absolute, `..` removed lexically, as snapshots
//! record them.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Makes paths absolute and lexically normal, checks they exist, and keeps
/// those the snapshot records (see [`snapshot_paths`]).
pub(super) fn normalize_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        bail!("nothing to back up: give one or more paths, or --stdin");
    }
    let cwd = std::env::current_dir()?;
    for p in paths {
        std::fs::symlink_metadata(absolute(&cwd, p))
            .with_context(|| format!("cannot back up {}", p.display()))?;
    }
    Ok(snapshot_paths(&cwd, paths))
}

/// The paths a snapshot of `paths` records: made absolute from `cwd` and
/// lexically normal (`..` removes the name before it, as the user wrote it,
/// not the target of a symlink), sorted, without duplicates, and without any
/// path inside another given path unless a symlink lies between the two
/// (then the inner path is what makes the walk follow that symlink).
/// Symlinks stay in the names: the snapshot records the names the user gave.
pub fn snapshot_paths(cwd: &Path, paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = paths.iter().map(|p| absolute(cwd, p)).collect();
    out.sort();
    out.dedup();
    let all = out.clone();
    out.retain(|p| {
        !all.iter()
            .any(|q| q != p && p.starts_with(q) && !symlink_between(q, p))
    });
    out
}

/// `cwd.join(p)`, lexically normal.
pub(super) fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    let mut abs = PathBuf::from("/");
    for comp in cwd.join(p).components() {
        match comp {
            Component::ParentDir => {
                abs.pop();
            }
            Component::Normal(n) => abs.push(n),
            _ => {}
        }
    }
    abs
}

/// True when a name below `outer` down to `inner` (itself included) is a
/// symlink: walking `outer` would store it as a link, not what `inner` names.
pub(super) fn symlink_between(outer: &Path, inner: &Path) -> bool {
    let mut at = outer.to_path_buf();
    let Ok(rest) = inner.strip_prefix(outer) else {
        return false;
    };
    rest.iter().any(|name| {
        at.push(name);
        std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink())
    })
}
