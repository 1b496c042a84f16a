//! The one pack reader: ranged reads of a pack, every blob verified (AEAD,
//! length, keyed id) inside the read's verdict, so a pool takes the next
//! member's copy when one member's fails. Restore, `read_blob`, check,
//! prune's repacking, `repair index` and the tree pack cache's fetches read
//! packs through it ([`super::Repository::pack_reader`]).

use std::ops::Range;

use anyhow::{Context, Result};

use super::blob::open_blob_append;
use super::layout;
use super::pack::{PackEntry, TRAILER_LEN, header_range, open_pack_header, read_pack_header};
use crate::crypto::MasterKey;
use crate::id::Id;
use crate::store::Backend;

/// What [`PackReader::read_whole`] hands a pack to: its bytes, its header,
/// the blobs that failed (position in the header, why); its verdict.
pub type Inspect<'a> = dyn FnMut(&[u8], &[PackEntry], &[(usize, anyhow::Error)]) -> Result<()> + 'a;

/// Reads blobs out of packs, verified.
#[derive(Clone, Copy)]
pub struct PackReader<'a> {
    backend: &'a dyn Backend,
    key: &'a MasterKey,
}

impl super::Repository {
    /// The pack reader over this repository's store and key.
    pub fn pack_reader(&self) -> PackReader<'_> {
        PackReader::new(self.backend.as_ref(), &self.key)
    }
}

/// Plaintexts of consecutive blobs, back to back in one buffer that a
/// caller keeps from read to read (fresh buffers cost a page fault per
/// 4 KiB).
#[derive(Default)]
pub struct Plaintexts {
    bytes: Vec<u8>,
    /// Where each blob's plaintext ends in `bytes`.
    ends: Vec<usize>,
}

impl Plaintexts {
    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// How many plaintexts are held.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `k`th plaintext held.
    pub fn blob(&self, k: usize) -> &[u8] {
        let start = if k == 0 { 0 } else { self.ends[k - 1] };
        &self.bytes[start..self.ends[k]]
    }
}

/// The byte range of a pack that holds `blobs` (sorted by offset).
pub fn span_of(blobs: &[PackEntry]) -> Range<u64> {
    let start = blobs.first().map_or(0, |e| e.offset as u64);
    let end = blobs
        .iter()
        .map(|e| e.offset as u64 + e.stored_len as u64)
        .max()
        .unwrap_or(start);
    start..end
}

impl<'a> PackReader<'a> {
    /// A reader over `backend` with the repository key.
    pub fn new(backend: &'a dyn Backend, key: &'a MasterKey) -> PackReader<'a> {
        PackReader { backend, key }
    }

    /// Reads the blobs of one pack (sorted by offset) with one ranged read
    /// of the span holding them. Plaintexts are handed to `deliver` in order,
    /// a run at a time, once `flush_at` bytes of them are held and at the
    /// end; a run is handed over only when every blob in it verified. If a
    /// copy fails part-way, a pool reads the span again from its next
    /// member and the blobs already handed over are not handed over again.
    ///
    /// Returns how many blobs were handed over, and the error of the read
    /// when not all were (the caller may then try the rest one by one).
    /// `deliver` runs inside the read's verdict but cannot reject a copy:
    /// a local write error is the caller's to record.
    pub fn read_span(
        &self,
        pack: &Id,
        blobs: &[PackEntry],
        flush_at: usize,
        plain: &mut Plaintexts,
        deliver: &mut dyn FnMut(usize, &Plaintexts),
    ) -> (usize, Result<()>) {
        let name = layout::pack(pack);
        let span = span_of(blobs);
        let mut delivered = 0usize;
        let result = self.backend.read_range(&name, span.clone(), &mut |bytes| {
            plain.clear();
            let mut first = delivered;
            for (k, e) in blobs.iter().enumerate().skip(delivered) {
                let off = (e.offset as u64 - span.start) as usize;
                let sealed = bytes
                    .get(off..off + e.stored_len as usize)
                    .context("short read")?;
                open_blob_append(
                    self.key,
                    e.kind,
                    &e.id,
                    e.compression,
                    e.raw_len,
                    sealed,
                    &mut plain.bytes,
                )
                .with_context(|| format!("blob {}", e.id.short()))?;
                plain.ends.push(plain.bytes.len());
                if plain.bytes.len() >= flush_at || k + 1 == blobs.len() {
                    deliver(first, plain);
                    delivered = k + 1;
                    first = delivered;
                    plain.clear();
                }
            }
            Ok(())
        });
        let result = result.with_context(|| format!("pack {name}"));
        match result {
            Ok(()) if delivered == blobs.len() => (delivered, Ok(())),
            Ok(()) => (delivered, Err(anyhow::anyhow!("pack {name}: short read"))),
            Err(e) => (delivered, Err(e)),
        }
    }

    /// Reads one blob, verified.
    pub fn read_blob(&self, pack: &Id, entry: &PackEntry) -> Result<Vec<u8>> {
        let mut plain = Plaintexts::default();
        let mut out = Vec::new();
        let (_, result) = self.read_span(
            pack,
            std::slice::from_ref(entry),
            usize::MAX,
            &mut plain,
            &mut |_, p| out = p.blob(0).to_vec(),
        );
        result.map(|()| out)
    }

    /// Reads a whole pack with one read, opens its header under the pack's
    /// id and each blob `open` selects. `inspect` gets the pack's bytes, its
    /// header and the blobs that failed (position in the header, why); its
    /// error rejects the copy (a pool tries its next member) and is
    /// returned when no copy passes.
    pub fn read_whole(
        &self,
        pack: &Id,
        open: &dyn Fn(&PackEntry) -> bool,
        inspect: &mut Inspect<'_>,
    ) -> Result<()> {
        let name = layout::pack(pack);
        let mut scratch = Vec::new();
        self.backend.read(&name, &mut |bytes| {
            let header = read_pack_header(self.key, pack, bytes)?;
            let mut bad = Vec::new();
            for (k, e) in header.iter().enumerate().filter(|(_, e)| open(e)) {
                let sealed = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
                scratch.clear();
                if let Err(err) = open_blob_append(
                    self.key,
                    e.kind,
                    &e.id,
                    e.compression,
                    e.raw_len,
                    sealed,
                    &mut scratch,
                ) {
                    bad.push((k, err));
                }
            }
            inspect(bytes, &header, &bad)
        })
    }

    /// Reads and opens a pack's header alone: its trailer, then the sealed
    /// header (two ranged reads), for a pack of `size` bytes.
    pub fn read_header(&self, pack: &Id, size: u64) -> Result<Vec<PackEntry>> {
        let name = layout::pack(pack);
        let trailer_at = size
            .checked_sub(TRAILER_LEN as u64)
            .context("too short to be a pack")?;
        let mut range = 0..0;
        self.backend.read_range(&name, trailer_at..size, &mut |t| {
            range = header_range(size, t)?;
            Ok(())
        })?;
        let mut entries = Vec::new();
        let data_len = range.start;
        self.backend.read_range(&name, range, &mut |sealed| {
            entries = open_pack_header(self.key, pack, sealed, data_len)?;
            Ok(())
        })?;
        Ok(entries)
    }
}
