//! Index file codec ("STIX"): errors or an index that re-encodes to exactly
//! the input (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::repo::index::{Index, IndexFile};

fuzz_target!(|data: &[u8]| {
    let Ok(f) = IndexFile::decode(data) else {
        return;
    };
    assert_eq!(f.encode(), data, "index encoding is not canonical");
    let mut idx = Index::default();
    idx.add_file(&f);
    for (_, entries) in &f.packs {
        for e in entries {
            assert!(idx.contains(&e.id));
            assert!(e.offset.checked_add(e.stored_len).is_some());
        }
    }
    assert!(idx.len() <= f.blob_count());
});
