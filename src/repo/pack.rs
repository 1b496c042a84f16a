//! Pack files: many sealed blobs followed by an encrypted header listing them.
//!
//! Layout: `blob_0 .. blob_n-1 || sealed header || header_len (u32 LE) || "STPK"`.
//! The header plaintext is `version (u8 = 1) || salt [16] || count (u32 LE) || count entries`
//! of [`ENTRY_LEN`] bytes: `type u8, compression u8, stored_len u32,
//! raw_len u32, id [32]`. Blob offsets follow from the lengths in order.
//! A pack's id is the keyed hash of the header plaintext, and the header is
//! sealed with that id as associated data. The random salt makes every pack
//! written unique even when it holds the same blobs as another: prune may be
//! deleting a pack at the very moment a backup re-uploads its blobs, and the
//! two must never share a name.

use anyhow::{Context, Result, bail};
use bytes::Bytes;

use super::blob::{BlobType, Compression, SealedBlob};
use crate::crypto::{self, MasterKey};
use crate::id::Id;

/// Bytes per header entry.
pub const ENTRY_LEN: usize = 1 + 1 + 4 + 4 + 32;
/// Trailer: header length and magic.
pub const TRAILER_LEN: usize = 8;
const MAGIC: &[u8; 4] = b"STPK";
const VERSION: u8 = 1;

/// One blob as listed in a pack header or an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    /// Type of the blob.
    pub kind: BlobType,
    /// Compression of the plaintext.
    pub compression: Compression,
    /// Keyed id of the plaintext.
    pub id: Id,
    /// Byte offset in the pack.
    pub offset: u32,
    /// Sealed length in the pack.
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

fn header_ad(pack_id: &Id) -> Vec<u8> {
    let mut ad = b"strata:pack-header:".to_vec();
    ad.extend_from_slice(&pack_id.0);
    ad
}

/// Bytes before the entries: version, salt and count.
pub const HEADER_PREFIX_LEN: usize = 1 + SALT_LEN + 4;
const SALT_LEN: usize = 16;

/// Encodes header entries (offsets are implied by order) after `salt`.
pub fn encode_header(salt: &[u8; SALT_LEN], entries: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_PREFIX_LEN + entries.len() * ENTRY_LEN);
    out.push(VERSION);
    out.extend_from_slice(salt);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.push(e.kind.to_byte());
        out.push(e.compression.to_byte());
        out.extend_from_slice(&e.stored_len.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
        out.extend_from_slice(&e.id.0);
    }
    out
}

/// Decodes a header plaintext; `data_len` is the size of the blob area, which
/// the blob lengths must add up to exactly.
pub fn decode_header(plain: &[u8], data_len: u64) -> Result<Vec<PackEntry>> {
    if plain.len() < HEADER_PREFIX_LEN || plain[0] != VERSION {
        bail!("pack header has an unknown version or is truncated");
    }
    let count = u32::from_le_bytes(
        plain[HEADER_PREFIX_LEN - 4..HEADER_PREFIX_LEN]
            .try_into()
            .expect("4 bytes"),
    ) as usize;
    if (plain.len() - HEADER_PREFIX_LEN) != count.saturating_mul(ENTRY_LEN) {
        bail!("pack header length does not match its entry count");
    }
    let mut entries = Vec::with_capacity(count);
    let mut offset: u64 = 0;
    for raw in plain[HEADER_PREFIX_LEN..].chunks_exact(ENTRY_LEN) {
        let kind = BlobType::from_byte(raw[0]).context("pack header has an unknown blob type")?;
        let compression =
            Compression::from_byte(raw[1]).context("pack header has an unknown compression")?;
        let stored_len = u32::from_le_bytes(raw[2..6].try_into().expect("4 bytes"));
        let raw_len = u32::from_le_bytes(raw[6..10].try_into().expect("4 bytes"));
        let id = Id::from_slice(&raw[10..42]).expect("32 bytes");
        if (stored_len as usize) < crypto::OVERHEAD {
            bail!("pack header lists a blob shorter than its encryption overhead");
        }
        entries.push(PackEntry {
            kind,
            compression,
            id,
            offset: u32::try_from(offset).context("pack is larger than 4 GiB")?,
            stored_len,
            raw_len,
        });
        offset += stored_len as u64;
    }
    if offset != data_len {
        bail!("pack header blob lengths ({offset}) do not match the pack's data ({data_len})");
    }
    Ok(entries)
}

/// Builds a pack in memory: the sealed blobs are kept as they are (not
/// copied into one buffer) and written out as consecutive pieces.
pub struct PackBuilder {
    parts: Vec<Bytes>,
    len: usize,
    entries: Vec<PackEntry>,
}

/// A finished pack: its id, its bytes as consecutive pieces, and the blobs
/// in it.
pub struct FinishedPack {
    /// Keyed hash of the header plaintext.
    pub id: Id,
    /// The pack file: the blobs, then the sealed header and the trailer
    /// (only the latter for a pack whose blobs were [`PackBuilder::record`]ed).
    pub parts: Vec<Bytes>,
    /// Blob entries with offsets.
    pub entries: Vec<PackEntry>,
}

impl FinishedPack {
    /// Size of the pack file.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    /// True for a pack of no bytes (never the case for a finished one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole pack file in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts.concat()
    }
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuilder {
    /// An empty pack.
    pub fn new() -> PackBuilder {
        PackBuilder {
            parts: Vec::new(),
            len: 0,
            entries: Vec::new(),
        }
    }

    /// Appends a sealed blob.
    pub fn add(&mut self, blob: SealedBlob) {
        self.record(&blob);
        self.parts.push(Bytes::from(blob.bytes));
    }

    /// Records a sealed blob whose bytes the caller wrote out itself, right
    /// after the ones before it (a pack streamed to storage).
    pub fn record(&mut self, blob: &SealedBlob) {
        self.entries.push(PackEntry {
            kind: blob.kind,
            compression: blob.compression,
            id: blob.id,
            offset: self.len as u32,
            stored_len: blob.bytes.len() as u32,
            raw_len: blob.raw_len,
        });
        self.len += blob.bytes.len();
    }

    /// Bytes of blob data so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Seals the header and returns the finished pack.
    pub fn finish(mut self, key: &MasterKey) -> FinishedPack {
        let first = self.entries.first().map(|e| e.id.0).unwrap_or_default();
        let salt = crate::entropy::bytes(&[b"pack header", &first]);
        let header = encode_header(&salt, &self.entries);
        let id = key.id_of(&header);
        let mut tail = crypto::seal(key.encryption_key(), &header_ad(&id), &header);
        let header_len = tail.len() as u32;
        tail.extend_from_slice(&header_len.to_le_bytes());
        tail.extend_from_slice(MAGIC);
        self.parts.push(Bytes::from(tail));
        FinishedPack {
            id,
            parts: self.parts,
            entries: self.entries,
        }
    }
}

/// Where the sealed header sits, from the trailer at the end of a pack.
pub fn header_range(pack_len: u64, trailer: &[u8]) -> Result<std::ops::Range<u64>> {
    if trailer.len() != TRAILER_LEN || &trailer[4..] != MAGIC {
        bail!("not a strata pack (bad trailer)");
    }
    let hlen = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")) as u64;
    let end = pack_len
        .checked_sub(TRAILER_LEN as u64)
        .context("pack too short")?;
    let start = end
        .checked_sub(hlen)
        .context("pack header length exceeds the pack")?;
    Ok(start..end)
}

/// Opens a whole pack: checks the trailer, decrypts the header under the
/// expected pack id and returns the entries.
pub fn read_pack_header(key: &MasterKey, pack_id: &Id, pack: &[u8]) -> Result<Vec<PackEntry>> {
    let n = pack.len() as u64;
    if pack.len() < TRAILER_LEN {
        bail!("pack too short ({n} bytes)");
    }
    let range = header_range(n, &pack[pack.len() - TRAILER_LEN..])?;
    open_pack_header(
        key,
        pack_id,
        &pack[range.start as usize..range.end as usize],
        range.start,
    )
}

/// Decrypts and decodes a pack's sealed header, read on its own from the
/// [`header_range`] (whose start is `data_len`).
pub fn open_pack_header(
    key: &MasterKey,
    pack_id: &Id,
    sealed: &[u8],
    data_len: u64,
) -> Result<Vec<PackEntry>> {
    let plain = crypto::open(key.encryption_key(), &header_ad(pack_id), sealed)
        .context("pack header does not authenticate")?;
    if key.id_of(&plain) != *pack_id {
        bail!("pack header does not match the pack's name");
    }
    decode_header(&plain, data_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::blob::{open_blob, seal_blob};

    #[test]
    fn pack_round_trip() {
        let key = MasterKey::generate();
        let mut b = PackBuilder::new();
        let blobs: Vec<Vec<u8>> = vec![b"hello".to_vec(), vec![0u8; 10000], b"x".to_vec()];
        for (i, p) in blobs.iter().enumerate() {
            let kind = if i == 1 {
                BlobType::Tree
            } else {
                BlobType::Data
            };
            b.add(seal_blob(&key, kind, key.id_of(p), p, 3));
        }
        let pack = b.finish(&key);
        let bytes = pack.to_vec();
        let entries = read_pack_header(&key, &pack.id, &bytes).unwrap();
        assert_eq!(entries, pack.entries);
        for (e, p) in entries.iter().zip(&blobs) {
            let s = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
            assert_eq!(
                &open_blob(&key, e.kind, &e.id, e.compression, e.raw_len, s).unwrap(),
                p
            );
        }
        assert_eq!(entries[1].compression, Compression::Zstd);
        assert!(read_pack_header(&key, &Id([0; 32]), &bytes).is_err());
    }
}
