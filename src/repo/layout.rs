//! Object names in a repository.
//!
//! ```text
//! config                   encrypted repository config
//! keys/<id>                key files (plain JSON; id = BLAKE3 of the file)
//! data/<id[0..2]>/<id>     packs
//! index/<id>               index files
//! snapshots/<id>           snapshots
//! deletions/<id>           prune's deletion markers (packs awaiting deletion)
//! locks/<id>               backup and prune locks (random ids)
//! ```

use super::ObjectKind;
use crate::id::Id;

/// The config object.
pub const CONFIG: &str = "config";
/// Folder of key files.
pub const KEYS: &str = "keys/";
/// Folder of packs.
pub const DATA: &str = "data/";

/// A key file's name.
pub fn key(id: &Id) -> String {
    format!("keys/{id}")
}

/// The id in a key file's name, if it is one.
pub fn key_id_of(name: &str) -> Option<Id> {
    name.strip_prefix(KEYS)?.parse().ok()
}

/// A pack's name.
pub fn pack(id: &Id) -> String {
    let h = id.to_hex();
    format!("data/{}/{h}", &h[..2])
}

/// The folder of objects of a kind.
pub fn prefix(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Config => CONFIG,
        ObjectKind::Index => "index/",
        ObjectKind::Snapshot => "snapshots/",
        ObjectKind::Deletion => "deletions/",
        ObjectKind::Lock => "locks/",
    }
}

/// An index or snapshot's name.
pub fn object(kind: ObjectKind, id: &Id) -> String {
    format!("{}{id}", prefix(kind))
}

/// The pack id in a pack's name, if it is one.
pub fn pack_id_of(name: &str) -> Option<Id> {
    name.strip_prefix(DATA)?.rsplit('/').next()?.parse().ok()
}
