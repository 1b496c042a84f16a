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
//! deleted/<id>             deletion records (plain JSON; id = BLAKE3 of the file)
//! ```

use super::ObjectKind;
use crate::id::Id;

/// The config object.
pub const CONFIG: &str = "config";
/// Folder of key files.
pub const KEYS: &str = "keys/";
/// Folder of packs.
pub const DATA: &str = "data/";

/// Folder of deletion records.
pub const DELETED: &str = "deleted/";

/// The folders of a repository, as the pool and `pool repair` see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Folder {
    /// `config`.
    Config,
    /// `keys/`.
    Keys,
    /// `data/`.
    Data,
    /// `index/`.
    Index,
    /// `deletions/` (prune's markers).
    Deletions,
    /// `deleted/` (deletion records).
    Deleted,
    /// `snapshots/`.
    Snapshots,
    /// `locks/`.
    Locks,
    /// Anything else.
    Other,
}

impl Folder {
    /// The folder an object name is in.
    pub fn of(key: &str) -> Folder {
        let top = key.split('/').next().unwrap_or_default();
        match top {
            "config" => Folder::Config,
            "keys" => Folder::Keys,
            "data" => Folder::Data,
            "index" => Folder::Index,
            "deletions" => Folder::Deletions,
            "deleted" => Folder::Deleted,
            "snapshots" => Folder::Snapshots,
            "locks" => Folder::Locks,
            _ => Folder::Other,
        }
    }

    /// The folder's name as `pool status` counts it.
    pub fn name(self) -> &'static str {
        match self {
            Folder::Config => "config",
            Folder::Keys => "keys",
            Folder::Data => "data",
            Folder::Index => "index",
            Folder::Deletions => "deletions",
            Folder::Deleted => "deleted",
            Folder::Snapshots => "snapshots",
            Folder::Locks => "locks",
            Folder::Other => "other",
        }
    }

    /// Where objects of this folder come in a member's write order: config
    /// and keys, then packs, then index files, then snapshots (a snapshot
    /// never lands before what it references).
    pub fn write_rank(self) -> u8 {
        match self {
            Folder::Config | Folder::Keys | Folder::Deleted => 0,
            Folder::Data => 1,
            Folder::Index => 2,
            Folder::Deletions | Folder::Locks | Folder::Other => 3,
            Folder::Snapshots => 4,
        }
    }
}

/// True for the object whose write commits a backup (a snapshot).
pub fn is_commit_point(key: &str) -> bool {
    Folder::of(key) == Folder::Snapshots
}

/// Checks what can be checked of an object without the repository key:
/// key files and deletion records are named by the BLAKE3 hash of their
/// bytes. Everything else passes (only the key can authenticate it).
pub fn verify_plain_named(key: &str, bytes: &[u8]) -> anyhow::Result<()> {
    if matches!(Folder::of(key), Folder::Keys | Folder::Deleted) {
        let named = key.rsplit('/').next().unwrap_or_default();
        if blake3::hash(bytes).to_hex().as_str() != named {
            anyhow::bail!("its content does not match its name");
        }
    }
    Ok(())
}

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

/// The id in the name of an object of `kind`, if it is one.
pub fn object_id_of(kind: ObjectKind, name: &str) -> Option<Id> {
    name.strip_prefix(prefix(kind))?.parse().ok()
}

/// The pack id in a pack's name, if it is one.
pub fn pack_id_of(name: &str) -> Option<Id> {
    name.strip_prefix(DATA)?.rsplit('/').next()?.parse().ok()
}
