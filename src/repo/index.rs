//! Index files (which blob lives where) and the in-memory index built from them.
//!
//! Index plaintext: `"STIX" || version u8 (1) || n_supersedes u32 || ids [32]...
//! || n_packs u32 || packs`, each pack `id [32] || n_blobs u32 || entries`,
//! each entry [`INDEX_ENTRY_LEN`] bytes: `type u8, compression u8, offset u32,
//! stored_len u32, raw_len u32, id [32]` (all integers little-endian).

use std::collections::HashMap;

use anyhow::{Context, Result, bail};

use super::blob::{BlobType, Compression};
use super::pack::PackEntry;
use crate::id::Id;

const MAGIC: &[u8; 4] = b"STIX";
const VERSION: u8 = 1;
/// Bytes per blob entry in an index file.
pub const INDEX_ENTRY_LEN: usize = 1 + 1 + 4 + 4 + 4 + 32;

/// The contents of one index file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexFile {
    /// Index files this one replaces (written by compaction).
    pub supersedes: Vec<Id>,
    /// Packs and the blobs in them.
    pub packs: Vec<(Id, Vec<PackEntry>)>,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            bail!("index is truncated");
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn id(&mut self) -> Result<Id> {
        Ok(Id::from_slice(self.take(32)?).expect("32 bytes"))
    }
    /// A count of items of `item_len` bytes each, refused if the rest of the
    /// buffer cannot hold them (so a hostile count cannot drive allocation).
    fn count(&mut self, item_len: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(item_len) > self.buf.len() {
            bail!("index count {n} exceeds its size");
        }
        Ok(n)
    }
}

impl IndexFile {
    /// Number of blob entries.
    pub fn blob_count(&self) -> usize {
        self.packs.iter().map(|(_, e)| e.len()).sum()
    }

    /// Serializes the index plaintext.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + self.blob_count() * INDEX_ENTRY_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(self.supersedes.len() as u32).to_le_bytes());
        for id in &self.supersedes {
            out.extend_from_slice(&id.0);
        }
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for (pack, entries) in &self.packs {
            out.extend_from_slice(&pack.0);
            out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for e in entries {
                out.push(e.kind.to_byte());
                out.push(e.compression.to_byte());
                out.extend_from_slice(&e.offset.to_le_bytes());
                out.extend_from_slice(&e.stored_len.to_le_bytes());
                out.extend_from_slice(&e.raw_len.to_le_bytes());
                out.extend_from_slice(&e.id.0);
            }
        }
        out
    }

    /// Parses an index plaintext; never panics on hostile bytes.
    pub fn decode(bytes: &[u8]) -> Result<IndexFile> {
        let mut r = Reader { buf: bytes };
        if r.take(4)? != MAGIC {
            bail!("not a strata index");
        }
        if r.take(1)?[0] != VERSION {
            bail!("index version is not supported");
        }
        let n_sup = r.count(32)?;
        let mut supersedes = Vec::with_capacity(n_sup);
        for _ in 0..n_sup {
            supersedes.push(r.id()?);
        }
        let n_packs = r.count(36)?;
        let mut packs = Vec::with_capacity(n_packs);
        for _ in 0..n_packs {
            let pack = r.id()?;
            let n = r.count(INDEX_ENTRY_LEN)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let raw = r.take(INDEX_ENTRY_LEN)?;
                let word = |i: usize| u32::from_le_bytes(raw[i..i + 4].try_into().expect("4"));
                let entry = PackEntry {
                    kind: BlobType::from_byte(raw[0]).context("index has an unknown blob type")?,
                    compression: Compression::from_byte(raw[1])
                        .context("index has an unknown compression")?,
                    offset: word(2),
                    stored_len: word(6),
                    raw_len: word(10),
                    id: Id::from_slice(&raw[14..46]).expect("32 bytes"),
                };
                if entry.offset.checked_add(entry.stored_len).is_none() {
                    bail!("index entry overflows its pack");
                }
                entries.push(entry);
            }
            packs.push((pack, entries));
        }
        if !r.buf.is_empty() {
            bail!("index has {} trailing bytes", r.buf.len());
        }
        Ok(IndexFile { supersedes, packs })
    }
}

/// Where a blob is: pack (by position in [`Index::packs`]) and entry.
#[derive(Debug, Clone, Copy)]
pub struct BlobLocation {
    /// Position of the pack id in [`Index::pack_ids`].
    pub pack: u32,
    /// The entry as listed in the pack.
    pub entry: PackEntry,
}

/// Every known blob, from all index files. A blob stored in several packs
/// (racing backups, repacking) keeps every location, so a reader can fall
/// back to another when one fails.
#[derive(Default)]
pub struct Index {
    pack_ids: Vec<Id>,
    /// What each pack holds, by position in `pack_ids`.
    pack_info: Vec<PackInfo>,
    pack_pos: HashMap<Id, u32>,
    blobs: HashMap<Id, BlobLocation>,
    /// Further locations of blobs held by more than one pack.
    more: HashMap<Id, Vec<BlobLocation>>,
}

/// What the index lists of one pack.
#[derive(Debug, Clone, Copy, Default)]
struct PackInfo {
    /// End of the last blob listed (the pack's blob area, at least).
    end: u64,
    /// Blobs listed.
    blobs: u32,
    /// Some blob is a tree.
    trees: bool,
    /// Some blob is data.
    data: bool,
}

impl Index {
    /// Adds one pack's blobs (a blob already known gains a location; the
    /// first one stays the preferred one).
    pub fn add_pack(&mut self, pack: Id, entries: &[PackEntry]) {
        let pos = *self.pack_pos.entry(pack).or_insert_with(|| {
            self.pack_ids.push(pack);
            self.pack_info.push(PackInfo::default());
            (self.pack_ids.len() - 1) as u32
        });
        let info = &mut self.pack_info[pos as usize];
        for e in entries {
            info.end = info.end.max(e.offset as u64 + e.stored_len as u64);
            info.blobs = info.blobs.saturating_add(1);
            match e.kind {
                BlobType::Tree => info.trees = true,
                BlobType::Data => info.data = true,
            }
        }
        for e in entries {
            let loc = BlobLocation {
                pack: pos,
                entry: *e,
            };
            match self.blobs.entry(e.id) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(loc);
                }
                std::collections::hash_map::Entry::Occupied(o) if o.get().pack != pos => {
                    let more = self.more.entry(e.id).or_default();
                    if !more.iter().any(|l| l.pack == pos) {
                        more.push(loc);
                    }
                }
                std::collections::hash_map::Entry::Occupied(_) => {}
            }
        }
    }

    /// Adds a whole index file.
    pub fn add_file(&mut self, file: &IndexFile) {
        for (pack, entries) in &file.packs {
            self.add_pack(*pack, entries);
        }
    }

    /// Looks a blob up (its preferred location).
    pub fn get(&self, id: &Id) -> Option<(Id, PackEntry)> {
        self.blobs
            .get(id)
            .map(|l| (self.pack_ids[l.pack as usize], l.entry))
    }

    /// Every location of a blob, the preferred one first.
    pub fn locations(&self, id: &Id) -> Vec<(Id, PackEntry)> {
        self.blobs
            .get(id)
            .into_iter()
            .chain(self.more.get(id).into_iter().flatten())
            .map(|l| (self.pack_ids[l.pack as usize], l.entry))
            .collect()
    }

    /// True when the blob is known.
    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
    }

    /// All packs named by the index.
    pub fn pack_ids(&self) -> &[Id] {
        &self.pack_ids
    }

    /// Packs that hold tree blobs and nothing else (the packer writes trees
    /// and data into separate packs), each with an estimate of its size in
    /// bytes from the entries listed (blobs, header and trailer).
    pub fn tree_packs(&self) -> impl Iterator<Item = (Id, u64)> + '_ {
        self.pack_ids
            .iter()
            .zip(&self.pack_info)
            .filter(|(_, i)| i.trees && !i.data)
            .map(|(id, i)| (*id, estimated_pack_len(i)))
    }

    /// True when `pack` holds tree blobs and nothing else.
    pub fn is_tree_pack(&self, pack: &Id) -> bool {
        self.pack_pos
            .get(pack)
            .is_some_and(|&p| self.pack_info[p as usize].trees && !self.pack_info[p as usize].data)
    }

    /// All blobs with their preferred pack.
    pub fn iter(&self) -> impl Iterator<Item = (Id, PackEntry)> + '_ {
        self.blobs
            .values()
            .map(|l| (self.pack_ids[l.pack as usize], l.entry))
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// True when no blob is known.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }
}

/// A pack's size as its listed entries imply: the blob area, the sealed
/// header (entries, prefix and AEAD overhead) and the trailer.
fn estimated_pack_len(info: &PackInfo) -> u64 {
    info.end
        + info.blobs as u64 * super::pack::ENTRY_LEN as u64
        + (super::pack::HEADER_PREFIX_LEN + crate::crypto::OVERHEAD + super::pack::TRAILER_LEN)
            as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let e = PackEntry {
            kind: BlobType::Tree,
            compression: Compression::Zstd,
            id: Id([9; 32]),
            offset: 10,
            stored_len: 50,
            raw_len: 70,
        };
        let f = IndexFile {
            supersedes: vec![Id([1; 32])],
            packs: vec![(Id([2; 32]), vec![e])],
        };
        assert_eq!(IndexFile::decode(&f.encode()).unwrap(), f);
        let mut bad = f.encode();
        bad.truncate(bad.len() - 1);
        assert!(IndexFile::decode(&bad).is_err());
    }

    #[test]
    fn every_location_is_kept() {
        let e = PackEntry {
            kind: BlobType::Data,
            compression: Compression::None,
            id: Id([9; 32]),
            offset: 0,
            stored_len: 5,
            raw_len: 5,
        };
        let mut index = Index::default();
        index.add_pack(Id([1; 32]), &[e]);
        index.add_pack(Id([2; 32]), &[e]);
        index.add_pack(Id([2; 32]), &[e]);
        let packs: Vec<Id> = index.locations(&e.id).iter().map(|l| l.0).collect();
        assert_eq!(packs, vec![Id([1; 32]), Id([2; 32])]);
        assert_eq!(index.get(&e.id).unwrap().0, Id([1; 32]));
        assert_eq!(index.len(), 1);
    }
}
