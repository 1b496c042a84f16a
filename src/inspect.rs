//! Read-only views of snapshots: finding paths, listing, diffing, statistics.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::id::Id;
use crate::repo::Repository;
use crate::repo::index::Index;
use crate::repo::tree::{Node, NodeKind, Tree};

/// Finds the node at `path` (absolute inside the snapshot). The root itself
/// has no node; `Ok(None)` is returned for it.
pub fn find_node(repo: &Repository, index: &Index, root: &Id, path: &Path) -> Result<Option<Node>> {
    let mut tree_id = *root;
    let mut found: Option<Node> = None;
    let shown = path.display();
    for comp in path.components() {
        let name = match comp {
            Component::RootDir | Component::CurDir => continue,
            Component::Normal(n) => n,
            _ => bail!("path {shown} must not contain `..`"),
        };
        if let Some(n) = &found {
            tree_id = n
                .subtree
                .with_context(|| format!("{shown}: {} is not a directory", n.name.display()))?;
        }
        let tree = repo.load_tree(index, &tree_id)?;
        let node = tree
            .find(name.as_bytes())
            .with_context(|| format!("{shown}: no such file or directory in the snapshot"))?;
        found = Some(node.clone());
    }
    Ok(found)
}

/// The tree id for a directory path inside a snapshot.
pub fn tree_at(repo: &Repository, index: &Index, root: &Id, path: &Path) -> Result<(Id, PathBuf)> {
    match find_node(repo, index, root, path)? {
        None => Ok((*root, PathBuf::from("/"))),
        Some(n) if n.kind == NodeKind::Dir => Ok((
            n.subtree.context("directory without subtree")?,
            Path::new("/").join(path.strip_prefix("/").unwrap_or(path)),
        )),
        Some(_) => bail!("{} is not a directory", path.display()),
    }
}

/// Calls `f` for every node below `tree`, depth first, with its full path.
pub fn walk(
    repo: &Repository,
    index: &Index,
    tree: &Id,
    dir: &Path,
    f: &mut dyn FnMut(&Path, &Node),
) -> Result<()> {
    let t: std::sync::Arc<Tree> = repo.load_tree(index, tree)?;
    for node in &t.nodes {
        let path = dir.join(OsStr::from_bytes(&node.name.0));
        f(&path, node);
        if let Some(sub) = &node.subtree {
            walk(repo, index, sub, &path, f)?;
        }
    }
    Ok(())
}

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `+` added, `-` removed, `M` content changed, `U` metadata only, `T` type changed.
    pub kind: char,
    /// Path in the snapshots.
    pub path: String,
    /// The path's raw bytes (names need not be UTF-8).
    #[serde(skip)]
    pub raw: Vec<u8>,
}

/// Differences between two trees.
pub fn diff(repo: &Repository, index: &Index, a: &Id, b: &Id) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    diff_trees(repo, index, Some(*a), Some(*b), Path::new("/"), &mut out)?;
    Ok(out)
}

fn diff_trees(
    repo: &Repository,
    index: &Index,
    a: Option<Id>,
    b: Option<Id>,
    dir: &Path,
    out: &mut Vec<Change>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let empty = std::sync::Arc::new(Tree::default());
    let ta = match a {
        Some(id) => repo.load_tree(index, &id)?,
        None => empty.clone(),
    };
    let tb = match b {
        Some(id) => repo.load_tree(index, &id)?,
        None => empty,
    };
    let (mut i, mut j) = (0, 0);
    while i < ta.nodes.len() || j < tb.nodes.len() {
        let na = ta.nodes.get(i);
        let nb = tb.nodes.get(j);
        let order = match (na, nb) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let name = match order {
            std::cmp::Ordering::Greater => &nb.expect("b side").name,
            _ => &na.expect("a side").name,
        };
        let path = dir.join(OsStr::from_bytes(&name.0));
        let raw = path.as_os_str().as_bytes().to_vec();
        let shown = crate::repo::tree::escape_bytes(&raw);
        match order {
            std::cmp::Ordering::Less => {
                out.push(Change {
                    kind: '-',
                    path: shown,
                    raw,
                });
                let n = na.expect("a side");
                diff_trees(repo, index, n.subtree, None, &path, out)?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(Change {
                    kind: '+',
                    path: shown,
                    raw,
                });
                let n = nb.expect("b side");
                diff_trees(repo, index, None, n.subtree, &path, out)?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (na.expect("a side"), nb.expect("b side"));
                if x.kind != y.kind {
                    out.push(Change {
                        kind: 'T',
                        path: shown,
                        raw,
                    });
                } else if x.content != y.content || x.target != y.target || x.size != y.size {
                    out.push(Change {
                        kind: 'M',
                        path: shown,
                        raw,
                    });
                } else if x.kind != NodeKind::Dir
                    && (x.mode != y.mode
                        || x.uid != y.uid
                        || x.gid != y.gid
                        || x.mtime != y.mtime
                        || x.mtime_ns != y.mtime_ns
                        || x.xattrs != y.xattrs)
                {
                    out.push(Change {
                        kind: 'U',
                        path: shown,
                        raw,
                    });
                }
                let (sa, sb) = (
                    x.subtree.filter(|_| x.kind == NodeKind::Dir),
                    y.subtree.filter(|_| y.kind == NodeKind::Dir),
                );
                if sa.is_some() || sb.is_some() {
                    diff_trees(repo, index, sa, sb, &path, out)?;
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

/// Figures for `stats`.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    /// Snapshots counted.
    pub snapshots: u64,
    /// Files over all counted snapshots (as a restore would create them).
    pub total_files: u64,
    /// Bytes over all counted snapshots (restore size).
    pub total_size: u64,
    /// Distinct data blobs referenced.
    pub unique_blobs: u64,
    /// Plaintext bytes of those blobs (size after dedup).
    pub unique_size: u64,
    /// Stored bytes of those blobs (after compression and encryption).
    pub stored_size: u64,
    /// Bytes of all packs in the repository.
    pub repository_size: u64,
    /// unique_size / stored_size.
    pub compression_ratio: f64,
    /// total_size / stored_size.
    pub dedup_ratio: f64,
}

/// Statistics over the given snapshot roots.
pub fn stats(repo: &Repository, index: &Index, roots: &[Id]) -> Result<Stats> {
    let mut s = Stats {
        snapshots: roots.len() as u64,
        ..Stats::default()
    };
    let mut seen: HashSet<Id> = HashSet::new();
    for root in roots {
        walk(repo, index, root, Path::new("/"), &mut |_, node| {
            if node.kind == NodeKind::File {
                s.total_files += 1;
                s.total_size += node.size;
                for b in &node.content {
                    if seen.insert(*b)
                        && let Some((_, e)) = index.get(b)
                    {
                        s.unique_blobs += 1;
                        s.unique_size += e.raw_len as u64;
                        s.stored_size += e.stored_len as u64;
                    }
                }
            }
        })?;
    }
    s.repository_size = repo.list_packs()?.iter().map(|(_, size)| size).sum();
    if s.stored_size > 0 {
        s.compression_ratio = s.unique_size as f64 / s.stored_size as f64;
        s.dedup_ratio = s.total_size as f64 / s.stored_size as f64;
    }
    Ok(s)
}
