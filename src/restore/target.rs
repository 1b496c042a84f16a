//! The restore target's file system: an early writability probe, and the
//! errors (full, over quota, read-only) that end a restore at once because
//! every later write would fail the same way.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Result, anyhow, bail};

/// A condition of the target file system that stops a restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetFault {
    /// `ENOSPC`.
    NoSpace,
    /// `EDQUOT`.
    Quota,
    /// `EROFS` (for example remounted read-only after an I/O error).
    ReadOnly,
}

impl TargetFault {
    /// The fault an I/O error stands for, if any.
    pub fn of_io(e: &io::Error) -> Option<TargetFault> {
        match e.raw_os_error()? {
            libc::ENOSPC => Some(TargetFault::NoSpace),
            libc::EDQUOT => Some(TargetFault::Quota),
            libc::EROFS => Some(TargetFault::ReadOnly),
            _ => None,
        }
    }

    /// The fault found anywhere in an error chain, if any.
    #[cfg(test)]
    pub fn of(err: &anyhow::Error) -> Option<TargetFault> {
        err.chain()
            .find_map(|c| c.downcast_ref::<io::Error>().and_then(TargetFault::of_io))
    }

    /// The cause, as the user should read it.
    pub fn cause(self) -> &'static str {
        match self {
            TargetFault::NoSpace => "no space left on device",
            TargetFault::Quota => "disk quota exceeded",
            TargetFault::ReadOnly => "read-only file system",
        }
    }

    /// What to do about it.
    pub fn advice(self) -> &'static str {
        match self {
            TargetFault::NoSpace => "free space and run restore again",
            TargetFault::Quota => "free space or raise the quota and run restore again",
            TargetFault::ReadOnly => "make the target writable and run restore again",
        }
    }
}

/// An I/O error as a lower-case phrase without the "(os error N)" suffix:
/// "read-only file system", "permission denied".
pub fn describe(e: &io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => &s[..i],
        None => &s,
    };
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Creates the restore target if it is missing and checks that a file can
/// be created in it, so a read-only or unwritable target fails before the
/// index is loaded or anything is written.
pub fn prepare(dir: &Path) -> Result<()> {
    if let Ok(m) = std::fs::metadata(dir)
        && !m.is_dir()
    {
        bail!(
            "the restore target {} exists and is not a directory; choose a directory for --target",
            dir.display()
        );
    }
    let fail = |e: io::Error| {
        let advice = match TargetFault::of_io(&e) {
            Some(TargetFault::NoSpace | TargetFault::Quota) => {
                "free space or choose another --target"
            }
            _ => "choose a writable --target",
        };
        anyhow!(
            "cannot write to the restore target {}: {}; {advice}",
            dir.display(),
            describe(&e)
        )
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    probe(dir).map_err(fail)
}

/// Creates and drops a file in `dir`: an unnamed one (`O_TMPFILE`, nothing
/// is left behind even if we are killed), or, where the file system does
/// not support that, a named one removed at once.
fn probe(dir: &Path) -> io::Result<()> {
    let unnamed = OpenOptions::new()
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match unnamed {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            let path = dir.join(format!(".strata-restore-probe-{}", std::process::id()));
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            std::fs::remove_file(&path)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_errors_as_phrases() {
        let e = io::Error::from_raw_os_error(libc::EROFS);
        assert_eq!(describe(&e), "read-only file system");
        assert_eq!(TargetFault::of_io(&e), Some(TargetFault::ReadOnly));
        let chained =
            anyhow::Error::from(io::Error::from_raw_os_error(libc::ENOSPC)).context("writing /x");
        assert_eq!(TargetFault::of(&chained), Some(TargetFault::NoSpace));
        let other = anyhow::Error::from(io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(TargetFault::of(&other), None);
    }
}
