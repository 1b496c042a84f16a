//! The readers: open, read (by extents when sparse), chunk and hash each
//! file, and hand new chunks to the saver; and a backup of standard input.

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};

use super::trees::save_tree;
use super::{BackupRun, FileOutcome};
use crate::backup::sparse::{self, Extent, RangeReader};
use crate::fsmeta::node_of_file;
use crate::id::Id;
use crate::repo::blob::BlobType;
use crate::repo::tree::{Node, NodeKind, RawName, Tree};

/// Opens a source file; a final symlink is refused unless `follow`.
pub(super) fn open_source(path: &Path, follow: bool) -> std::io::Result<File> {
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    let open = |flags| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path)
    };
    // O_NOATIME keeps backups from touching access times; it needs ownership.
    open(nofollow | libc::O_NOATIME).or_else(|e| {
        if e.raw_os_error() == Some(libc::EPERM) {
            open(nofollow)
        } else {
            Err(e)
        }
    })
}

pub(super) fn same_version(a: &Metadata, b: &Metadata) -> bool {
    a.len() == b.len()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && a.ctime() == b.ctime()
        && a.ctime_nsec() == b.ctime_nsec()
}

pub(super) fn read_file(
    shared: &BackupRun,
    path: &Path,
    follow: bool,
    walked: Node,
) -> FileOutcome {
    let fail = |msg: String| {
        shared.warn(msg);
        FileOutcome::Failed
    };
    if shared.stopped() {
        return FileOutcome::Failed;
    }
    let file = match open_source(path, follow) {
        Ok(f) => f,
        Err(e) => return fail(format!("{}: cannot read: {e}", path.display())),
    };
    let before = match file.metadata() {
        Ok(m) if m.is_file() => m,
        Ok(_) => return fail(format!("{}: no longer a regular file", path.display())),
        Err(e) => return fail(format!("{}: {e}", path.display())),
    };
    let mut node = node_of_file(&file, OsStr::from_bytes(&walked.name.0), &before);
    let size = before.len();
    let (mut read, mut holes) = (0u64, 0u64);
    let outcome = match sparse::extents(&file, &before, size) {
        Some(extents) => extents.into_iter().try_for_each(|e| match e {
            Extent::Data { offset, len } => chunk_into(
                shared,
                RangeReader::new(&file, offset, len),
                len,
                &mut node.content,
                &mut read,
            ),
            Extent::Hole { len } => {
                holes += len;
                zero_chunks(shared, len, &mut node.content)
            }
        }),
        None => chunk_into(shared, &file, size, &mut node.content, &mut read),
    };
    match outcome {
        Ok(()) => {}
        Err(ReadFailure::Fatal) => return FileOutcome::Failed,
        Err(ReadFailure::Io(e)) => {
            return fail(format!(
                "{}: read error after {read} bytes: {e}",
                path.display()
            ));
        }
    }
    let logical = read + holes;
    match file.metadata() {
        Ok(after) if same_version(&before, &after) => {}
        _ => shared.warn(format!(
            "{}: changed while being read; saved as read",
            path.display()
        )),
    }
    node.size = logical;
    shared.progress.files.fetch_add(1, Ordering::Relaxed);
    shared
        .counters
        .bytes_read
        .fetch_add(read, Ordering::Relaxed);
    shared
        .counters
        .total_bytes
        .fetch_add(logical, Ordering::Relaxed);
    FileOutcome::Saved(node)
}

pub(super) enum ReadFailure {
    /// The source could not be read; the file is skipped with a warning.
    Io(std::io::Error),
    /// Saving failed; the whole backup stops (the error is in `BackupRun`).
    Fatal,
}

/// Chunks `reader` and queues its new chunks; appends their ids to `content`
/// and adds the bytes read to `read`.
pub(super) fn chunk_into<R: Read>(
    shared: &BackupRun,
    reader: R,
    size_hint: u64,
    content: &mut Vec<Id>,
    read: &mut u64,
) -> Result<(), ReadFailure> {
    let mut stream = shared.chunker.stream_sized(reader, size_hint);
    while let Some(chunk) = stream.next_chunk().map_err(ReadFailure::Io)? {
        if shared.cancelled() {
            return Err(ReadFailure::Fatal);
        }
        let id = shared.repo.key().id_of(chunk);
        queue_if_new(shared, id, || {
            let mut copy = shared.saver.chunk_buffer(chunk.len());
            copy.extend_from_slice(chunk);
            copy
        })?;
        *read += chunk.len() as u64;
        shared
            .progress
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        content.push(id);
    }
    Ok(())
}

/// Stands for a hole of `len` bytes with zero chunks, without reading it.
/// The chunks have the size the chunker gives a long run of zeros, so holes
/// and zeros written out in full dedup to the same chunk.
pub(super) fn zero_chunks(
    shared: &BackupRun,
    len: u64,
    content: &mut Vec<Id>,
) -> Result<(), ReadFailure> {
    shared.progress.bytes.fetch_add(len, Ordering::Relaxed);
    let (size, id) = *shared.zero_chunk.get_or_init(|| {
        let zeros = vec![0u8; shared.chunker.params().max_size as usize];
        let n = shared.chunker.cut(&zeros);
        (n as u64, shared.repo.key().id_of(&zeros[..n]))
    });
    let full = len / size;
    let rest = (len % size) as usize;
    if full > 0 {
        queue_if_new(shared, id, || vec![0; size as usize])?;
        content.extend(std::iter::repeat_n(id, full as usize));
    }
    if rest > 0 {
        let zeros = vec![0u8; rest];
        let id = shared.repo.key().id_of(&zeros);
        queue_if_new(shared, id, || zeros)?;
        content.push(id);
    }
    Ok(())
}

pub(super) fn queue_if_new(
    shared: &BackupRun,
    id: Id,
    data: impl FnOnce() -> Vec<u8>,
) -> Result<(), ReadFailure> {
    if shared.saver.claim(&id)
        && let Err(e) = shared.saver.save(BlobType::Data, id, data())
    {
        shared.fatal(e);
        return Err(ReadFailure::Fatal);
    }
    Ok(())
}

pub(super) fn backup_stdin(
    shared: &BackupRun,
    name: &str,
    reader: Box<dyn Read + Send>,
) -> Result<Id> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        bail!("--stdin-name must be a plain file name, got {name:?}");
    }
    let mut content = Vec::new();
    let mut size = 0u64;
    match chunk_into(shared, reader, u64::MAX, &mut content, &mut size) {
        Ok(()) => {}
        Err(ReadFailure::Io(e)) => {
            return Err(anyhow::Error::new(e).context("reading standard input"));
        }
        Err(ReadFailure::Fatal) => {
            return Err(shared
                .fatal
                .lock()
                .expect("fatal slot")
                .take()
                .unwrap_or_else(|| anyhow::anyhow!("saving standard input failed")));
        }
    }
    let now = crate::entropy::now();
    // SAFETY: getuid/getgid/umask-free calls with no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let node = Node {
        name: RawName(name.as_bytes().to_vec()),
        kind: NodeKind::File,
        mode: 0o600,
        uid,
        gid,
        mtime: now.timestamp(),
        mtime_ns: now.timestamp_subsec_nanos(),
        ctime: now.timestamp(),
        ctime_ns: now.timestamp_subsec_nanos(),
        inode: 0,
        device: 0,
        links: 1,
        size,
        content,
        subtree: None,
        target: None,
        rdev: None,
        xattrs: Vec::new(),
    };
    let c = &shared.counters;
    c.files_new.fetch_add(1, Ordering::Relaxed);
    c.bytes_read.fetch_add(size, Ordering::Relaxed);
    c.total_bytes.fetch_add(size, Ordering::Relaxed);
    c.dirs.fetch_add(1, Ordering::Relaxed);
    save_tree(shared, &Tree { nodes: vec![node] }).context("saving the snapshot tree")
}
