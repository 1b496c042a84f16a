//! Reads of a local repository: positioned reads straight from the file,
//! without the async runtime.

use std::ops::Range;

use anyhow::{Context, Result, anyhow};

use super::ObjectBackend;
use crate::store::NotFound;

thread_local! {
    /// Per thread: the buffer local range reads go into.
    pub(super) static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}
/// A thread's read buffer is dropped after a read larger than this.
pub(super) const MAX_KEPT_READ_BUFFER: usize = 16 << 20;

/// An error reading a local object, as the rest of the store reports it.
pub(super) fn local_error(key: &str, e: std::io::Error) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => anyhow!(NotFound(key.to_string())),
        std::io::ErrorKind::UnexpectedEof => anyhow!("short read of {key}"),
        _ => anyhow!(e),
    }
}

impl ObjectBackend {
    /// Reads a range of a local object into `buf` (replacing its contents)
    /// with a plain positioned read: no hop through the async runtime and
    /// no extra copy, which dominated restores of many small files and tree
    /// walks.
    pub(super) fn read_local_into(
        &self,
        root: &std::path::Path,
        key: &str,
        range: Range<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let read = |buf: &mut Vec<u8>| -> std::io::Result<()> {
            let f = std::fs::File::open(root.join(key))?;
            buf.clear();
            buf.resize(range.end.saturating_sub(range.start) as usize, 0);
            f.read_exact_at(buf, range.start)?;
            // Pack ranges are read once (restore, check, repack): leave the
            // page cache to the machine's own files.
            crate::store::spool::drop_cached(&f, range.start, buf.len() as u64);
            Ok(())
        };
        read(buf)
            .map_err(|e| local_error(key, e))
            .with_context(|| format!("reading {key} from {}", self.location))
    }

    /// Reads a whole local object.
    pub(super) fn read_local(&self, root: &std::path::Path, key: &str) -> Result<Vec<u8>> {
        use std::io::Read;
        let read = || -> std::io::Result<Vec<u8>> {
            let f = std::fs::File::open(root.join(key))?;
            let mut buf = Vec::with_capacity(f.metadata()?.len() as usize);
            (&f).read_to_end(&mut buf)?;
            Ok(buf)
        };
        read()
            .map_err(|e| local_error(key, e))
            .with_context(|| format!("reading {key} from {}", self.location))
    }
}
