//! Snapshot JSON: errors or a snapshot that round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::repo::snapshot::Snapshot;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = Snapshot::decode(data) else {
        return;
    };
    let mut back = Snapshot::decode(&s.encode()).expect("re-encoded snapshot decodes");
    // serde_json's default float parsing may be one ULP off (known); compare
    // the duration loosely and everything else exactly.
    let (x, y) = (s.summary.duration_s, back.summary.duration_s);
    assert!(x == y || (x - y).abs() <= x.abs().max(y.abs()) * 4.0 * f64::EPSILON);
    back.summary.duration_s = x;
    assert_eq!(back, s);
});
