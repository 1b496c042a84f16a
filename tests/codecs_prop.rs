//! Property tests for strata's codecs and decoders.
//!
//! * round trips: chunker (coverage, size bounds, independence from how the
//!   reader splits its reads), pack header, index, tree, snapshot, config,
//!   AEAD, sealed blobs, key files, ids;
//! * canonical binary encodings: a pack header or index that decodes
//!   re-encodes to the very same bytes;
//! * hostile input: every decoder returns an error (or a value) on arbitrary
//!   bytes and on mutated valid encodings, and never panics.
//!
//! Argon2 is only run with tiny parameters and few cases so the whole file
//! stays well under a minute in a debug build.
//!
//! These tests call the library directly; of the common harness they use
//! only its seeded random bytes.

mod common;

use std::io::{self, Read};

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use common::random_bytes;
use strata::chunker::{Chunker, ChunkerParams};
use strata::crypto::keyfile::{KdfParams, KeyFile};
use strata::crypto::{self, MasterKey, OVERHEAD};
use strata::id::Id;
use strata::repo::RepoConfig;
use strata::repo::blob::{BlobType, Compression, open_blob, seal_blob};
use strata::repo::index::{INDEX_ENTRY_LEN, IndexFile};
use strata::repo::pack::{
    ENTRY_LEN, HEADER_PREFIX_LEN, PackBuilder, PackEntry, TRAILER_LEN, decode_header,
    encode_header, header_range, read_pack_header,
};
use strata::repo::snapshot::{BackupMode, Snapshot, SnapshotCompression, SnapshotSummary};
use strata::repo::tree::{Node, NodeKind, RawName, Tree};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Cheap deterministic PRNG (xorshift64*), fast enough in debug builds to
/// produce megabytes of test data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A reader over a slice that returns short reads of random length (often a
/// single byte) and sometimes `Interrupted`, to check the chunker does not
/// depend on how its input arrives.
struct ShortReader<'a> {
    data: &'a [u8],
    pos: usize,
    rng: Rng,
    max_read: usize,
}

impl Read for ShortReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rng.below(16) == 0 {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "try again"));
        }
        let rest = self.data.len() - self.pos;
        let want = match self.rng.below(4) {
            0 => 1 + self.rng.below(16) as usize,
            _ => 1 + self.rng.below(self.max_read as u64) as usize,
        };
        let n = want.min(rest).min(buf.len());
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Proptest settings: `cases` cases and no regression files written into
/// the source tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn test_key() -> MasterKey {
    MasterKey::from_secret([0x42; 32])
}

fn chunk_lengths<R: Read>(c: &Chunker, r: R) -> Vec<usize> {
    let mut s = c.stream(r);
    let mut out = vec![];
    while let Some(ch) = s.next_chunk().expect("reading from memory") {
        out.push(ch.len());
    }
    out
}

/// Reference model: repeatedly cut the rest of the input.
fn reference_lengths(c: &Chunker, data: &[u8]) -> Vec<usize> {
    let mut pos = 0;
    let mut out = vec![];
    while pos < data.len() {
        let n = c.cut(&data[pos..]);
        assert!(n > 0, "cut returned 0 with {} bytes left", data.len() - pos);
        out.push(n);
        pos += n;
    }
    out
}

fn check_chunking(
    c: &Chunker,
    data: &[u8],
    read_seed: u64,
    max_read: usize,
) -> Result<(), TestCaseError> {
    let p = c.params();
    let whole = chunk_lengths(c, data);
    prop_assert_eq!(whole.iter().sum::<usize>(), data.len());
    if let Some((_, init)) = whole.split_last() {
        for (i, &l) in init.iter().enumerate() {
            prop_assert!(
                (p.min_size as usize..=p.max_size as usize).contains(&l),
                "chunk {} of {} bytes outside [{}, {}] (params {:?})",
                i,
                l,
                p.min_size,
                p.max_size,
                p
            );
        }
    }
    if let Some(&last) = whole.last() {
        prop_assert!(last > 0 && last <= p.max_size as usize);
    }
    let short = chunk_lengths(
        c,
        ShortReader {
            data,
            pos: 0,
            rng: Rng::new(read_seed),
            max_read,
        },
    );
    prop_assert_eq!(&whole, &short, "boundaries depend on read sizes");
    prop_assert_eq!(&whole, &reference_lengths(c, data));
    Ok(())
}

/// Data made of repeated patterns: runs of a constant byte, short repeated
/// strings and random stretches.
fn patterned(parts: &[(u8, Vec<u8>, u32)], seed: u64, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rng = Rng::new(seed);
    for (kind, pat, reps) in parts {
        let reps = *reps as usize;
        match kind % 3 {
            0 => out.resize(out.len() + reps * 64, pat.first().copied().unwrap_or(0)),
            1 if !pat.is_empty() => {
                for _ in 0..reps {
                    out.extend_from_slice(pat);
                }
            }
            _ => {
                let n = reps * 32;
                out.extend_from_slice(&random_bytes(rng.next(), n));
            }
        }
        if out.len() >= cap {
            break;
        }
    }
    out.truncate(cap);
    out
}

/// Valid chunker parameters, small enough to give many chunks per megabyte.
/// Odd and non-power-of-two sizes are included on purpose.
fn small_params() -> impl Strategy<Value = ChunkerParams> {
    (256u32..=64 * 1024).prop_flat_map(|avg| {
        (64u32..avg, (avg + 1)..=(avg * 8).min(16 * 1024 * 1024)).prop_map(
            move |(min_size, max_size)| ChunkerParams {
                min_size,
                avg_size: avg,
                max_size,
            },
        )
    })
}

/// Like [`small_params`] but with even bounds (the ones strata picks itself).
fn small_even_params() -> impl Strategy<Value = ChunkerParams> {
    small_params().prop_map(|mut p| {
        p.min_size &= !1;
        p.min_size = p.min_size.max(64);
        p
    })
}

/// Applies a mutation to a valid encoding: flip a bit, overwrite a byte,
/// truncate, extend, insert or delete a span.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Extend(Vec<u8>),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Swap(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::Swap(i, j)),
    ]
}

fn mutate(mut v: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = v.len();
        match m {
            Mutation::Flip(i, b) if len > 0 => v[i % len] ^= 1 << b,
            Mutation::Set(i, b) if len > 0 => v[i % len] = *b,
            Mutation::Truncate(i) => v.truncate(i % (len + 1)),
            Mutation::Extend(x) => v.extend_from_slice(x),
            Mutation::Insert(i, x) => {
                let at = i % (len + 1);
                v.splice(at..at, x.iter().copied());
            }
            Mutation::Delete(i, n) if len > 0 => {
                let at = i % len;
                let end = (at + n).min(len);
                v.drain(at..end);
            }
            Mutation::Swap(i, j) if len > 0 => v.swap(i % len, j % len),
            _ => {}
        }
    }
    v
}

/// Mutations that keep JSON text mostly well-formed, to get past the parser:
/// replace a number, a string or a literal with another token.
fn json_token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("-1".to_string()),
        Just("4294967296".to_string()),
        Just("18446744073709551616".to_string()),
        Just("1e400".to_string()),
        Just("-0".to_string()),
        Just("1.5".to_string()),
        Just("\"\"".to_string()),
        Just("\"..\"".to_string()),
        Just("\"a/b\"".to_string()),
        Just("\"\\u0000\"".to_string()),
        Just("\"\\ud800\"".to_string()),
        Just("{\"b64\":\"////\"}".to_string()),
        Just("{\"b64\":\"!\"}".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("\"+262143-12-31T23:59:60.999999999Z\"".to_string()),
        Just("\"2024-02-30T00:00:00Z\"".to_string()),
        Just("\"1970-01-01T00:00:00+25:00\"".to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "[a-z0-9/.]{0,12}".prop_map(|s| format!("\"{s}\"")),
    ]
}

/// Replaces the `k`th JSON scalar (number, string, literal) in `text` by `tok`.
fn replace_json_scalar(text: &str, k: usize, tok: &str) -> String {
    let b = text.as_bytes();
    let mut spans = vec![];
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(b.len());
            // Keys are followed by ':'; only values are replaced.
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if j >= b.len() || b[j] != b':' {
                spans.push((start, i));
            }
        } else if c == b'-' || c.is_ascii_alphanumeric() {
            let start = i;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'-' | b'+' | b'.'))
            {
                i += 1;
            }
            spans.push((start, i));
        } else {
            i += 1;
        }
    }
    if spans.is_empty() {
        return text.to_string();
    }
    let (s, e) = spans[k % spans.len()];
    format!("{}{}{}", &text[..s], tok, &text[e..])
}

// ---------------------------------------------------------------------------
// Strategies for the repository types
// ---------------------------------------------------------------------------

fn id() -> impl Strategy<Value = Id> {
    any::<[u8; 32]>().prop_map(Id)
}

fn blob_type() -> impl Strategy<Value = BlobType> {
    prop_oneof![Just(BlobType::Data), Just(BlobType::Tree)]
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![Just(Compression::None), Just(Compression::Zstd)]
}

/// Pack entries with consistent offsets; the total stays below 4 GiB.
fn pack_entries() -> impl Strategy<Value = Vec<PackEntry>> {
    proptest::collection::vec(
        (
            blob_type(),
            compression(),
            id(),
            (OVERHEAD as u32)..(1 << 24),
            any::<u32>(),
        ),
        0..48,
    )
    .prop_map(|raw| {
        let mut offset = 0u32;
        raw.into_iter()
            .map(|(kind, compression, id, stored_len, raw_len)| {
                let e = PackEntry {
                    kind,
                    compression,
                    id,
                    offset,
                    stored_len,
                    raw_len,
                };
                offset += stored_len;
                e
            })
            .collect()
    })
}

fn index_entry() -> impl Strategy<Value = PackEntry> {
    (
        blob_type(),
        compression(),
        id(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(kind, compression, id, offset, len, raw_len)| PackEntry {
            kind,
            compression,
            id,
            offset,
            stored_len: len.min(u32::MAX - offset),
            raw_len,
        })
}

fn index_file() -> impl Strategy<Value = IndexFile> {
    (
        proptest::collection::vec(id(), 0..6),
        proptest::collection::vec(
            (id(), proptest::collection::vec(index_entry(), 0..12)),
            0..6,
        ),
    )
        .prop_map(|(supersedes, packs)| IndexFile { supersedes, packs })
}

/// A raw name valid in a tree: non-empty, no '/', no NUL, not "." or "..".
fn tree_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-zA-Z0-9._ -]{1,12}".prop_map(String::into_bytes),
        "\\PC{1,6}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 1..12),
    ]
    .prop_map(|mut v| {
        v.retain(|&b| b != b'/' && b != 0);
        if v.is_empty() || v == b"." || v == b".." {
            v.push(b'x');
        }
        v
    })
}

fn node_kind() -> impl Strategy<Value = NodeKind> {
    prop_oneof![
        Just(NodeKind::File),
        Just(NodeKind::Dir),
        Just(NodeKind::Symlink),
        Just(NodeKind::Blockdev),
        Just(NodeKind::Chardev),
        Just(NodeKind::Fifo),
        Just(NodeKind::Socket),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    (
        (
            tree_name(),
            node_kind(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        ),
        (any::<i64>(), any::<u32>(), any::<i64>(), any::<u32>()),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        (
            proptest::collection::vec(id(), 0..4),
            proptest::option::of(id()),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            proptest::option::of(any::<u64>()),
        ),
    )
        .prop_map(
            |(
                (name, kind, mode, uid, gid),
                (mtime, mtime_ns, ctime, ctime_ns),
                (inode, device, links, size),
                (content, subtree, target, rdev),
            )| {
                let mut n = Node {
                    name: RawName(name),
                    kind,
                    mode,
                    uid,
                    gid,
                    mtime,
                    mtime_ns,
                    ctime,
                    ctime_ns,
                    inode,
                    device,
                    links,
                    size,
                    content,
                    subtree,
                    target: target.map(RawName),
                    rdev,
                    xattrs: Vec::new(),
                };
                match kind {
                    NodeKind::Dir if n.subtree.is_none() => n.subtree = Some(Id([7; 32])),
                    NodeKind::Symlink if n.target.is_none() => {
                        n.target = Some(RawName(b"t".to_vec()))
                    }
                    _ => {}
                }
                n
            },
        )
}

fn tree() -> impl Strategy<Value = Tree> {
    proptest::collection::vec(node(), 0..10).prop_map(|mut nodes| {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.dedup_by(|a, b| a.name == b.name);
        Tree { nodes }
    })
}

/// Times chrono can print and parse as RFC 3339 (years 1..=9999).
fn time() -> impl Strategy<Value = DateTime<Utc>> {
    (-62_135_596_800i64..=253_402_300_799, 0u32..1_000_000_000)
        .prop_map(|(s, ns)| DateTime::from_timestamp(s, ns).expect("in range"))
}

fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        0.0..1e6f64,
    ]
}

fn summary() -> impl Strategy<Value = SnapshotSummary> {
    (
        any::<[u64; 8]>(),
        finite_f64(),
        proptest::option::of(("\\PC{0,8}", -7i32..=22)),
    )
        .prop_map(|(n, duration_s, compression)| SnapshotSummary {
            files_new: n[0],
            files_changed: n[1],
            files_unmodified: n[2],
            dirs: n[3],
            bytes_read: n[4],
            total_bytes: n[5],
            data_added: n[6],
            excluded: n[7],
            duration_s,
            compression: compression.map(|(setting, level)| SnapshotCompression { setting, level }),
        })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        (time(), id(), proptest::collection::vec("\\PC{0,16}", 0..4)),
        (
            "\\PC{0,16}",
            "\\PC{0,16}",
            proptest::collection::vec("\\PC{0,8}", 0..4),
        ),
        (
            prop_oneof![
                Just(BackupMode::Full),
                Just(BackupMode::Incremental),
                Just(BackupMode::Differential)
            ],
            proptest::option::of(id()),
            summary(),
            "\\PC{0,8}",
        ),
    )
        .prop_map(
            |((time, tree, paths), (hostname, username, tags), (mode, parent, summary, pv))| {
                Snapshot {
                    time,
                    tree,
                    paths,
                    hostname,
                    username,
                    tags,
                    mode,
                    parent,
                    summary,
                    program_version: pv,
                    original: None,
                }
            },
        )
}

fn config_valid(c: &RepoConfig) -> bool {
    c.version == strata::repo::FORMAT_VERSION
        && c.chunker.validate().is_ok()
        && (-7..=22).contains(&c.compression_level)
        && (1024 * 1024..=1024 * 1024 * 1024).contains(&c.pack_size)
}

fn any_config() -> impl Strategy<Value = RepoConfig> {
    (
        prop_oneof![Just(1u32), any::<u32>()],
        "\\PC{0,70}",
        prop_oneof![
            small_params(),
            (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(a, b, c)| ChunkerParams {
                min_size: a,
                avg_size: b,
                max_size: c,
            }),
        ],
        prop_oneof![-7i32..=22, any::<i32>()],
        prop_oneof![(1u32 << 20)..=(1 << 30), any::<u32>()],
    )
        .prop_map(
            |(version, id, chunker, compression_level, pack_size)| RepoConfig {
                version,
                id,
                chunker,
                compression_level,
                pack_size,
            },
        )
}

/// The cheapest Argon2id parameters the key file accepts.
const FAST_KDF: KdfParams = KdfParams {
    memory_kib: 8,
    iterations: 1,
    parallelism: 1,
};

/// Bounds documented in keyfile.rs (checked here from the outside).
fn kdf_within_bounds(p: &KdfParams) -> bool {
    p.memory_kib <= 4 * 1024 * 1024
        && u64::from(p.memory_kib) >= 8 * u64::from(p.parallelism)
        && (1..=64).contains(&p.iterations)
        && (1..=64).contains(&p.parallelism)
}

fn kdf_is_cheap(p: &KdfParams) -> bool {
    p.memory_kib <= 256 && p.iterations <= 2
}

// ---------------------------------------------------------------------------
// Chunker
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(24))]

    /// Large random inputs (up to 8 MiB) with the default (production) sizes
    /// and with small sizes.
    #[test]
    fn chunker_large_random(
        len in 0usize..=8 * 1024 * 1024,
        seed in any::<u64>(),
        read_seed in any::<u64>(),
        secret in any::<[u8; 32]>(),
        small in small_even_params(),
        use_small in any::<bool>(),
    ) {
        let data = random_bytes(seed, len);
        let params = if use_small { small } else { ChunkerParams::default() };
        let c = Chunker::new(MasterKey::from_secret(secret).gear_table(), params).unwrap();
        check_chunking(&c, &data, read_seed, 256 * 1024)?;
    }

    /// Inputs made of repeated patterns (constant runs hit max-size cuts).
    #[test]
    fn chunker_patterned(
        parts in proptest::collection::vec(
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300), 1u32..40_000),
            1..24,
        ),
        seed in any::<u64>(),
        read_seed in any::<u64>(),
        params in small_even_params(),
        use_default in prop::bool::weighted(0.25),
    ) {
        let data = patterned(&parts, seed, 8 * 1024 * 1024);
        let params = if use_default { ChunkerParams::default() } else { params };
        let c = Chunker::new(test_key().gear_table(), params).unwrap();
        check_chunking(&c, &data, read_seed, 64 * 1024)?;
    }
}

proptest! {
    #![proptest_config(config(48))]

    /// Small inputs with tiny reads, around the min/max boundaries.
    #[test]
    fn chunker_small_inputs(
        len in 0usize..=200_000,
        seed in any::<u64>(),
        read_seed in any::<u64>(),
        params in small_even_params(),
    ) {
        let data = random_bytes(seed, len);
        let c = Chunker::new(test_key().gear_table(), params).unwrap();
        check_chunking(&c, &data, read_seed, 1024)?;
    }

    /// `ChunkerParams::validate` accepts exactly what its doc states, and
    /// `Chunker::new` never panics on any parameters.
    #[test]
    fn chunker_params_validate(min in any::<u32>(), avg in any::<u32>(), max in any::<u32>(),
                               small in 0u32..70_000, pick in 0u8..4) {
        let p = match pick {
            0 => ChunkerParams { min_size: min, avg_size: avg, max_size: max },
            1 => ChunkerParams { min_size: small, avg_size: avg % 70_000, max_size: max % 70_000 },
            2 => ChunkerParams { min_size: min % (1 << 22), avg_size: avg % (1 << 23), max_size: max % (1 << 25) },
            _ => ChunkerParams { min_size: 64, avg_size: 256 + small, max_size: max % (1 << 25) },
        };
        let ok = p.min_size >= 64
            && p.min_size.is_multiple_of(2)
            && p.min_size < p.avg_size
            && p.avg_size < p.max_size
            && p.avg_size >= 256
            && p.avg_size <= 4 * 1024 * 1024
            && p.max_size <= 16 * 1024 * 1024;
        prop_assert_eq!(p.validate().is_ok(), ok);
        let c = Chunker::new(test_key().gear_table(), p);
        prop_assert_eq!(c.is_ok(), ok);
        if let Ok(c) = c {
            // Every cut stays within the data and the max size.
            let data = random_bytes(u64::from(small), (p.max_size as usize + 10).min(100_000));
            let n = c.cut(&data);
            prop_assert!(n > 0 && n <= data.len() && n <= p.max_size as usize);
        }
    }
}

/// An odd `min_size` is refused: FastCDC 3.2's `cut_gear` starts hashing at
/// `min_size / 2 * 2` and can cut there, one byte short of an odd minimum.
#[test]
fn chunker_odd_min_size_is_refused() {
    let params = ChunkerParams {
        min_size: 65,
        avg_size: 256,
        max_size: 1024,
    };
    assert!(params.validate().is_err());
    assert!(Chunker::new(test_key().gear_table(), params).is_err());
}

// ---------------------------------------------------------------------------
// Pack header and trailer
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn pack_header_round_trip(salt in any::<[u8; 16]>(), entries in pack_entries()) {
        let plain = encode_header(&salt, &entries);
        prop_assert_eq!(plain.len(), HEADER_PREFIX_LEN + entries.len() * ENTRY_LEN);
        let data_len: u64 = entries.iter().map(|e| u64::from(e.stored_len)).sum();
        let back = decode_header(&plain, data_len).unwrap();
        prop_assert_eq!(&back, &entries);
        // The blob area must match exactly.
        prop_assert!(decode_header(&plain, data_len + 1).is_err());
        if data_len > 0 {
            prop_assert!(decode_header(&plain, data_len - 1).is_err());
        }
    }

    /// Whatever decodes re-encodes to the same bytes (the format is canonical),
    /// and hostile bytes never panic.
    #[test]
    fn pack_header_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        data_len in prop_oneof![any::<u64>(), 0u64..10_000],
    ) {
        if let Ok(entries) = decode_header(&bytes, data_len) {
            let salt: [u8; 16] = bytes[1..17].try_into().unwrap();
            prop_assert_eq!(encode_header(&salt, &entries), bytes);
        }
    }

    #[test]
    fn pack_header_mutated(
        salt in any::<[u8; 16]>(),
        entries in pack_entries(),
        muts in proptest::collection::vec(mutation(), 1..4),
        delta in -2i64..=2,
    ) {
        let plain = encode_header(&salt, &entries);
        let data_len: u64 = entries.iter().map(|e| u64::from(e.stored_len)).sum();
        let bad = mutate(plain, &muts);
        let dl = data_len.saturating_add_signed(delta);
        if let Ok(got) = decode_header(&bad, dl) {
            let salt: [u8; 16] = bad[1..17].try_into().unwrap();
            prop_assert_eq!(encode_header(&salt, &got), bad);
            prop_assert_eq!(got.iter().map(|e| u64::from(e.stored_len)).sum::<u64>(), dl);
        }
    }

    #[test]
    fn pack_trailer_arbitrary(pack_len in any::<u64>(), trailer in proptest::collection::vec(any::<u8>(), 0..12),
                              hlen in any::<u32>(), magic in any::<bool>()) {
        let _ = header_range(pack_len, &trailer);
        let mut t = hlen.to_le_bytes().to_vec();
        t.extend_from_slice(if magic { b"STPK" } else { b"STPL" });
        match header_range(pack_len, &t) {
            Ok(r) => {
                prop_assert!(magic);
                prop_assert!(r.start <= r.end);
                prop_assert_eq!(r.end, pack_len - TRAILER_LEN as u64);
                prop_assert_eq!(r.end - r.start, u64::from(hlen));
            }
            Err(_) => prop_assert!(!magic || pack_len < TRAILER_LEN as u64 + u64::from(hlen)),
        }
    }
}

proptest! {
    #![proptest_config(config(32))]

    /// Whole packs: build, read back, and any corruption of the header region
    /// (or a wrong name) is refused.
    #[test]
    fn pack_build_read_round_trip(
        blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2000), 0..6),
        muts in proptest::collection::vec(mutation(), 1..3),
        level in 0i32..4,
    ) {
        let key = test_key();
        let mut b = PackBuilder::new();
        for p in &blobs {
            b.add(seal_blob(&key, BlobType::Data, key.id_of(p), p, level));
        }
        let pack = b.finish(&key);
        let bytes = pack.to_vec();
        prop_assert_eq!(bytes.len(), pack.len());
        let got = read_pack_header(&key, &pack.id, &bytes).unwrap();
        prop_assert_eq!(&got, &pack.entries);
        for (e, p) in got.iter().zip(&blobs) {
            let s = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
            prop_assert_eq!(&open_blob(&key, e.kind, &e.id, e.compression, e.raw_len, s).unwrap(), p);
        }
        let mut other = pack.id;
        other.0[0] ^= 1;
        prop_assert!(read_pack_header(&key, &other, &bytes).is_err());
        prop_assert!(read_pack_header(&MasterKey::from_secret([1; 32]), &pack.id, &bytes).is_err());
        let bad = mutate(bytes.clone(), &muts);
        if let Ok(got) = read_pack_header(&key, &pack.id, &bad) {
            // Only a change of the blob area (not the header) can pass, and
            // then the lengths still add up.
            prop_assert_eq!(got, pack.entries);
            prop_assert_eq!(bad.len(), bytes.len());
        }
    }

    #[test]
    fn pack_read_arbitrary(bytes in proptest::collection::vec(any::<u8>(), 0..300), pid in id(),
                           hlen in 0u32..400, tail_magic in any::<bool>()) {
        let key = test_key();
        prop_assert!(read_pack_header(&key, &pid, &bytes).is_err());
        let mut b = bytes;
        b.extend_from_slice(&hlen.to_le_bytes());
        if tail_magic {
            b.extend_from_slice(b"STPK");
        }
        prop_assert!(read_pack_header(&key, &pid, &b).is_err());
    }
}

// ---------------------------------------------------------------------------
// Index files
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn index_round_trip(f in index_file()) {
        let enc = f.encode();
        prop_assert_eq!(
            enc.len(),
            4 + 1 + 4 + 32 * f.supersedes.len() + 4 + f.packs.len() * 36 + f.blob_count() * INDEX_ENTRY_LEN
        );
        prop_assert_eq!(IndexFile::decode(&enc).unwrap(), f);
    }

    #[test]
    fn index_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        with_magic in any::<bool>(),
    ) {
        let mut b = bytes;
        if with_magic {
            b.splice(0..0, b"STIX\x01".iter().copied());
        }
        if let Ok(f) = IndexFile::decode(&b) {
            prop_assert_eq!(f.encode(), b);
        }
    }

    #[test]
    fn index_mutated(f in index_file(), muts in proptest::collection::vec(mutation(), 1..4)) {
        let bad = mutate(f.encode(), &muts);
        if let Ok(g) = IndexFile::decode(&bad) {
            prop_assert_eq!(g.encode(), bad);
        }
    }

    /// Hostile counts are refused before anything is allocated for them.
    #[test]
    fn index_huge_counts(n_sup in any::<u32>(), n_packs in any::<u32>(), n_blobs in any::<u32>(), tail in 0usize..200) {
        let mut b = b"STIX\x01".to_vec();
        b.extend_from_slice(&n_sup.to_le_bytes());
        b.extend_from_slice(&n_packs.to_le_bytes());
        b.extend_from_slice(&[0u8; 32]);
        b.extend_from_slice(&n_blobs.to_le_bytes());
        b.resize(b.len() + tail, 0);
        let _ = IndexFile::decode(&b);
    }
}

// ---------------------------------------------------------------------------
// Trees
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn tree_round_trip(t in tree()) {
        let back = Tree::decode(&t.encode()).unwrap();
        prop_assert_eq!(&back, &t);
        for n in &t.nodes {
            prop_assert_eq!(back.find(&n.name.0), Some(n));
        }
    }

    #[test]
    fn tree_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(t) = Tree::decode(&bytes) {
            prop_assert_eq!(Tree::decode(&t.encode()).unwrap(), t);
        }
    }

    #[test]
    fn tree_mutated(t in tree(), muts in proptest::collection::vec(mutation(), 1..4)) {
        let bad = mutate(t.encode(), &muts);
        if let Ok(t2) = Tree::decode(&bad) {
            prop_assert_eq!(Tree::decode(&t2.encode()).unwrap(), t2);
        }
    }

    /// Token-level mutations that keep the JSON well-formed, so the checks
    /// after parsing (names, order, kinds) are exercised.
    #[test]
    fn tree_json_token_mutated(t in tree(), k in any::<usize>(), tok in json_token()) {
        let text = String::from_utf8(t.encode()).unwrap();
        let bad = replace_json_scalar(&text, k, &tok);
        if let Ok(t2) = Tree::decode(bad.as_bytes()) {
            prop_assert_eq!(Tree::decode(&t2.encode()).unwrap(), t2.clone());
            for n in &t2.nodes {
                prop_assert!(!n.name.0.is_empty() && !n.name.0.contains(&b'/') && !n.name.0.contains(&0));
                prop_assert!(n.name.0 != b"." && n.name.0 != b"..");
            }
        }
    }
}

#[test]
fn tree_deep_nesting_is_an_error_not_a_stack_overflow() {
    for open in ["[", "{\"nodes\":", "{\"nodes\":[{\"name\":"] {
        let mut s = String::from("{\"nodes\":[");
        for _ in 0..100_000 {
            s.push_str(open);
        }
        assert!(Tree::decode(s.as_bytes()).is_err());
        assert!(Snapshot::decode(s.as_bytes()).is_err());
        assert!(RepoConfig::decode(s.as_bytes()).is_err());
        assert!(KeyFile::decode(s.as_bytes()).is_err());
    }
}

#[test]
fn tree_refuses_unsafe_and_unsorted_names() {
    let base = r#"{"name":NAME,"type":"file","mode":0,"uid":0,"gid":0,"mtime":0,"mtime_ns":0}"#;
    for bad in [
        r#""""#,
        r#"".""#,
        r#""..""#,
        r#""a/b""#,
        r#""a\u0000""#,
        r#"{"b64":"Lg=="}"#,
        r#"{"b64":"Li4="}"#,
        r#"{"b64":"YS9i"}"#,
        r#"{"b64":"AA=="}"#,
        r#"{"b64":""}"#,
    ] {
        let json = format!("{{\"nodes\":[{}]}}", base.replace("NAME", bad));
        assert!(Tree::decode(json.as_bytes()).is_err(), "{bad} accepted");
    }
    let a = base.replace("NAME", r#""a""#);
    let b = base.replace("NAME", r#""b""#);
    for nodes in [format!("{b},{a}"), format!("{a},{a}")] {
        let json = format!("{{\"nodes\":[{nodes}]}}");
        assert!(Tree::decode(json.as_bytes()).is_err(), "{nodes}");
    }
    let dir = base.replace("NAME", r#""d""#).replace("file", "dir");
    assert!(Tree::decode(format!("{{\"nodes\":[{dir}]}}").as_bytes()).is_err());
    let link = base.replace("NAME", r#""l""#).replace("file", "symlink");
    assert!(Tree::decode(format!("{{\"nodes\":[{link}]}}").as_bytes()).is_err());
}

// ---------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn snapshot_round_trip(s in snapshot()) {
        let back = Snapshot::decode(&s.encode()).unwrap();
        prop_assert!(snapshot_eq(&back, &s), "{:?} != {:?}", back, s);
    }

    #[test]
    fn snapshot_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(s) = Snapshot::decode(&bytes) {
            prop_assert!(snapshot_eq(&Snapshot::decode(&s.encode()).unwrap(), &s));
        }
    }

    #[test]
    fn snapshot_mutated(s in snapshot(), muts in proptest::collection::vec(mutation(), 1..4)) {
        if let Ok(s2) = Snapshot::decode(&mutate(s.encode(), &muts)) {
            prop_assert!(snapshot_eq(&Snapshot::decode(&s2.encode()).unwrap(), &s2));
        }
    }

    #[test]
    fn snapshot_json_token_mutated(s in snapshot(), k in any::<usize>(), tok in json_token()) {
        let text = String::from_utf8(s.encode()).unwrap();
        if let Ok(s2) = Snapshot::decode(replace_json_scalar(&text, k, &tok).as_bytes()) {
            prop_assert!(snapshot_eq(&Snapshot::decode(&s2.encode()).unwrap(), &s2));
        }
    }
}

/// Equality up to the last bit of `duration_s`: serde_json (without its
/// `float_roundtrip` feature) may parse a printed f64 one ULP off; see
/// `snapshot_duration_round_trips_exactly`.
fn snapshot_eq(a: &Snapshot, b: &Snapshot) -> bool {
    let (x, y) = (a.summary.duration_s, b.summary.duration_s);
    let close = x == y || (x - y).abs() <= x.abs().max(y.abs()) * 4.0 * f64::EPSILON;
    let mut a = a.clone();
    a.summary.duration_s = y;
    close && a == *b
}

/// serde_json's default float parser is not exact, so a decoded snapshot can
/// differ from the one encoded (and re-encode to different bytes).
#[test]
fn snapshot_duration_round_trips_exactly() {
    let s = Snapshot {
        time: DateTime::from_timestamp(0, 0).unwrap(),
        tree: Id([0; 32]),
        paths: vec![],
        hostname: String::new(),
        username: String::new(),
        tags: vec![],
        mode: BackupMode::Full,
        parent: None,
        summary: SnapshotSummary {
            duration_s: 3.650649800251267e143,
            ..SnapshotSummary::default()
        },
        program_version: String::new(),
        original: None,
    };
    let back = Snapshot::decode(&s.encode()).unwrap();
    assert_eq!(
        back.summary.duration_s.to_bits(),
        s.summary.duration_s.to_bits()
    );
}

/// A snapshot whose duration is not finite encodes to something its own
/// decoder refuses (serde_json writes NaN/inf as `null`).
#[test]
fn snapshot_non_finite_duration_round_trips() {
    let mut s = Snapshot {
        time: DateTime::from_timestamp(0, 0).unwrap(),
        tree: Id([1; 32]),
        paths: vec!["/".into()],
        hostname: "h".into(),
        username: "u".into(),
        tags: vec![],
        mode: BackupMode::Full,
        parent: None,
        summary: SnapshotSummary::default(),
        program_version: String::new(),
        original: None,
    };
    s.summary.duration_s = f64::NAN;
    Snapshot::decode(&s.encode()).expect("snapshot with NaN duration decodes");
}

// ---------------------------------------------------------------------------
// Repository config
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    /// Decoding an encoded config succeeds exactly when its fields are in
    /// range, and gives the same config back.
    #[test]
    fn config_round_trip_and_validation(c in any_config()) {
        match RepoConfig::decode(&c.encode()) {
            Ok(back) => {
                prop_assert!(config_valid(&c), "accepted out-of-range config {:?}", c);
                prop_assert_eq!(back, c);
            }
            Err(_) => prop_assert!(!config_valid(&c), "refused valid config {:?}", c),
        }
    }

    #[test]
    fn config_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(c) = RepoConfig::decode(&bytes) {
            prop_assert!(config_valid(&c));
        }
    }

    #[test]
    fn config_mutated(c in any_config(), muts in proptest::collection::vec(mutation(), 1..4),
                      k in any::<usize>(), tok in json_token()) {
        let enc = c.encode();
        for bad in [
            mutate(enc.clone(), &muts),
            replace_json_scalar(std::str::from_utf8(&enc).unwrap(), k, &tok).into_bytes(),
        ] {
            if let Ok(c2) = RepoConfig::decode(&bad) {
                prop_assert!(config_valid(&c2));
                // Configs that decode can always drive a chunker.
                prop_assert!(Chunker::new(test_key().gear_table(), c2.chunker).is_ok());
                prop_assert_eq!(RepoConfig::decode(&c2.encode()).unwrap(), c2);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// AEAD and sealed blobs
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn aead_round_trip_and_bit_flips(
        key in any::<[u8; 32]>(),
        ad in proptest::collection::vec(any::<u8>(), 0..64),
        plain in proptest::collection::vec(any::<u8>(), 0..512),
        other_key in any::<[u8; 32]>(),
    ) {
        let sealed = crypto::seal(&key, &ad, &plain);
        prop_assert_eq!(sealed.len(), plain.len() + OVERHEAD);
        prop_assert_eq!(&crypto::open(&key, &ad, &sealed).unwrap(), &plain);
        // Every single flipped bit anywhere (nonce, ciphertext, tag) fails.
        for bit in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(crypto::open(&key, &ad, &bad).is_err(), "bit {} flip accepted", bit);
        }
        // So does every flipped bit of the associated data.
        for bit in 0..ad.len() * 8 {
            let mut bad_ad = ad.clone();
            bad_ad[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(crypto::open(&key, &bad_ad, &sealed).is_err());
        }
        for n in 0..sealed.len() {
            prop_assert!(crypto::open(&key, &ad, &sealed[..n]).is_err());
        }
        let mut longer = sealed.clone();
        longer.push(0);
        prop_assert!(crypto::open(&key, &ad, &longer).is_err());
        if other_key != key {
            prop_assert!(crypto::open(&other_key, &ad, &sealed).is_err());
        }
        // Nonces are random: sealing twice differs.
        prop_assert_ne!(crypto::seal(&key, &ad, &plain), sealed);
    }

    #[test]
    fn aead_arbitrary_bytes(key in any::<[u8; 32]>(), ad in proptest::collection::vec(any::<u8>(), 0..16),
                            bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        prop_assert!(crypto::open(&key, &ad, &bytes).is_err());
    }

    #[test]
    fn blob_round_trip_and_binding(
        plain in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..3000),
            (any::<u8>(), 0usize..20_000).prop_map(|(b, n)| vec![b; n]),
        ],
        kind in blob_type(),
        level in -1i32..6,
        flip in any::<usize>(),
        raw_delta in prop_oneof![Just(1u32), any::<u32>()],
    ) {
        let key = test_key();
        let id = key.id_of(&plain);
        let s = seal_blob(&key, kind, id, &plain, level);
        prop_assert_eq!(s.raw_len as usize, plain.len());
        prop_assert_eq!(&open_blob(&key, kind, &id, s.compression, s.raw_len, &s.bytes).unwrap(), &plain);
        if level == 0 {
            prop_assert_eq!(s.compression, Compression::None);
        }
        let other_kind = if kind == BlobType::Data { BlobType::Tree } else { BlobType::Data };
        prop_assert!(open_blob(&key, other_kind, &id, s.compression, s.raw_len, &s.bytes).is_err());
        let mut other_id = id;
        other_id.0[31] ^= 0x80;
        prop_assert!(open_blob(&key, kind, &other_id, s.compression, s.raw_len, &s.bytes).is_err());
        let other_comp = if s.compression == Compression::None { Compression::Zstd } else { Compression::None };
        prop_assert!(open_blob(&key, kind, &id, other_comp, s.raw_len, &s.bytes).is_err());
        // A wrong length is refused (capped to keep allocations small).
        let wrong_len = s.raw_len.wrapping_add(raw_delta) % (1 << 20);
        if wrong_len != s.raw_len {
            prop_assert!(open_blob(&key, kind, &id, s.compression, wrong_len, &s.bytes).is_err());
        }
        let mut bad = s.bytes.clone();
        let bit = flip % (bad.len() * 8);
        bad[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(open_blob(&key, kind, &id, s.compression, s.raw_len, &bad).is_err());
    }

    /// Arbitrary sealed bytes, and authentic ciphertexts whose payload is
    /// arbitrary (as a buggy writer could produce): errors, never panics.
    #[test]
    fn blob_arbitrary(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        kind in blob_type(),
        comp in compression(),
        raw_len in prop_oneof![0u32..1024, 0u32..(1 << 20)],
        bid in id(),
    ) {
        let key = test_key();
        prop_assert!(open_blob(&key, kind, &bid, comp, raw_len, &bytes).is_err());
        // Authentic ciphertext of an arbitrary payload, sealed the way
        // blob.rs does it ("strata:blob:" || type || id as associated data).
        let mut ad = b"strata:blob:".to_vec();
        ad.push(kind.to_byte());
        ad.extend_from_slice(&bid.0);
        let sealed = crypto::seal(key.encryption_key(), &ad, &bytes);
        if let Ok(p) = open_blob(&key, kind, &bid, comp, raw_len, &sealed) {
            prop_assert_eq!(p.len(), raw_len as usize);
            prop_assert_eq!(key.id_of(&p), bid);
        }
        // And with a matching id, uncompressed: this one must succeed.
        let real = key.id_of(&bytes);
        let mut ad = b"strata:blob:".to_vec();
        ad.push(kind.to_byte());
        ad.extend_from_slice(&real.0);
        let sealed = crypto::seal(key.encryption_key(), &ad, &bytes);
        prop_assert_eq!(
            open_blob(&key, kind, &real, Compression::None, bytes.len() as u32, &sealed).unwrap(),
            bytes
        );
    }
}

// ---------------------------------------------------------------------------
// Key files
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(6))]

    /// Create, encode, decode, open; a wrong password gives `None`.
    #[test]
    fn keyfile_round_trip(
        secret in any::<[u8; 32]>(),
        repo in "\\PC{0,40}",
        pw in proptest::collection::vec(any::<u8>(), 0..40),
        memory_extra in 0u32..64,
        iterations in 1u32..=2,
    ) {
        let params = KdfParams { memory_kib: 8 + memory_extra, iterations, parallelism: 1 };
        let master = MasterKey::from_secret(secret);
        let kf = KeyFile::create(&master, &repo, &pw, params).unwrap();
        let dec = KeyFile::decode(&kf.encode()).unwrap();
        prop_assert_eq!(dec.params, params);
        let (got, got_repo) = dec.open(&pw).unwrap().expect("right password opens");
        prop_assert_eq!(got.secret(), master.secret());
        prop_assert_eq!(got_repo, repo);
        let mut wrong = pw.clone();
        wrong.push(b'!');
        prop_assert!(dec.open(&wrong).unwrap().is_none());
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Decoding never runs Argon2, and whatever it accepts has bounded
    /// Argon2 parameters.
    #[test]
    fn keyfile_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(kf) = KeyFile::decode(&bytes) {
            prop_assert!(kdf_within_bounds(&kf.params));
        }
    }

    /// The params check accepts exactly the documented bounds, for any values.
    #[test]
    fn keyfile_params_bounds(
        memory_kib in prop_oneof![any::<u32>(), 0u32..600, (4u32 << 20) - 2..(4 << 20) + 2],
        iterations in prop_oneof![any::<u32>(), 0u32..70],
        // Below 2^29: larger values overflow `8 * parallelism` in
        // keyfile.rs (see `keyfile_huge_parallelism_is_an_error`).
        parallelism in prop_oneof![0u32..(1 << 29), 0u32..70],
    ) {
        let json = format!(
            r#"{{"version":1,"created":"","hostname":"","username":"","kdf":"argon2id",
                "params":{{"memory_kib":{memory_kib},"iterations":{iterations},"parallelism":{parallelism}}},
                "salt":"","data":""}}"#
        );
        let p = KdfParams { memory_kib, iterations, parallelism };
        prop_assert_eq!(KeyFile::decode(json.as_bytes()).is_ok(), kdf_within_bounds(&p));
    }
}

proptest! {
    #![proptest_config(config(24))]

    /// Mutated key files: decode never panics; those that decode with cheap
    /// parameters are opened too, which must not panic (and must not yield a
    /// key unless the sealed data is intact).
    #[test]
    fn keyfile_mutated(
        muts in proptest::collection::vec(mutation(), 1..4),
        k in any::<usize>(),
        tok in json_token(),
    ) {
        let master = MasterKey::from_secret([9; 32]);
        let kf = KeyFile::create(&master, "repo", b"pw", FAST_KDF).unwrap();
        let enc = kf.encode();
        for bad in [
            mutate(enc.clone(), &muts),
            replace_json_scalar(std::str::from_utf8(&enc).unwrap(), k, &tok).into_bytes(),
        ] {
            if let Ok(k2) = KeyFile::decode(&bad) {
                prop_assert!(kdf_within_bounds(&k2.params));
                if kdf_is_cheap(&k2.params)
                    && let Ok(Some((got, _))) = k2.open(b"pw")
                {
                    prop_assert_eq!(got.secret(), master.secret());
                }
            }
        }
    }
}

/// `KdfParams::validate` computes `8 * parallelism` in u32 before checking
/// `parallelism <= 64`, which overflows (a panic with overflow checks, as in
/// debug builds) for parallelism >= 2^29.
#[test]
fn keyfile_huge_parallelism_is_an_error() {
    let json = br#"{"version":1,"created":"","hostname":"","username":"","kdf":"argon2id","params":{"memory_kib":0,"iterations":0,"parallelism":536870912},"salt":"","data":""}"#;
    assert!(KeyFile::decode(json).is_err());
}

#[test]
fn keyfile_too_large_is_refused_before_parsing() {
    let mut big = b"{\"version\":1,\"created\":\"".to_vec();
    big.resize(64 * 1024 + 1, b'a');
    assert!(KeyFile::decode(&big).is_err());
}

#[test]
fn keyfile_short_salt_is_an_error() {
    let master = MasterKey::from_secret([9; 32]);
    let mut kf = KeyFile::create(&master, "repo", b"pw", FAST_KDF).unwrap();
    for salt in ["", "AA==", "AAAAAAAAAA==", "not base64!"] {
        kf.salt = salt.into();
        assert!(kf.open(b"pw").is_err(), "salt {salt:?}");
    }
}

// ---------------------------------------------------------------------------
// Ids
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn id_hex_round_trip(id in id()) {
        let hex = id.to_hex();
        prop_assert_eq!(hex.len(), 64);
        prop_assert_eq!(hex.parse::<Id>().unwrap(), id);
        prop_assert_eq!(hex.to_uppercase().parse::<Id>().unwrap(), id);
        prop_assert_eq!(&hex[..8], id.short());
        let json = serde_json::to_string(&id).unwrap();
        prop_assert_eq!(serde_json::from_str::<Id>(&json).unwrap(), id);
        prop_assert_eq!(Id::from_slice(&id.0), Some(id));
    }

    #[test]
    fn id_arbitrary_strings(s in prop_oneof!["\\PC{0,80}", "[0-9a-fA-F]{60,68}", "[0-9a-f]{63}[^0-9a-f]"]) {
        let ok = s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        match s.parse::<Id>() {
            Ok(id) => {
                prop_assert!(ok);
                prop_assert_eq!(id.to_hex(), s.to_lowercase());
            }
            Err(e) => {
                prop_assert!(!ok);
                // The error quotes at most 80 characters of the input.
                prop_assert!(e.0.chars().count() <= 80);
            }
        }
    }

    #[test]
    fn id_from_slice_lengths(b in proptest::collection::vec(any::<u8>(), 0..70)) {
        prop_assert_eq!(Id::from_slice(&b).is_some(), b.len() == 32);
    }
}
