//! Creating entries on disk and applying their metadata.

use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};
use filetime::FileTime;

use crate::repo::tree::{Node, NodeKind};

/// Removes a non-directory entry in the way, so we never write through a
/// symlink that was already at the destination.
fn clear(dest: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(dest) {
        Ok(m) if !m.is_dir() => std::fs::remove_file(dest),
        _ => Ok(()),
    }
}

/// Runs `make`, which creates `dest` exclusively; if something is already
/// there, removes it (unless it is a directory) and tries once more. A fresh
/// target costs no lookup per entry.
fn replacing<T>(dest: &Path, make: impl Fn() -> io::Result<T>) -> io::Result<T> {
    match make() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            clear(dest)?;
            make()
        }
        r => r,
    }
}

/// Creates a new regular file for writing, mode 0600 until its metadata is
/// applied, replacing a non-directory already at `dest` (never following a
/// symlink there).
pub fn open_new(dest: &Path) -> io::Result<File> {
    replacing(dest, || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dest)
    })
}

/// Whose ids restored entries get, decided once per restore.
pub struct Owners {
    /// Only root may give entries to other users.
    root: bool,
    /// Entries we create already belong to (euid, egid): the target was
    /// empty and has no setgid bit, so nothing restored inherits a group.
    fresh_ids: Option<(u32, u32)>,
}

impl Owners {
    /// Decides for a restore into `target` (after it was created).
    pub fn for_target(target: &Path) -> Owners {
        // SAFETY: geteuid and getegid have no preconditions.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let empty = std::fs::read_dir(target).is_ok_and(|mut d| d.next().is_none());
        let setgid = std::fs::metadata(target).is_ok_and(|m| m.mode() & libc::S_ISGID != 0);
        Owners {
            root: euid == 0,
            fresh_ids: (empty && !setgid).then_some((euid, egid)),
        }
    }

    /// Whether `node` needs a chown after we created it.
    fn chown_needed(&self, node: &Node) -> bool {
        self.root && self.fresh_ids != Some((node.uid, node.gid))
    }
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).context("path contains a NUL byte")
}

/// Creates one entry (files at full length, as a sparse file).
pub fn create(dest: &Path, node: &Node) -> Result<()> {
    match node.kind {
        NodeKind::Dir => {
            match std::fs::create_dir(dest) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if !std::fs::symlink_metadata(dest)?.is_dir() {
                        std::fs::remove_file(dest)?;
                        std::fs::create_dir(dest)?;
                    }
                }
                r => r?,
            }
            // Writable while we fill it; the real mode comes last.
            std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700))?;
        }
        NodeKind::File => {
            let f = open_new(dest)?;
            if node.size > 0 {
                f.set_len(node.size)?;
            }
        }
        NodeKind::Symlink => {
            let target = node.target.as_ref().context("symlink without target")?;
            let target = OsStr::from_bytes(&target.0);
            replacing(dest, || std::os::unix::fs::symlink(target, dest))?;
        }
        NodeKind::Fifo | NodeKind::Blockdev | NodeKind::Chardev => {
            let kind = match node.kind {
                NodeKind::Fifo => libc::S_IFIFO,
                NodeKind::Blockdev => libc::S_IFBLK,
                _ => libc::S_IFCHR,
            };
            let c = cpath(dest)?;
            replacing(dest, || {
                // SAFETY: c is a valid NUL-terminated path.
                let rc = unsafe {
                    libc::mknod(
                        c.as_ptr(),
                        kind | 0o600,
                        node.rdev.unwrap_or(0) as libc::dev_t,
                    )
                };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            })
            .context("cannot create special file")?;
        }
        NodeKind::Socket => bail!("sockets are not restored"),
    }
    Ok(())
}

/// Makes `dest` a hard link to `first`.
pub fn hard_link(first: &Path, dest: &Path) -> Result<()> {
    replacing(dest, || std::fs::hard_link(first, dest))
        .with_context(|| format!("linking to {}", first.display()))
}

/// Applies ownership (as root), permissions and modification time to the
/// regular file open as `file`.
pub fn metadata_of_file(file: &File, node: &Node, owners: &Owners) -> Result<()> {
    if owners.chown_needed(node) {
        std::os::unix::fs::fchown(file, Some(node.uid), Some(node.gid))
            .context("cannot set owner")?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(node.mode & 0o7777))
        .context("cannot set permissions")?;
    let mtime = FileTime::from_unix_time(node.mtime, node.mtime_ns);
    filetime::set_file_handle_times(file, Some(mtime), Some(mtime)).context("cannot set times")
}

/// Applies ownership (as root), permissions and modification time.
pub fn metadata(dest: &Path, node: &Node, owners: &Owners) -> Result<()> {
    if owners.chown_needed(node) {
        let c = cpath(dest)?;
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::lchown(c.as_ptr(), node.uid, node.gid) } != 0 {
            return Err(io::Error::last_os_error()).context("cannot set owner");
        }
    }
    let mtime = FileTime::from_unix_time(node.mtime, node.mtime_ns);
    if node.kind == NodeKind::Symlink {
        filetime::set_symlink_file_times(dest, mtime, mtime).context("cannot set link times")?;
        return Ok(());
    }
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(node.mode & 0o7777))
        .context("cannot set permissions")?;
    // By path, without following or opening it: filetime's set_file_times
    // opens the file, which blocks forever on a FIFO.
    filetime::set_symlink_file_times(dest, mtime, mtime).context("cannot set times")?;
    Ok(())
}
