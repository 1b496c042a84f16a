//! Blobs: the units stored inside packs (file chunks and tree listings).

use anyhow::{Result, bail};

use crate::crypto::{self, MasterKey};
use crate::id::Id;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobType {
    /// A chunk of file content.
    Data,
    /// A serialized directory listing.
    Tree,
}

impl BlobType {
    /// The byte stored in pack headers and indexes.
    pub fn to_byte(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }

    /// Parses the stored byte.
    pub fn from_byte(b: u8) -> Option<BlobType> {
        match b {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

/// How a blob's plaintext was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// As is (compression would not have made it smaller).
    None,
    /// zstd frame.
    Zstd,
}

impl Compression {
    /// The byte stored in pack headers and indexes.
    pub fn to_byte(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
        }
    }

    /// Parses the stored byte.
    pub fn from_byte(b: u8) -> Option<Compression> {
        match b {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Associated data binding a blob's ciphertext to its type and id.
fn blob_ad(kind: BlobType, id: &Id) -> [u8; 45] {
    let mut ad = [0u8; 45];
    ad[..12].copy_from_slice(b"strata:blob:");
    ad[12] = kind.to_byte();
    ad[13..].copy_from_slice(&id.0);
    ad
}

/// A blob ready to go into a pack.
pub struct SealedBlob {
    /// Type of the blob.
    pub kind: BlobType,
    /// Keyed id of the plaintext.
    pub id: Id,
    /// How the plaintext was stored before encryption.
    pub compression: Compression,
    /// Plaintext length.
    pub raw_len: u32,
    /// `nonce || ciphertext || tag`.
    pub bytes: Vec<u8>,
}

thread_local! {
    /// Per thread: a zstd context (and its level) and an output buffer, kept
    /// across blobs; a fresh context per blob costs megabytes of allocation.
    static COMPRESS: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>, Vec<u8>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESS: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses (when that helps) and encrypts a blob.
pub fn seal_blob(key: &MasterKey, kind: BlobType, id: Id, plain: &[u8], level: i32) -> SealedBlob {
    seal_blob_into(key, kind, id, plain, level, Vec::with_capacity)
}

/// [`seal_blob`] into a buffer from `alloc`, which gets the exact size the
/// sealed blob needs (a pool can hand out a recycled one).
pub fn seal_blob_into(
    key: &MasterKey,
    kind: BlobType,
    id: Id,
    plain: &[u8],
    level: i32,
    alloc: impl FnOnce(usize) -> Vec<u8>,
) -> SealedBlob {
    let seal = |compression, payload: &[u8]| SealedBlob {
        kind,
        id,
        compression,
        raw_len: plain.len() as u32,
        bytes: crypto::seal_into(
            key.encryption_key(),
            &blob_ad(kind, &id),
            payload,
            alloc(payload.len() + crypto::OVERHEAD),
        ),
    };
    // 0 turns compression off; negative levels are zstd's fast modes.
    if level == 0 {
        return seal(Compression::None, plain);
    }
    COMPRESS.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _, _)| *l != level) {
            *slot = zstd::bulk::Compressor::new(level)
                .ok()
                .map(|c| (level, c, Vec::new()));
        }
        let Some((_, ctx, out)) = slot.as_mut() else {
            return seal(Compression::None, plain);
        };
        if looks_incompressible(ctx, out, plain) {
            return seal(Compression::None, plain);
        }
        out.clear();
        // Only worth it if it ends up smaller: cap the output there.
        out.reserve(plain.len());
        match ctx.compress_to_buffer(plain, out) {
            Ok(n) if n < plain.len() => seal(Compression::Zstd, &out[..n]),
            _ => seal(Compression::None, plain),
        }
    })
}

/// Blobs at least this large are sampled before a full compression pass.
const SAMPLED_FROM: usize = 64 * 1024;
/// Size of one sample.
const SAMPLE: usize = 4 * 1024;
/// Samples taken, spread evenly over the blob.
const SAMPLES: usize = 4;

/// True when every sample of a large blob fails to shrink by 3%: then the
/// blob is stored as is without a full zstd pass over it (already
/// compressed or encrypted data, which is most of a VM image's and a media
/// library's bytes). Mixed blobs keep a compressible sample and are
/// compressed whole.
fn looks_incompressible(
    ctx: &mut zstd::bulk::Compressor<'static>,
    out: &mut Vec<u8>,
    plain: &[u8],
) -> bool {
    if plain.len() < SAMPLED_FROM {
        return false;
    }
    let step = (plain.len() - SAMPLE) / (SAMPLES - 1);
    (0..SAMPLES).all(|i| {
        let sample = &plain[i * step..i * step + SAMPLE];
        out.clear();
        out.reserve(SAMPLE + 64);
        match ctx.compress_to_buffer(sample, out) {
            Ok(n) => n * 100 >= SAMPLE * 97,
            Err(_) => true,
        }
    })
}

/// Decrypts, decompresses and verifies a blob against its id.
pub fn open_blob(
    key: &MasterKey,
    kind: BlobType,
    id: &Id,
    compression: Compression,
    raw_len: u32,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    let mut plain = Vec::new();
    open_blob_append(key, kind, id, compression, raw_len, sealed, &mut plain)?;
    Ok(plain)
}

thread_local! {
    /// Per thread: the decrypted, still compressed payload of the last blob.
    static PAYLOAD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`open_blob`], appending the plaintext to `out`: a caller that reuses
/// `out` opens blobs without allocating. On failure `out` is left as it was.
pub fn open_blob_append(
    key: &MasterKey,
    kind: BlobType,
    id: &Id,
    compression: Compression,
    raw_len: u32,
    sealed: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let start = out.len();
    let result = (|| -> Result<()> {
        let ad = blob_ad(kind, id);
        match compression {
            Compression::None => crypto::open_append(key.encryption_key(), &ad, sealed, out)?,
            Compression::Zstd => PAYLOAD.with(|payload| -> Result<()> {
                let mut payload = payload.borrow_mut();
                payload.clear();
                crypto::open_append(key.encryption_key(), &ad, sealed, &mut payload)?;
                // Our frames declare their size; checking it first means a
                // bad length never sizes an allocation.
                match zstd::zstd_safe::get_frame_content_size(&payload) {
                    Ok(Some(n)) if n == u64::from(raw_len) => {}
                    Ok(Some(n)) => bail!("blob's zstd frame holds {n} bytes, expected {raw_len}"),
                    Ok(None) | Err(_) => bail!("blob is not a zstd frame that declares its size"),
                }
                out.reserve(raw_len as usize);
                let n = DECOMPRESS.with(|cell| -> Result<usize> {
                    let mut slot = cell.borrow_mut();
                    if slot.is_none() {
                        *slot = Some(zstd::bulk::Decompressor::new()?);
                    }
                    let ctx = slot.as_mut().expect("decompressor just set");
                    // Decompresses into the spare capacity after `start`,
                    // without zeroing it first.
                    let mut tail = std::io::Cursor::new(&mut *out);
                    tail.set_position(start as u64);
                    Ok(ctx.decompress_to_buffer(&payload[..], &mut tail)?)
                })?;
                if n != raw_len as usize {
                    bail!("blob decompressed to {n} bytes, expected {raw_len}");
                }
                Ok(())
            })?,
        }
        let plain = &out[start..];
        if plain.len() != raw_len as usize {
            bail!("blob has {} bytes, expected {raw_len}", plain.len());
        }
        if key.id_of(plain) != *id {
            bail!("blob content does not match its id");
        }
        Ok(())
    })();
    if result.is_err() {
        out.truncate(start);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn open_append_adds_each_plaintext_and_keeps_the_buffer_on_failure() {
        let key = MasterKey::from_secret([5; 32]);
        let text = b"compressible ".repeat(10_000);
        let mut noise = vec![0u8; 100_000];
        rand::rng().fill_bytes(&mut noise);
        let mut out = Vec::new();
        let mut sealed_all = Vec::new();
        for plain in [&text[..], &noise[..]] {
            let id = key.id_of(plain);
            let s = seal_blob(&key, BlobType::Data, id, plain, 3);
            open_blob_append(
                &key,
                BlobType::Data,
                &id,
                s.compression,
                s.raw_len,
                &s.bytes,
                &mut out,
            )
            .unwrap();
            sealed_all.push((id, s));
        }
        assert_eq!(sealed_all[0].1.compression, Compression::Zstd);
        assert_eq!(sealed_all[1].1.compression, Compression::None);
        assert_eq!(out, [&text[..], &noise[..]].concat());

        let before = out.clone();
        for (id, s) in &sealed_all {
            let mut bad = s.bytes.clone();
            let n = bad.len();
            bad[n / 2] ^= 1;
            let r = open_blob_append(
                &key,
                BlobType::Data,
                id,
                s.compression,
                s.raw_len,
                &bad,
                &mut out,
            );
            assert!(r.is_err());
            let r = open_blob_append(
                &key,
                BlobType::Data,
                id,
                s.compression,
                s.raw_len + 1,
                &s.bytes,
                &mut out,
            );
            assert!(r.is_err(), "a wrong length is refused");
            assert_eq!(out, before, "a failed open leaves the buffer as it was");
        }
    }

    fn sealed_compression(plain: &[u8]) -> Compression {
        let key = MasterKey::from_secret([3; 32]);
        let id = key.id_of(plain);
        let s = seal_blob(&key, BlobType::Data, id, plain, 3);
        let back = open_blob(
            &key,
            BlobType::Data,
            &id,
            s.compression,
            s.raw_len,
            &s.bytes,
        );
        assert_eq!(back.unwrap(), plain);
        s.compression
    }

    #[test]
    fn incompressible_blobs_skip_compression_and_others_do_not() {
        let mut random = vec![0u8; 1 << 20];
        rand::rng().fill_bytes(&mut random);
        assert_eq!(sealed_compression(&random), Compression::None);
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog. "
            .iter()
            .cycle()
            .take(1 << 20)
            .copied()
            .collect();
        assert_eq!(sealed_compression(&text), Compression::Zstd);
        // Random except for a compressible last quarter: one sample sees it.
        let mut mixed = random.clone();
        let n = mixed.len();
        mixed[n * 3 / 4..].copy_from_slice(&text[n * 3 / 4..]);
        assert_eq!(sealed_compression(&mixed), Compression::Zstd);
        // Small blobs are always tried whole.
        assert_eq!(sealed_compression(&text[..1000]), Compression::Zstd);
    }
}
