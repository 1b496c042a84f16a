//! Key file JSON: decoding must refuse hostile input (oversized files,
//! unbounded Argon2 parameters) with an error, never a panic. Key files that
//! decode with cheap parameters are also opened with a fixed password.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::crypto::keyfile::KeyFile;

fuzz_target!(|data: &[u8]| {
    let Ok(kf) = KeyFile::decode(data) else {
        return;
    };
    let p = kf.params;
    assert!(p.memory_kib <= 4 * 1024 * 1024, "memory bound: {p:?}");
    assert!((1..=64).contains(&p.iterations), "iteration bound: {p:?}");
    assert!((1..=64).contains(&p.parallelism), "lane bound: {p:?}");
    assert!(u64::from(p.memory_kib) >= 8 * u64::from(p.parallelism));
    let again = KeyFile::decode(&kf.encode()).expect("a decoded key file re-encodes");
    assert_eq!(again.params, p);
    assert_eq!(again.salt, kf.salt);
    assert_eq!(again.data, kf.data);
    // Argon2 runs only for tiny parameters, to keep the fuzzer fast.
    if p.memory_kib <= 256 && p.iterations <= 2 {
        let _ = kf.open(b"pw");
    }
});
