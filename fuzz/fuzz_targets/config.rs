//! Repository config JSON: errors or a config that is in range, can drive a
//! chunker and round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::chunker::Chunker;
use strata::crypto::MasterKey;
use strata::repo::RepoConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(c) = RepoConfig::decode(data) else {
        return;
    };
    assert!(c.chunker.validate().is_ok());
    assert!((-7..=22).contains(&c.compression_level));
    assert!((1 << 20..=1 << 30).contains(&c.pack_size));
    let chunker = Chunker::new(MasterKey::from_secret([7; 32]).gear_table(), c.chunker)
        .expect("a valid config makes a chunker");
    // One cut over a small buffer: within bounds.
    let buf = [0x5au8; 4096];
    let n = chunker.cut(&buf);
    assert!(n > 0 && n <= buf.len());
    assert_eq!(
        RepoConfig::decode(&c.encode()).expect("re-encoded config decodes"),
        c
    );
});
