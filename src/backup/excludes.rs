//! What a backup leaves out: glob patterns (`--exclude`, `--exclude-file`),
//! directories holding a tag file (`--exclude-if-present`,
//! `--exclude-caches`), other file systems (`--one-file-system`) and large
//! files (`--exclude-larger-than`).
//!
//! The rules apply below the paths the user named, never to a named path
//! itself. Everything left out is counted (`excluded` in the summary) and
//! named at debug level (`-v`), so nothing disappears unnoticed.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use globset::{Glob, GlobSet, GlobSetBuilder};

/// The first line of a valid `CACHEDIR.TAG` starts with this
/// (<https://bford.info/cachedir/>).
pub const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// Exclude rules besides glob patterns (those are
/// [`BackupOptions::excludes`](super::BackupOptions::excludes)).
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Leave out a directory that contains an entry of one of these names
    /// (the whole directory, the tag file included).
    pub exclude_if_present: Vec<String>,
    /// Leave out a directory that holds a `CACHEDIR.TAG` file starting with
    /// [`CACHEDIR_SIGNATURE`].
    pub exclude_caches: bool,
    /// Do not cross into other file systems below a named path: a mount
    /// point is recorded as an empty directory, other entries on another
    /// device (bind-mounted files) are left out.
    pub one_file_system: bool,
    /// Leave out regular files larger than this many bytes.
    pub exclude_larger_than: Option<u64>,
}

impl Filters {
    /// True when no rule is set.
    pub fn is_empty(&self) -> bool {
        self.exclude_if_present.is_empty()
            && !self.exclude_caches
            && !self.one_file_system
            && self.exclude_larger_than.is_none()
    }
}

/// Reads an exclude file: one glob pattern a line (as `--exclude`), leading
/// and trailing white space removed; blank lines and lines starting with `#`
/// are ignored (write `[#]` for a pattern that starts with `#`). Each
/// pattern is checked; an error names the file and line.
pub fn read_exclude_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read exclude file {}", path.display()))?;
    let text = String::from_utf8(text).map_err(|_| {
        anyhow::anyhow!(
            "exclude file {} is not UTF-8 text: write one glob pattern a line",
            path.display()
        )
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let p = line.trim();
        if p.is_empty() || p.starts_with('#') {
            continue;
        }
        if let Err(e) = Glob::new(p) {
            bail!(
                "exclude file {}, line {}: bad pattern {p:?}: {}",
                path.display(),
                i + 1,
                e.kind()
            );
        }
        out.push(p.to_string());
    }
    Ok(out)
}

/// Builds the glob set of `--exclude` patterns.
pub(crate) fn build_excludes(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).with_context(|| format!("bad --exclude pattern {p:?}"))?);
    }
    Ok(b.build()?)
}

/// True when `path` matches a pattern: a pattern without `/` matches a name
/// at any depth, one with `/` matches the absolute path.
pub(crate) fn excluded(set: &GlobSet, path: &Path) -> bool {
    !set.is_empty() && (set.is_match(path) || path.file_name().is_some_and(|n| set.is_match(n)))
}

/// What the rules say about one entry below a named path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Back it up.
    Keep,
    /// A directory on another file system (`--one-file-system`): record it
    /// as an empty directory.
    MountPoint,
    /// Leave it out, for this reason.
    Skip(&'static str),
}

/// Compiled exclude rules.
#[derive(Clone)]
pub(crate) struct Excludes {
    globs: GlobSet,
    filters: Filters,
}

impl Excludes {
    /// Compiles the patterns and takes the other rules as they are.
    pub(crate) fn new(patterns: &[String], filters: &Filters) -> Result<Excludes> {
        if filters
            .exclude_if_present
            .iter()
            .any(|n| n.is_empty() || n == "." || n == ".." || n.contains('/') || n.contains('\0'))
        {
            bail!("--exclude-if-present takes a plain file name, such as .nobackup");
        }
        Ok(Excludes {
            globs: build_excludes(patterns)?,
            filters: filters.clone(),
        })
    }

    /// True when the name or path matches a glob pattern (checked before
    /// `lstat`).
    pub(crate) fn by_name(&self, path: &Path) -> bool {
        excluded(&self.globs, path)
    }

    /// True when rules need the device of the directory being walked.
    pub(crate) fn wants_device(&self) -> bool {
        self.filters.one_file_system
    }

    /// The rules that need the entry's `lstat` metadata; `dir_dev` is the
    /// device of the directory it is in (with `--one-file-system`).
    pub(crate) fn by_meta(&self, path: &Path, meta: &Metadata, dir_dev: Option<u64>) -> Verdict {
        let f = &self.filters;
        if f.one_file_system
            && let Some(dev) = dir_dev
            && meta.dev() != dev
        {
            return match meta.is_dir() {
                true => Verdict::MountPoint,
                false => Verdict::Skip("on another file system"),
            };
        }
        if meta.is_file() {
            if let Some(limit) = f.exclude_larger_than
                && meta.len() > limit
            {
                return Verdict::Skip("larger than --exclude-larger-than");
            }
            return Verdict::Keep;
        }
        if !meta.is_dir() {
            return Verdict::Keep;
        }
        for name in &f.exclude_if_present {
            if std::fs::symlink_metadata(path.join(name)).is_ok() {
                return Verdict::Skip("holds an --exclude-if-present file");
            }
        }
        if f.exclude_caches && is_cache_dir(path) {
            return Verdict::Skip("holds a CACHEDIR.TAG");
        }
        Verdict::Keep
    }
}

/// True when `dir/CACHEDIR.TAG` is a regular file starting with the
/// signature (a tag without it is not honoured, as the specification says).
pub fn is_cache_dir(dir: &Path) -> bool {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // A tag that is a symlink or a fifo is not read.
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join("CACHEDIR.TAG"))
    else {
        return false;
    };
    let mut head = Vec::with_capacity(CACHEDIR_SIGNATURE.len());
    file.take(CACHEDIR_SIGNATURE.len() as u64)
        .read_to_end(&mut head)
        .is_ok()
        && head == CACHEDIR_SIGNATURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_file_skips_comments_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ex");
        std::fs::write(&f, "# caches\n*.tmp\n\n   \n  /data/cache  \n[#]x\n").unwrap();
        assert_eq!(
            read_exclude_file(&f).unwrap(),
            vec!["*.tmp", "/data/cache", "[#]x"]
        );
        std::fs::write(&f, "ok\n[unclosed\n").unwrap();
        let e = format!("{:#}", read_exclude_file(&f).unwrap_err());
        assert!(e.contains("line 2") && e.contains("[unclosed"), "{e}");
        let e = format!(
            "{:#}",
            read_exclude_file(&dir.path().join("nope")).unwrap_err()
        );
        assert!(e.contains("cannot read exclude file"), "{e}");
    }

    #[test]
    fn cache_tags_need_the_signature() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_cache_dir(dir.path()));
        let tag = dir.path().join("CACHEDIR.TAG");
        std::fs::write(&tag, "Signature: 8a477f597d28d172789f06886806bc5").unwrap();
        assert!(!is_cache_dir(dir.path()));
        std::fs::write(
            &tag,
            "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag.\n",
        )
        .unwrap();
        assert!(is_cache_dir(dir.path()));
    }
}
