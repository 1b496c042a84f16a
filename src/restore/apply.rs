//! Creating entries on disk and applying their metadata.

use std::ffi::{CString, OsStr};
use std::fs::OpenOptions;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).context("path contains a NUL byte")
}

/// Creates one entry (files at full length, as a sparse file).
pub fn create(dest: &Path, node: &Node) -> Result<()> {
    match node.kind {
        NodeKind::Dir => {
            match std::fs::symlink_metadata(dest) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    std::fs::remove_file(dest)?;
                    std::fs::create_dir(dest)?;
                }
                Err(_) => std::fs::create_dir(dest)?,
            }
            // Writable while we fill it; the real mode comes last.
            std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700))?;
        }
        NodeKind::File => {
            clear(dest)?;
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(dest)?;
            f.set_len(node.size)?;
        }
        NodeKind::Symlink => {
            clear(dest)?;
            let target = node.target.as_ref().context("symlink without target")?;
            std::os::unix::fs::symlink(OsStr::from_bytes(&target.0), dest)?;
        }
        NodeKind::Fifo | NodeKind::Blockdev | NodeKind::Chardev => {
            clear(dest)?;
            let kind = match node.kind {
                NodeKind::Fifo => libc::S_IFIFO,
                NodeKind::Blockdev => libc::S_IFBLK,
                _ => libc::S_IFCHR,
            };
            let c = cpath(dest)?;
            // SAFETY: c is a valid NUL-terminated path.
            let rc = unsafe {
                libc::mknod(
                    c.as_ptr(),
                    kind | 0o600,
                    node.rdev.unwrap_or(0) as libc::dev_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error()).context("cannot create special file");
            }
        }
        NodeKind::Socket => bail!("sockets are not restored"),
    }
    Ok(())
}

/// Makes `dest` a hard link to `first`.
pub fn hard_link(first: &Path, dest: &Path) -> Result<()> {
    clear(dest)?;
    std::fs::hard_link(first, dest).with_context(|| format!("linking to {}", first.display()))
}

/// Applies ownership (as root), permissions and modification time.
pub fn metadata(dest: &Path, node: &Node) -> Result<()> {
    if crate::sysinfo::is_root() {
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
