//! Per-stage throughput of the backup and restore pipeline, to show where the
//! time goes: chunking, keyed hashing, compression, sealing, and the way back.
//!
//!   cargo bench --bench pipeline

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use strata::chunker::{Chunker, ChunkerParams};
use strata::crypto::MasterKey;
use strata::repo::blob::{BlobType, open_blob, seal_blob};

const MIB: usize = 1 << 20;

/// Incompressible bytes (xorshift).
fn random(n: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as u8
        })
        .collect()
}

/// Text-like bytes that compress about 3:1.
fn text(n: usize) -> Vec<u8> {
    let words = [
        "backup ",
        "strata ",
        "chunk ",
        "pack ",
        "index ",
        "snapshot\n",
        "0x1f ",
    ];
    let r = random(n / 4 + 1);
    let mut out = Vec::with_capacity(n + 16);
    let mut i = 0;
    while out.len() < n {
        out.extend_from_slice(words[r[i % r.len()] as usize % words.len()].as_bytes());
        i += 1;
    }
    out.truncate(n);
    out
}

fn chunker(key: &MasterKey) -> Chunker {
    Chunker::new(key.gear_table(), ChunkerParams::default()).unwrap()
}

fn stages(c: &mut Criterion) {
    let key = MasterKey::from_secret([7; 32]);
    let data = random(64 * MIB);

    let mut g = c.benchmark_group("backup");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("chunk (FastCDC, keyed gear)", |b| {
        let ch = chunker(&key);
        b.iter(|| {
            let mut s = ch.stream(&data[..]);
            let mut n = 0;
            while let Some(c) = s.next_chunk().unwrap() {
                n += c.len();
            }
            n
        })
    });
    g.bench_function("chunk id (keyed BLAKE3)", |b| {
        b.iter(|| {
            data.chunks(MIB)
                .map(|c| key.id_of(c))
                .fold(0u8, |a, id| a ^ id.0[0])
        })
    });
    g.finish();

    let mut g = c.benchmark_group("seal 1 MiB blob");
    for (name, blob) in [("random", random(MIB)), ("text", text(MIB))] {
        g.throughput(Throughput::Bytes(blob.len() as u64));
        let id = key.id_of(&blob);
        for level in [0, 1, 3] {
            g.bench_with_input(
                BenchmarkId::new(format!("zstd {level} + XChaCha20-Poly1305"), name),
                &blob,
                |b, blob| b.iter(|| seal_blob(&key, BlobType::Data, id, blob, level)),
            );
        }
        let sealed = seal_blob(&key, BlobType::Data, id, &blob, 3);
        g.bench_with_input(
            BenchmarkId::new("open (verify, decompress)", name),
            &sealed,
            |b, s| {
                b.iter(|| {
                    open_blob(
                        &key,
                        BlobType::Data,
                        &id,
                        s.compression,
                        s.raw_len,
                        &s.bytes,
                    )
                    .unwrap()
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
