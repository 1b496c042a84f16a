//! Sparse-aware reading: the data extents of a file with holes, found with
//! `SEEK_DATA`/`SEEK_HOLE`, so holes are never read or hashed byte by byte.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};

/// One piece of a file, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// Bytes stored on disk, at this offset and length.
    Data { offset: u64, len: u64 },
    /// A hole: reads as zeros, occupies no disk.
    Hole { len: u64 },
}

/// The extents of `file` (whose `meta` the caller has) up to `size`, or
/// `None` when the file has no holes worth skipping (or the file system
/// cannot say where they are); then it is to be read from its start (the
/// file offset is put back there) to its end, whatever its stated size.
pub fn extents(file: &File, meta: &std::fs::Metadata, size: u64) -> Option<Vec<Extent>> {
    // Allocated less than its length: it has holes (or is compressed or
    // inline, or a pseudo-file whose size is made up, like sysfs's 4096).
    if meta.blocks().saturating_mul(512) >= size || size == 0 {
        return None;
    }
    let fd = file.as_raw_fd();
    match find_extents(fd, size) {
        Some(out) if out.iter().any(|e| matches!(e, Extent::Hole { .. })) => Some(out),
        // No hole after all: read it plainly, to its real end. The seeks
        // moved the file offset; if it cannot be put back, read what the
        // file says it holds with positioned reads.
        _ => match seek(fd, 0, libc::SEEK_SET) {
            Ok(_) => None,
            Err(_) => Some(vec![Extent::Data {
                offset: 0,
                len: size,
            }]),
        },
    }
}

/// The extents up to `size` as `SEEK_DATA`/`SEEK_HOLE` find them (moving the
/// file offset), or `None` when they fail.
fn find_extents(fd: libc::c_int, size: u64) -> Option<Vec<Extent>> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let data = match seek(fd, pos, libc::SEEK_DATA) {
            Ok(d) => d.min(size),
            // ENXIO: no data at or after `pos`; the rest is a hole.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => size,
            Err(_) => return None,
        };
        if data > pos {
            out.push(Extent::Hole { len: data - pos });
        }
        if data >= size {
            break;
        }
        let hole = match seek(fd, data, libc::SEEK_HOLE) {
            Ok(h) => h.min(size),
            Err(_) => return None,
        };
        if hole <= data {
            return None;
        }
        out.push(Extent::Data {
            offset: data,
            len: hole - data,
        });
        pos = hole;
    }
    Some(out)
}

fn seek(fd: libc::c_int, offset: u64, whence: libc::c_int) -> io::Result<u64> {
    let offset = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: lseek on a file descriptor we own; no memory is passed.
    let r = unsafe { libc::lseek(fd, offset, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// Reads `len` bytes of a file from `offset` with positioned reads.
pub struct RangeReader<'f> {
    file: &'f File,
    offset: u64,
    left: u64,
}

impl<'f> RangeReader<'f> {
    /// A reader of `file[offset..offset + len]`.
    pub fn new(file: &'f File, offset: u64, len: u64) -> Self {
        RangeReader {
            file,
            offset,
            left: len,
        }
    }
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.offset)?;
        self.offset += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_data_between_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let f = File::create(&path).unwrap();
        let mib = 1 << 20;
        f.set_len(64 * mib).unwrap();
        f.write_all_at(&[7u8; 1 << 20], 8 * mib).unwrap();
        f.write_all_at(&[9u8; 1 << 20], 40 * mib).unwrap();
        f.sync_all().unwrap();
        let f = File::open(&path).unwrap();
        let Some(ext) = extents(&f, &f.metadata().unwrap(), 64 * mib) else {
            // A file system without hole support (e.g. some overlays): nothing to check.
            return;
        };
        let total: u64 = ext
            .iter()
            .map(|e| match e {
                Extent::Data { len, .. } | Extent::Hole { len } => *len,
            })
            .sum();
        assert_eq!(total, 64 * mib);
        let data: Vec<_> = ext
            .iter()
            .filter_map(|e| match e {
                Extent::Data { offset, len } => Some((*offset, *len)),
                _ => None,
            })
            .collect();
        assert!(data.iter().any(|(o, l)| *o <= 8 * mib && o + l >= 9 * mib));
        assert!(
            data.iter()
                .any(|(o, l)| *o <= 40 * mib && o + l >= 41 * mib)
        );
        let data_len: u64 = data.iter().map(|(_, l)| l).sum();
        assert!(data_len < 8 * mib, "{data_len} bytes of data extents");
        let mut buf = Vec::new();
        RangeReader::new(&f, 8 * mib, mib)
            .read_to_end(&mut buf)
            .unwrap();
        assert_eq!(buf, vec![7u8; 1 << 20]);
    }

    #[test]
    fn dense_file_has_no_extents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dense");
        std::fs::write(&path, vec![1u8; 100_000]).unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(extents(&f, &f.metadata().unwrap(), 100_000), None);
    }
}
