//! Tree JSON: errors or a tree with safe, sorted names that round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::repo::tree::{NodeKind, Tree};

fuzz_target!(|data: &[u8]| {
    let Ok(t) = Tree::decode(data) else {
        return;
    };
    for w in t.nodes.windows(2) {
        assert!(w[0].name < w[1].name);
    }
    for n in &t.nodes {
        let name = &n.name.0;
        assert!(!name.is_empty() && name != b"." && name != b"..");
        assert!(!name.contains(&b'/') && !name.contains(&0));
        assert!(n.kind != NodeKind::Dir || n.subtree.is_some());
        assert!(n.kind != NodeKind::Symlink || n.target.is_some());
        assert_eq!(t.find(name), Some(n));
    }
    assert_eq!(
        Tree::decode(&t.encode()).expect("re-encoded tree decodes"),
        t
    );
});
