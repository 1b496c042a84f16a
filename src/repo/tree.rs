//! Tree blobs: one directory listing each, as JSON, nodes sorted by name bytes.

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::Id;

/// A file name or link target as raw bytes (Linux names need not be UTF-8).
///
/// Serialized as a JSON string when it is valid UTF-8, else as
/// `{"b64": "<base64 of the bytes>"}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RawName(pub Vec<u8>);

impl RawName {
    /// Text for display (see [`escape_bytes`]: unambiguous, no control
    /// characters).
    pub fn display(&self) -> String {
        escape_bytes(&self.0)
    }
}

/// Text for bytes that may not be UTF-8, never ambiguous and never holding
/// a control character: valid UTF-8 as it is, except that a backslash is
/// `\\`, newline, tab and carriage return are `\n`, `\t`, `\r`, any other
/// control character is `\xNN` (C0 and DEL) or `\u{NN}` (C1), and each byte
/// that is not UTF-8 is `\xNN`. Since a real backslash is doubled, every
/// escape reads back to exactly one byte sequence.
pub fn escape_bytes(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawNameRepr {
    Text(String),
    Bytes { b64: String },
}

impl Serialize for RawName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => RawNameRepr::Text(t.to_string()).serialize(s),
            Err(_) => RawNameRepr::Bytes {
                b64: B64.encode(&self.0),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for RawName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match RawNameRepr::deserialize(d)? {
            RawNameRepr::Text(t) => Ok(RawName(t.into_bytes())),
            RawNameRepr::Bytes { b64 } => B64
                .decode(b64)
                .map(RawName)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// One extended attribute: its name (`user.comment`, `security.capability`,
/// `system.posix_acl_access`, ...) and its raw value.
///
/// Serialized as `{"name": <name>, "value": "<standard base64>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Xattr {
    /// Attribute name, namespace included.
    pub name: RawName,
    /// Raw value.
    #[serde(with = "b64_bytes")]
    pub value: Vec<u8>,
}

mod b64_bytes {
    use super::B64;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        B64.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Kind of file system entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Block device.
    Blockdev,
    /// Character device.
    Chardev,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Name within the directory.
    pub name: RawName,
    /// Kind of entry.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits including setuid/setgid/sticky (st_mode & 0o7777).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time.
    pub mtime_ns: u32,
    /// Status change time, seconds (for change detection; not restored).
    #[serde(default)]
    pub ctime: i64,
    /// Nanoseconds of the status change time.
    #[serde(default)]
    pub ctime_ns: u32,
    /// Inode number (for hardlinks and change detection).
    #[serde(default)]
    pub inode: u64,
    /// Device id of the file system holding the entry.
    #[serde(default)]
    pub device: u64,
    /// Hard link count at backup time.
    #[serde(default)]
    pub links: u64,
    /// Size in bytes (files).
    #[serde(default)]
    pub size: u64,
    /// Data blob ids in order (files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Id>,
    /// Tree blob id (directories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    /// Link target (symlinks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RawName>,
    /// Device number (block and character devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    /// Extended attributes, POSIX ACLs (`system.posix_acl_*`) and file
    /// capabilities (`security.capability`) included, sorted by name
    /// (tree revision 2; absent in older trees).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
}

/// A directory listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// Entries sorted by name bytes.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Serializes the tree (nodes must already be sorted).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("tree serializes")
    }

    /// Parses a tree and checks its names are valid and sorted.
    pub fn decode(bytes: &[u8]) -> Result<Tree> {
        let tree: Tree = serde_json::from_slice(bytes).context("tree blob is not valid")?;
        for pair in tree.nodes.windows(2) {
            if pair[0].name >= pair[1].name {
                bail!("tree blob has unsorted or duplicate names");
            }
        }
        for n in &tree.nodes {
            if n.name.0.is_empty()
                || n.name.0 == b"."
                || n.name.0 == b".."
                || n.name.0.contains(&b'/')
                || n.name.0.contains(&0)
            {
                bail!("tree blob has an unsafe name {:?}", n.name.display());
            }
            if n.xattrs
                .iter()
                .any(|x| x.name.0.is_empty() || x.name.0.contains(&0))
            {
                bail!("tree blob has an unsafe attribute name");
            }
            match n.kind {
                NodeKind::Dir if n.subtree.is_none() => bail!("directory node without subtree"),
                NodeKind::Symlink if n.target.is_none() => bail!("symlink node without target"),
                _ => {}
            }
        }
        Ok(tree)
    }

    /// Finds a node by name.
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.0.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &[u8]) -> Node {
        Node {
            name: RawName(name.to_vec()),
            kind: NodeKind::File,
            mode: 0o644,
            uid: 1,
            gid: 2,
            mtime: 3,
            mtime_ns: 4,
            ctime: 5,
            ctime_ns: 6,
            inode: 7,
            device: 8,
            links: 1,
            size: 9,
            content: vec![Id([1; 32])],
            subtree: None,
            target: None,
            rdev: None,
            xattrs: Vec::new(),
        }
    }

    #[test]
    fn non_utf8_names_round_trip() {
        let t = Tree {
            nodes: vec![node(b"a"), node(b"b\xff\xfe")],
        };
        let back = Tree::decode(&t.encode()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn xattrs_round_trip_and_old_trees_still_read() {
        let mut n = node(b"cap");
        n.xattrs = vec![
            Xattr {
                name: RawName(b"security.capability".to_vec()),
                value: vec![1, 0, 0, 2, 0xff],
            },
            Xattr {
                name: RawName(b"user.note".to_vec()),
                value: b"hi".to_vec(),
            },
        ];
        let t = Tree { nodes: vec![n] };
        let bytes = t.encode();
        assert!(
            String::from_utf8_lossy(&bytes)
                .contains(r#""xattrs":[{"name":"security.capability","value":"AQAAAv8="}"#)
        );
        assert_eq!(Tree::decode(&bytes).unwrap(), t);
        // A revision 1 node (no xattrs field) reads, and writes back the same.
        let old = Tree {
            nodes: vec![node(b"plain")],
        };
        let old_bytes = old.encode();
        assert!(!String::from_utf8_lossy(&old_bytes).contains("xattrs"));
        assert_eq!(Tree::decode(&old_bytes).unwrap(), old);
    }

    #[test]
    fn escapes_are_unambiguous() {
        assert_eq!(escape_bytes(b"plain \xc3\xa9"), "plain \u{e9}");
        assert_eq!(escape_bytes(b"a\\xff"), "a\\\\xff");
        assert_eq!(escape_bytes(b"a\xff"), "a\\xff");
        assert_eq!(
            escape_bytes(b"l1\nl2\t\r\x1b\x7f"),
            "l1\\nl2\\t\\r\\x1b\\x7f"
        );
        assert_eq!(escape_bytes("\u{85}".as_bytes()), "\\u{85}");
    }

    #[test]
    fn unsafe_names_are_refused() {
        for bad in [&b".."[..], b"a/b", b""] {
            let t = Tree {
                nodes: vec![node(bad)],
            };
            assert!(Tree::decode(&t.encode()).is_err(), "{bad:?}");
        }
    }
}
