//! Creating entries on disk and applying their metadata, always relative to
//! a directory descriptor and never following a symlink.
//!
//! The target root is opened once; every directory restored is created with
//! `mkdirat` and opened with `O_DIRECTORY|O_NOFOLLOW` relative to its
//! parent's descriptor, and held open for the rest of the restore. Entries
//! are created, renamed and changed with `*at` calls on those descriptors
//! (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`), and owner, mode and times of files
//! and directories are set through their own descriptors (`fchown`,
//! `fchmod`, `futimens`). Swapping a directory or file in the target for a
//! symlink therefore never redirects a write, a chmod or a chown outside it.
//! When a directory descriptor cannot be held (descriptor limit), it is
//! opened again from the root with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`, or component by component with `O_NOFOLLOW` where
//! the kernel lacks `openat2`.
//!
//! A regular file is written under a temporary name in its directory
//! ([`partial_name`]: `.NAME.strata-partial`) and renamed to its own name only
//! once complete and its metadata applied, so a file under its own name is
//! always complete.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::repo::tree::{Node, NodeKind};

/// Suffix of the temporary name a file is written under.
pub const PARTIAL_SUFFIX: &str = ".strata-partial";

/// The name file `name` is written under until it is complete:
/// `.NAME.strata-partial`, or `.strata-partial-HASH` when that would be
/// longer than a name may be.
pub fn partial_name(name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(name.len() + 1 + PARTIAL_SUFFIX.len());
    if name.len() + 1 + PARTIAL_SUFFIX.len() <= 255 {
        v.push(b'.');
        v.extend_from_slice(name);
        v.extend_from_slice(PARTIAL_SUFFIX.as_bytes());
    } else {
        v.extend_from_slice(b".strata-partial-");
        v.extend_from_slice(blake3::hash(name).to_hex()[..32].as_bytes());
    }
    v
}

/// A name as a C string (tree names never hold a NUL; refused if one does).
pub fn cname(name: &[u8]) -> io::Result<CString> {
    CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `openat` with `O_CLOEXEC` added.
pub fn openat(dir: BorrowedFd, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: name is NUL-terminated; the returned descriptor is owned by us.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: fd was just opened and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Flags that open a directory and never a symlink.
pub const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;

/// Set once `openat2` turned out to be missing (old kernel, seccomp).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens the directory `rel` below `root` without following any symlink and
/// without leaving `root`: `openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)`,
/// else one `openat(O_NOFOLLOW)` per component.
pub fn open_beneath(root: BorrowedFd, rel: &Path) -> io::Result<OwnedFd> {
    let c = cname(rel.as_os_str().as_bytes())?;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        // SAFETY: open_how is plain data; all zero is a valid value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (DIR_FLAGS | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
        // SAFETY: c is NUL-terminated, how is a valid open_how of the given size.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if rc >= 0 {
            // SAFETY: a fresh descriptor nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) });
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOSYS | libc::EPERM) => NO_OPENAT2.store(true, Ordering::Relaxed),
            _ => return Err(e),
        }
    }
    let mut cur: Option<OwnedFd> = None;
    for comp in rel.components() {
        let Component::Normal(name) = comp else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "path leaves the target",
            ));
        };
        let n = cname(name.as_bytes())?;
        let base = cur.as_ref().map_or(root, |f| f.as_fd());
        cur = Some(openat(base, &n, DIR_FLAGS, 0)?);
    }
    match cur {
        Some(fd) => Ok(fd),
        None => root.try_clone_to_owned(),
    }
}

/// A directory descriptor: held for the whole restore, or opened for one use.
pub enum DirRef<'a> {
    /// Held in [`Dirs`].
    Held(BorrowedFd<'a>),
    /// Opened again from the root.
    Opened(OwnedFd),
}

impl AsFd for DirRef<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            DirRef::Held(fd) => *fd,
            DirRef::Opened(fd) => fd.as_fd(),
        }
    }
}

/// Position standing for the target root in [`Dirs::get`].
pub const ROOT: usize = usize::MAX;

/// The target root and the directories restored, by entry position.
pub struct Dirs {
    root: OwnedFd,
    held: Vec<Option<OwnedFd>>,
    /// How many more descriptors may be held.
    budget: usize,
    /// How many files being filled may be held open (see [`Dirs::file_budget`]).
    files: usize,
}

impl Dirs {
    /// Opens the target (which exists) for `entries` entries.
    pub fn open(target: &Path, entries: usize) -> io::Result<Dirs> {
        let c = cname(target.as_os_str().as_bytes())?;
        let limit = descriptor_limit();
        // SAFETY: c is NUL-terminated.
        let fd = cvt(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        Ok(Dirs {
            // SAFETY: a fresh descriptor nothing else owns.
            root: unsafe { OwnedFd::from_raw_fd(fd) },
            held: (0..entries).map(|_| None).collect(),
            budget: limit / 2,
            files: limit / 4,
        })
    }

    /// How many files being filled may be kept open; the others are opened
    /// again by name for each write (`O_NOFOLLOW`, and checked to be the
    /// same inode).
    pub fn file_budget(&self) -> usize {
        self.files
    }

    /// Keeps the descriptor of directory entry `pos`, if the budget allows.
    pub fn hold(&mut self, pos: usize, fd: OwnedFd) {
        if self.budget > 0 {
            self.budget -= 1;
            self.held[pos] = Some(fd);
        }
    }

    /// The directory at entry `pos` (relative path `rel`), or the root for [`ROOT`].
    pub fn get(&self, pos: usize, rel: &Path) -> io::Result<DirRef<'_>> {
        if pos == ROOT {
            return Ok(DirRef::Held(self.root.as_fd()));
        }
        match &self.held[pos] {
            Some(fd) => Ok(DirRef::Held(fd.as_fd())),
            None => open_beneath(self.root.as_fd(), rel).map(DirRef::Opened),
        }
    }
}

/// Raises the soft descriptor limit to the hard one and returns it. A
/// restore keeps up to half of it for directories and a quarter for files
/// being filled; the rest is for workers and the network.
fn descriptor_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid rlimit to fill and then pass back.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 256;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur.min(1 << 20) as usize
}

/// Runs `make`, which creates `name` in `dir` exclusively; if something is
/// already there, removes it (unless it is a directory) and tries once more.
/// A fresh target costs no lookup per entry.
fn replacing<T>(dir: BorrowedFd, name: &CStr, make: impl Fn() -> io::Result<T>) -> io::Result<T> {
    match make() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            unlink(dir, name)?;
            make()
        }
        r => r,
    }
}

/// Removes the non-directory `name` in `dir` (never a directory: that fails
/// with "is a directory").
pub fn unlink(dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    // SAFETY: name is NUL-terminated.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(|_| ())
}

/// `lstat` of `name` in `dir`, or None when nothing is there.
pub fn lstat_at(dir: BorrowedFd, name: &CStr) -> io::Result<Option<libc::stat>> {
    // SAFETY: st is plain data filled by the call; name is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    match cvt(rc) {
        Ok(_) => Ok(Some(st)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The link count of an `lstat` result (its type differs between targets).
#[allow(clippy::unnecessary_cast)]
pub fn nlink(st: &libc::stat) -> u64 {
    st.st_nlink as u64
}

/// Creates (or keeps) directory `name` in `dir`, mode 0700 while it is
/// filled, and opens it; true when it was already there. Anything else in
/// the way (a file, a symlink) is removed first.
pub fn create_dir(dir: BorrowedFd, name: &CStr) -> io::Result<(OwnedFd, bool)> {
    // SAFETY: name is NUL-terminated.
    let made = cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o700) });
    match made {
        Ok(_) => openat(dir, name, DIR_FLAGS, 0).map(|fd| (fd, false)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            match openat(dir, name, DIR_FLAGS, 0) {
                Ok(fd) => {
                    // Kept from an earlier restore: writable while we fill it.
                    // SAFETY: fd is an open directory.
                    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), 0o700) })?;
                    Ok((fd, true))
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
                    unlink(dir, name)?;
                    // SAFETY: name is NUL-terminated.
                    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o700) })?;
                    openat(dir, name, DIR_FLAGS, 0).map(|fd| (fd, false))
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Creates the file `name` (a temporary name) in `dir` for writing, mode
/// 0600 until its metadata is applied, replacing a leftover at that name.
pub fn create_file(dir: BorrowedFd, name: &CStr) -> io::Result<File> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    replacing(dir, name, || openat(dir, name, flags, 0o600)).map(File::from)
}

/// Opens the file `name` in `dir` for writing again (never through a symlink).
pub fn reopen_file(dir: BorrowedFd, name: &CStr) -> io::Result<File> {
    openat(dir, name, libc::O_WRONLY | libc::O_NOFOLLOW, 0).map(File::from)
}

/// Gives the complete file `from` in `dir` its own name `to`, replacing a
/// non-directory there.
pub fn publish(dir: BorrowedFd, from: &CStr, to: &CStr) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated.
    cvt(unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) })
        .map(|_| ())
}

/// Creates a symlink, fifo or device node `name` in `dir`. A fifo or device
/// gets its permission bits here (the caller has set the umask to 0).
pub fn create_special(dir: BorrowedFd, name: &CStr, node: &Node) -> io::Result<()> {
    match node.kind {
        NodeKind::Symlink => {
            let target = node
                .target
                .as_ref()
                .ok_or_else(|| io::Error::other("symlink without target"))?;
            let t = cname(&target.0)?;
            replacing(dir, name, || {
                // SAFETY: both strings are NUL-terminated.
                cvt(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
                    .map(|_| ())
            })
        }
        NodeKind::Fifo | NodeKind::Blockdev | NodeKind::Chardev => {
            let kind = match node.kind {
                NodeKind::Fifo => libc::S_IFIFO,
                NodeKind::Blockdev => libc::S_IFBLK,
                _ => libc::S_IFCHR,
            };
            replacing(dir, name, || {
                // SAFETY: name is NUL-terminated.
                cvt(unsafe {
                    libc::mknodat(
                        dir.as_raw_fd(),
                        name.as_ptr(),
                        kind | (node.mode & 0o7777),
                        node.rdev.unwrap_or(0) as libc::dev_t,
                    )
                })
                .map(|_| ())
            })
        }
        _ => Err(io::Error::other("not a special file")),
    }
}

/// Makes `name` in `dir` a hard link to `first` in `first_dir`; an entry
/// already linked to it is kept (false is returned), anything else replaced.
pub fn hard_link(
    first_dir: BorrowedFd,
    first: &CStr,
    dir: BorrowedFd,
    name: &CStr,
) -> io::Result<bool> {
    let link = || {
        // SAFETY: both names are NUL-terminated; flags 0 links `first` itself.
        cvt(unsafe {
            libc::linkat(
                first_dir.as_raw_fd(),
                first.as_ptr(),
                dir.as_raw_fd(),
                name.as_ptr(),
                0,
            )
        })
        .map(|_| ())
    };
    match link() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if let (Some(a), Some(b)) = (lstat_at(first_dir, first)?, lstat_at(dir, name)?)
                && (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
            {
                return Ok(false);
            }
            unlink(dir, name)?;
            link().map(|()| true)
        }
        r => r.map(|()| true),
    }
}

/// The names in the directory open as `dir` (without `.` and `..`).
pub fn list_dir(dir: BorrowedFd) -> io::Result<Vec<CString>> {
    let fd = openat(dir, c".", DIR_FLAGS & !libc::O_NOFOLLOW, 0)?;
    // SAFETY: fdopendir takes over the descriptor (closed by closedir).
    let d = unsafe { libc::fdopendir(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
    if d.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: d is an open DIR stream; the entry is read before the next call.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is a NUL-terminated name inside the entry.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    // SAFETY: d is open and not used again.
    unsafe { libc::closedir(d) };
    Ok(names)
}

/// Removes `name` in `dir` and, if it is a directory, everything below it,
/// never following a symlink.
pub fn remove_tree(dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let sub = openat(dir, name, DIR_FLAGS, 0)?;
        for child in list_dir(sub.as_fd())? {
            remove_tree(sub.as_fd(), &child)?;
        }
        // SAFETY: name is NUL-terminated.
        cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) })?;
        Ok(())
    } else {
        unlink(dir, name)
    }
}

/// Whose ids restored entries get, decided once per restore.
pub struct Owners {
    /// Only root may give entries to other users.
    root: bool,
    /// Entries we create already belong to (euid, egid): the target was
    /// empty and has no setgid bit, so nothing restored inherits a group.
    fresh_ids: Option<(u32, u32)>,
    /// The target was empty: nothing restored can already be there.
    pub fresh: bool,
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
            fresh: empty,
        }
    }

    /// Whether `node` needs a chown after we created it.
    fn chown_needed(&self, node: &Node) -> bool {
        self.root && self.fresh_ids != Some((node.uid, node.gid))
    }

    /// Whether an existing entry's owner differs from the node's, where we
    /// could change it.
    pub fn owner_differs(&self, st: &libc::stat, node: &Node) -> bool {
        self.root && (st.st_uid, st.st_gid) != (node.uid, node.gid)
    }
}

fn times(node: &Node) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: node.mtime as libc::time_t,
        tv_nsec: node.mtime_ns as libc::c_long,
    };
    [t, t]
}

/// Applies ownership (as root), permissions and modification time (atime
/// the same) to the file or directory open as `fd`.
pub fn metadata_of_fd(fd: BorrowedFd, node: &Node, owners: &Owners) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    if owners.chown_needed(node) {
        // SAFETY: raw is an open descriptor.
        cvt(unsafe { libc::fchown(raw, node.uid, node.gid) })
            .map_err(|e| io::Error::new(e.kind(), format!("cannot set owner: {e}")))?;
    }
    // SAFETY: raw is an open descriptor.
    cvt(unsafe { libc::fchmod(raw, (node.mode & 0o7777) as libc::mode_t) })
        .map_err(|e| io::Error::new(e.kind(), format!("cannot set permissions: {e}")))?;
    let t = times(node);
    // SAFETY: t holds two valid timespecs.
    cvt(unsafe { libc::futimens(raw, t.as_ptr()) })
        .map_err(|e| io::Error::new(e.kind(), format!("cannot set times: {e}")))?;
    Ok(())
}

/// Applies ownership (as root) and times to a symlink, fifo or device node
/// `name` in `dir` without following it (their permission bits were given
/// when they were created; a symlink has none).
pub fn metadata_at(dir: BorrowedFd, name: &CStr, node: &Node, owners: &Owners) -> io::Result<()> {
    if owners.chown_needed(node) {
        // SAFETY: name is NUL-terminated.
        cvt(unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                name.as_ptr(),
                node.uid,
                node.gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map_err(|e| io::Error::new(e.kind(), format!("cannot set owner: {e}")))?;
    }
    let t = times(node);
    // SAFETY: name is NUL-terminated and t holds two valid timespecs.
    cvt(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map_err(|e| io::Error::new(e.kind(), format!("cannot set times: {e}")))?;
    Ok(())
}

/// Extended attributes that could not be set, for one warning at the end.
#[derive(Default)]
pub struct XattrFailures {
    /// How many.
    count: std::sync::atomic::AtomicU64,
    /// Their namespaces (`security`, `trusted`, ...) and the first cause.
    seen: std::sync::Mutex<(std::collections::BTreeSet<String>, Option<String>)>,
}

impl XattrFailures {
    fn record(&self, name: &[u8], e: &io::Error) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let ns = name.split(|&b| b == b'.').next().unwrap_or(name);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.0.insert(format!("{}.*", String::from_utf8_lossy(ns)));
        if seen.1.is_none() {
            seen.1 = Some(super::target::describe(e));
        }
    }

    /// The one warning, if any attribute failed.
    pub fn warning(&self) -> Option<String> {
        let n = self.count.load(Ordering::Relaxed);
        if n == 0 {
            return None;
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let names: Vec<&str> = seen.0.iter().map(String::as_str).collect();
        Some(format!(
            "{n} extended attribute(s) not restored ({}: {}){}",
            names.join(", "),
            seen.1.as_deref().unwrap_or("refused"),
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                "; restore as root to restore every namespace"
            } else {
                ""
            }
        ))
    }
}

/// Sets the node's extended attributes (ACLs and capabilities included) on
/// the file or directory open as `fd`: after its owner (a chown clears
/// capabilities) and permissions (an access ACL carries the group bits).
pub fn set_xattrs(fd: BorrowedFd, node: &Node, fails: &XattrFailures) {
    for x in &node.xattrs {
        let Ok(name) = CString::new(x.name.0.clone()) else {
            continue;
        };
        // SAFETY: name is NUL-terminated; value/len describe a readable buffer.
        let rc = unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                name.as_ptr(),
                x.value.as_ptr() as *const libc::c_void,
                x.value.len(),
                0,
            )
        };
        if rc != 0 {
            fails.record(&x.name.0, &io::Error::last_os_error());
        }
    }
}

/// Sets the node's extended attributes on the symlink, fifo or device node
/// `name` in `dir`, without following it: `lsetxattr` on
/// `/proc/self/fd/DIR/NAME`, whose directory part is the held descriptor
/// itself.
pub fn set_xattrs_at(dir: BorrowedFd, name: &CStr, node: &Node, fails: &XattrFailures) {
    if node.xattrs.is_empty() {
        return;
    }
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.to_bytes());
    let Ok(path) = CString::new(path) else {
        return;
    };
    for x in &node.xattrs {
        let Ok(xname) = CString::new(x.name.0.clone()) else {
            continue;
        };
        // SAFETY: both strings are NUL-terminated; value/len describe a readable buffer.
        let rc = unsafe {
            libc::lsetxattr(
                path.as_ptr(),
                xname.as_ptr(),
                x.value.as_ptr() as *const libc::c_void,
                x.value.len(),
                0,
            )
        };
        if rc != 0 {
            fails.record(&x.name.0, &io::Error::last_os_error());
        }
    }
}

/// Sets the umask for as long as it lives, then restores the old one.
pub struct Umask(libc::mode_t);

impl Umask {
    /// Sets `mask`.
    pub fn set(mask: libc::mode_t) -> Umask {
        // SAFETY: umask has no preconditions.
        Umask(unsafe { libc::umask(mask) })
    }
}

impl Drop for Umask {
    fn drop(&mut self) {
        // SAFETY: umask has no preconditions.
        unsafe { libc::umask(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names_stay_within_name_max() {
        assert_eq!(partial_name(b"a.txt"), b".a.txt.strata-partial");
        let long = vec![b'x'; 250];
        let p = partial_name(&long);
        assert!(p.len() <= 255 && p.starts_with(b".strata-partial-"));
    }

    #[test]
    fn open_beneath_refuses_symlinks() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink("/", d.path().join("a/up")).unwrap();
        let root = File::open(d.path()).unwrap();
        assert!(open_beneath(root.as_fd(), Path::new("a/b")).is_ok());
        assert!(open_beneath(root.as_fd(), Path::new("a/up")).is_err());
        assert!(open_beneath(root.as_fd(), Path::new("a/up/tmp")).is_err());
        // The same without openat2: one O_NOFOLLOW step at a time.
        NO_OPENAT2.store(true, Ordering::Relaxed);
        assert!(open_beneath(root.as_fd(), Path::new("a/b")).is_ok());
        assert!(open_beneath(root.as_fd(), Path::new("a/up")).is_err());
        assert!(open_beneath(root.as_fd(), Path::new("a/up/tmp")).is_err());
        assert!(open_beneath(root.as_fd(), Path::new("a/../..")).is_err());
        NO_OPENAT2.store(false, Ordering::Relaxed);
    }
}
