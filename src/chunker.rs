//! Content-defined chunking: FastCDC (2020) cut points over a streaming reader,
//! with a gear table derived from the repository secret.
//!
//! fastcdc's own "seed" only XORs one 64-bit value into a public table, which
//! leaves chunk boundaries guessable; we feed `cut_gear` a fully secret table
//! instead, so boundaries (and thus chunk sizes) do not fingerprint content.

use std::io::{self, Read};

use anyhow::{Result, bail};
use fastcdc::v2020::{MASKS, cut_gear};
use serde::{Deserialize, Serialize};

/// Chunk size bounds, stored in the repository config.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChunkerParams {
    /// Smallest chunk, except for the last one of a stream.
    pub min_size: u32,
    /// Target average chunk size (rounded to a power of two for the masks).
    pub avg_size: u32,
    /// Largest chunk.
    pub max_size: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min_size: 256 * 1024,
            avg_size: 1024 * 1024,
            max_size: 4 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    /// Checks the bounds fastcdc supports and that min < avg < max.
    pub fn validate(&self) -> Result<()> {
        // FastCDC 2020 hashes two bytes a step from min_size rounded down to
        // even, so an odd minimum could be undercut by one byte.
        let ok = self.min_size.is_multiple_of(2)
            && self.min_size >= 64
            && self.min_size < self.avg_size
            && self.avg_size < self.max_size
            && self.avg_size >= 256
            && self.avg_size <= 4 * 1024 * 1024
            && self.max_size <= 16 * 1024 * 1024;
        if !ok {
            bail!(
                "invalid chunker sizes min {} avg {} max {}: need an even min, 64 <= min < avg < max <= 16 MiB, avg <= 4 MiB",
                self.min_size,
                self.avg_size,
                self.max_size
            );
        }
        Ok(())
    }
}

/// Finds chunk boundaries with a fixed secret gear table.
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    /// A chunker with the given table and (validated) sizes.
    pub fn new(gear: Box<[u64; 256]>, params: ChunkerParams) -> Result<Chunker> {
        params.validate()?;
        let mut gear_ls = Box::new([0u64; 256]);
        for (ls, g) in gear_ls.iter_mut().zip(gear.iter()) {
            *ls = g << 1;
        }
        let bits = (params.avg_size as f64).log2().round() as usize;
        // Normalization level 1, as FastCDC recommends.
        Ok(Chunker {
            params,
            gear,
            gear_ls,
            mask_s: MASKS[bits + 1],
            mask_l: MASKS[bits - 1],
        })
    }

    /// The sizes this chunker cuts at.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the first chunk of `data`, treating `data` as all that is left.
    pub fn cut(&self, data: &[u8]) -> usize {
        let (_, n) = cut_gear(
            data,
            self.params.min_size as usize,
            self.params.avg_size as usize,
            self.params.max_size as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        n
    }

    /// Chunks a reader; see [`ChunkStream::next_chunk`].
    pub fn stream<R: Read>(&self, reader: R) -> ChunkStream<'_, R> {
        self.stream_sized(reader, u64::MAX)
    }

    /// Chunks a reader expected to hold about `size_hint` bytes: a small
    /// file gets a small buffer (zeroing megabytes per file would dominate a
    /// tree of small files).
    pub fn stream_sized<R: Read>(&self, reader: R, size_hint: u64) -> ChunkStream<'_, R> {
        let full = (self.params.max_size as usize * 2).max(8 * 1024 * 1024);
        // One byte more than the hint, so the end is seen without a refill.
        let cap = usize::try_from(size_hint.saturating_add(1))
            .unwrap_or(full)
            .clamp(4096, full);
        ChunkStream {
            chunker: self,
            reader,
            buf: vec![0; cap],
            start: 0,
            end: 0,
            eof: false,
        }
    }
}

/// Chunks of a reader, borrowed from an internal buffer (no copy per chunk).
pub struct ChunkStream<'c, R> {
    chunker: &'c Chunker,
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> ChunkStream<'_, R> {
    /// The next chunk, or `None` at the end of the stream.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        let max = self.chunker.params.max_size as usize;
        if self.end - self.start < max && !self.eof {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            while self.end < self.buf.len() {
                match self.reader.read(&mut self.buf[self.end..]) {
                    Ok(0) => {
                        self.eof = true;
                        break;
                    }
                    Ok(n) => self.end += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        if self.start == self.end {
            return Ok(None);
        }
        let n = self.chunker.cut(&self.buf[self.start..self.end]);
        let chunk = &self.buf[self.start..self.start + n];
        self.start += n;
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunker() -> Chunker {
        let key = crate::crypto::MasterKey::from_secret([3; 32]);
        Chunker::new(
            key.gear_table(),
            ChunkerParams {
                min_size: 1024,
                avg_size: 4096,
                max_size: 16384,
            },
        )
        .unwrap()
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn lengths(c: &Chunker, data: &[u8]) -> Vec<usize> {
        let mut s = c.stream(data);
        let mut out = vec![];
        while let Some(ch) = s.next_chunk().unwrap() {
            out.push(ch.len());
        }
        out
    }

    #[test]
    fn chunks_cover_input_within_bounds() {
        let c = chunker();
        let data = pseudo_random(1 << 20, 9);
        let lens = lengths(&c, &data);
        assert_eq!(lens.iter().sum::<usize>(), data.len());
        for l in &lens[..lens.len() - 1] {
            assert!((1024..=16384).contains(l), "chunk of {l}");
        }
    }

    #[test]
    fn an_edit_changes_few_chunks() {
        let c = chunker();
        let a = pseudo_random(1 << 20, 5);
        let mut b = a.clone();
        b[500_000] ^= 0xff;
        let (la, lb) = (lengths(&c, &a), lengths(&c, &b));
        let common = la.iter().zip(&lb).take_while(|(x, y)| x == y).count();
        assert!(la.len() - common <= 3 || lb.len() - common <= 3 || common > la.len() / 3);
        let ids_a: std::collections::HashSet<_> = split(&c, &a).into_iter().collect();
        let new = split(&c, &b)
            .into_iter()
            .filter(|x| !ids_a.contains(x))
            .count();
        assert!(new <= 2, "{new} chunks changed for one flipped byte");
    }

    fn split(c: &Chunker, data: &[u8]) -> Vec<Vec<u8>> {
        let mut s = c.stream(data);
        let mut out = vec![];
        while let Some(ch) = s.next_chunk().unwrap() {
            out.push(ch.to_vec());
        }
        out
    }

    #[test]
    fn tables_change_boundaries() {
        let data = pseudo_random(1 << 20, 11);
        let other = Chunker::new(
            crate::crypto::MasterKey::from_secret([4; 32]).gear_table(),
            chunker().params(),
        )
        .unwrap();
        assert_ne!(lengths(&chunker(), &data), lengths(&other, &data));
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(lengths(&chunker(), &[]).is_empty());
    }
}
