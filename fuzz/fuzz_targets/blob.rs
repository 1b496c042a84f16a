//! Sealed blobs, opened with a fixed key.
//!
//! Input: `flags u8 || raw_len u32 LE || body`. flags bit 0: blob type, bit 1:
//! compression, bits 2-3: zstd level for the round trip. The body is opened
//! as a sealed blob as is (which must fail: it does not authenticate), then
//! sealed as an authentic payload (as a buggy writer or a key holder could)
//! so decompression and the length and id checks run on hostile data, and
//! finally round-tripped through `seal_blob`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::crypto::{self, MasterKey};
use strata::id::Id;
use strata::repo::blob::{BlobType, Compression, open_blob, seal_blob};

/// Associated data as blob.rs builds it: "strata:blob:" || type || id.
fn blob_ad(kind: BlobType, id: &Id) -> Vec<u8> {
    let mut ad = b"strata:blob:".to_vec();
    ad.push(kind.to_byte());
    ad.extend_from_slice(&id.0);
    ad
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let key = MasterKey::from_secret([7; 32]);
    let flags = data[0];
    let kind = if flags & 1 == 0 {
        BlobType::Data
    } else {
        BlobType::Tree
    };
    let comp = if flags & 2 == 0 {
        Compression::None
    } else {
        Compression::Zstd
    };
    // Any length: open_blob checks it against the zstd frame before it
    // sizes a buffer by it.
    let raw_len = u32::from_le_bytes(data[1..5].try_into().unwrap());
    let body = &data[5..];

    let id = key.id_of(body);
    assert!(open_blob(&key, kind, &id, comp, raw_len, body).is_err());

    let sealed = crypto::seal(key.encryption_key(), &blob_ad(kind, &id), body);
    match open_blob(&key, kind, &id, comp, raw_len, &sealed) {
        Ok(p) => {
            assert_eq!(p.len(), raw_len as usize);
            assert_eq!(key.id_of(&p), id);
        }
        Err(_) => assert!(comp == Compression::Zstd || raw_len as usize != body.len()),
    }

    let level = i32::from((flags >> 2) & 3);
    let s = seal_blob(&key, kind, id, body, level);
    let back = open_blob(&key, kind, &id, s.compression, s.raw_len, &s.bytes)
        .expect("a sealed blob opens");
    assert_eq!(back, body);
});
