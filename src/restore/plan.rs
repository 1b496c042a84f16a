//! Flattens a snapshot's trees into a list of entries in walk order.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::id::Id;
use crate::repo::Repository;
use crate::repo::index::Index;
use crate::repo::tree::{Node, NodeKind};

/// One entry of a snapshot, with its path relative to the snapshot root.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the root (no leading `/`).
    pub path: PathBuf,
    /// The node.
    pub node: Node,
    /// Position of the parent directory's entry, or `usize::MAX` for the root.
    pub parent: usize,
    /// Everything below this entry is restored (no `--include`, or it matched).
    pub whole: bool,
}

/// Every entry below `root` in depth-first order (a directory before its
/// contents). With `includes`, only entries matching a glob, what lies below
/// them, and the directories above them.
pub fn walk_snapshot(
    repo: &Repository,
    index: &Index,
    root: &Id,
    includes: &[String],
) -> Result<Vec<Entry>> {
    let set = build_globs(includes)?;
    let mut out = Vec::new();
    walk(
        repo,
        index,
        root,
        Path::new(""),
        usize::MAX,
        set.as_ref(),
        false,
        &mut out,
    )?;
    out.shrink_to_fit();
    Ok(out)
}

fn build_globs(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).with_context(|| format!("bad --include pattern {p:?}"))?);
    }
    Ok(Some(b.build()?))
}

/// Matches an absolute snapshot path, or its base name for patterns without `/`.
pub fn glob_matches(set: &GlobSet, rel: &Path) -> bool {
    let abs = Path::new("/").join(rel);
    set.is_match(&abs) || rel.file_name().is_some_and(|n| set.is_match(n))
}

#[allow(clippy::too_many_arguments)]
fn walk(
    repo: &Repository,
    index: &Index,
    tree_id: &Id,
    dir: &Path,
    parent: usize,
    set: Option<&GlobSet>,
    inside_match: bool,
    out: &mut Vec<Entry>,
) -> Result<bool> {
    let tree = repo
        .read_tree(index, tree_id)
        .with_context(|| format!("loading directory /{}", dir.display()))?;
    let mut any = false;
    for node in tree.nodes {
        let path = dir.join(OsStr::from_bytes(&node.name.0));
        let matched = inside_match || set.is_none_or(|s| glob_matches(s, &path));
        let pos = out.len();
        let (kind, subtree) = (node.kind, node.subtree);
        out.push(Entry {
            path: path.clone(),
            node,
            parent,
            whole: matched,
        });
        let mut keep = matched;
        if kind == NodeKind::Dir {
            let sub = subtree.context("directory without subtree")?;
            keep |= walk(repo, index, &sub, &path, pos, set, matched, out)?;
        }
        if !keep {
            out.truncate(pos);
        }
        any |= keep;
    }
    Ok(any)
}
