//! Browsing a snapshot's tree and downloading a file or a directory (as
//! tar) from it.

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{C, blocking, csrf_of, error_page, html, query, snapshot_and_path};
use crate::console::auth::Caller;
use crate::console::files;
use crate::console::html::{esc, page, q};
use crate::id::Id;
use crate::repo::tree::NodeKind;
use crate::report::bytes;

fn kind_name(k: NodeKind) -> &'static str {
    match k {
        NodeKind::Dir => "directory",
        NodeKind::File => "file",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::Socket => "socket",
        NodeKind::Blockdev => "block device",
        NodeKind::Chardev => "char device",
    }
}

fn mtime(n: &crate::repo::tree::Node) -> String {
    chrono::DateTime::from_timestamp(n.mtime, n.mtime_ns)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// `GET /snapshots/ID/browse?path=`.
pub async fn browse(
    State(c): C,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let qs = query(raw);
    let (id, path) = match snapshot_and_path(&id, &qs) {
        Ok(v) => v,
        Err(e) => return error_page(&c, &caller, StatusCode::BAD_REQUEST, &e),
    };
    let cc = c.clone();
    let p = path.clone();
    let found = blocking(move || {
        let repo = cc.source.repo()?;
        let (sid, snap) = repo.find_snapshot(&id)?;
        let index = repo.load_index()?;
        let node = crate::inspect::find_node(&repo, &index, &snap.tree, &p)?;
        let listing = match &node {
            None => Some(repo.load_tree(&index, &snap.tree)?),
            Some(n) if n.kind == NodeKind::Dir => match &n.subtree {
                Some(t) => Some(repo.load_tree(&index, t)?),
                None => None,
            },
            Some(_) => None,
        };
        Ok((sid, snap, node, listing))
    })
    .await;
    let (sid, snap, node, listing) = match found {
        Ok(v) => v,
        Err(e) => return error_page(&c, &caller, StatusCode::NOT_FOUND, &e),
    };
    let hex = sid.to_hex();
    let shown = crate::repo::tree::escape_bytes(path.as_os_str().as_bytes());
    let mut b = format!(
        "<p>Snapshot <strong>{}</strong> of {} taken {} — {}</p><nav aria-label=\"Breadcrumb\" class=\"crumbs\"><a href=\"/snapshots/{hex}/browse?path=%2F\">/</a>",
        sid.short(),
        esc(&snap.hostname),
        snap.time
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S"),
        esc(&snap.paths.join(" ")),
    );
    let mut acc = std::path::PathBuf::from("/");
    for comp in path.components().skip(1) {
        acc.push(comp);
        let _ = write!(
            b,
            " <a href=\"/snapshots/{hex}/browse?path={}\">{}</a> /",
            q(&acc.to_string_lossy()),
            esc(&crate::repo::tree::escape_bytes(
                comp.as_os_str().as_bytes()
            ))
        );
    }
    b.push_str("</nav>");
    let dl = format!(
        "/snapshots/{hex}/download?path={}",
        q(&path.to_string_lossy())
    );
    if let Some(n) = &node {
        let _ = write!(
            b,
            "<h2>{}</h2><dl class=\"meta\" id=\"meta\"><dt>Type</dt><dd>{}</dd><dt>Size</dt><dd>{} ({} bytes)</dd><dt>Mode</dt><dd>{:04o}</dd><dt>Owner</dt><dd>{}:{}</dd><dt>Modified</dt><dd>{}</dd>",
            esc(&shown),
            kind_name(n.kind),
            bytes(n.size),
            n.size,
            n.mode,
            n.uid,
            n.gid,
            mtime(n)
        );
        if let Some(t) = &n.target {
            let _ = write!(b, "<dt>Target</dt><dd>{}</dd>", esc(&t.display()));
        }
        if !n.xattrs.is_empty() {
            let names: Vec<String> = n.xattrs.iter().map(|x| x.name.display()).collect();
            let _ = write!(
                b,
                "<dt>Extended attributes</dt><dd>{}</dd>",
                esc(&names.join(", "))
            );
        }
        b.push_str("</dl>");
    }
    let is_dir = listing.is_some();
    match node.as_ref().map(|n| n.kind) {
        Some(NodeKind::File) => {
            let _ = write!(
                b,
                "<p><a class=\"button\" id=\"download\" href=\"{}\" download>Download file</a></p>",
                esc(&dl)
            );
        }
        _ if is_dir => {
            let _ = write!(
                b,
                "<p><a class=\"button\" id=\"download\" href=\"{}\" download>Download directory as tar</a></p>",
                esc(&dl)
            );
        }
        _ => {}
    }
    if !c.read_only() && (is_dir || node.as_ref().is_some_and(|n| n.kind != NodeKind::Dir)) {
        if c.restore_targets.is_empty() {
            b.push_str("<p class=\"muted\">Restores from the console are off: list directories in <code>[agent.console] restore_targets</code>.</p>");
        } else {
            let _ = write!(
                b,
                "<h2>Restore</h2><form class=\"stack\" method=\"get\" action=\"/snapshots/{hex}/restore\"><input type=\"hidden\" name=\"path\" value=\"{}\">\
<label for=\"target\">Restore {} into this directory on the agent's host (allowed: {})<input id=\"target\" name=\"target\" value=\"{}\" required></label>\
<button type=\"submit\" id=\"restore\">Restore…</button></form>",
                esc(&path.to_string_lossy()),
                esc(&shown),
                esc(&c
                    .restore_targets
                    .iter()
                    .map(|t| t.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")),
                esc(&c.restore_targets[0].to_string_lossy()),
            );
        }
    }
    if let Some(tree) = listing {
        b.push_str("<h2>Contents</h2><div class=\"table-wrap\"><table id=\"entries\"><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Type</th><th scope=\"col\" class=\"num\">Size</th><th scope=\"col\" class=\"hide-narrow\">Mode</th><th scope=\"col\" class=\"hide-narrow\">Owner</th><th scope=\"col\">Modified</th></tr></thead><tbody>");
        for n in &tree.nodes {
            let child = path.join(std::ffi::OsStr::from_bytes(&n.name.0));
            let _ = write!(
                b,
                "<tr><td><a href=\"/snapshots/{hex}/browse?path={}\">{}{}</a></td><td>{}</td><td class=\"num\">{}</td><td class=\"hide-narrow\">{:04o}</td><td class=\"hide-narrow\">{}:{}</td><td>{}</td></tr>",
                q(&child.to_string_lossy()),
                esc(&n.name.display()),
                if n.kind == NodeKind::Dir { "/" } else { "" },
                kind_name(n.kind),
                if n.kind == NodeKind::File {
                    bytes(n.size)
                } else {
                    "–".into()
                },
                n.mode,
                n.uid,
                n.gid,
                mtime(n)
            );
        }
        if tree.nodes.is_empty() {
            b.push_str("<tr><td colspan=\"6\" class=\"muted\">Empty directory.</td></tr>");
        }
        b.push_str("</tbody></table></div>");
    }
    html(page("Browse", csrf_of(&caller), c.access.protected(), &b))
}

/// `GET /snapshots/ID/download?path=`: a file, or a directory as tar.
pub async fn download(
    State(c): C,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let qs = query(raw);
    let (id, path) = match snapshot_and_path(&id, &qs) {
        Ok(v) => v,
        Err(e) => return error_page(&c, &caller, StatusCode::BAD_REQUEST, &e),
    };
    let cc = c.clone();
    let p = path.clone();
    let found = blocking(move || {
        let repo = cc.source.repo()?;
        let (_, snap) = repo.find_snapshot(&id)?;
        let index = Arc::new(repo.load_index()?);
        let node = crate::inspect::find_node(&repo, &index, &snap.tree, &p)?;
        Ok((repo, index, snap, node))
    })
    .await;
    let (repo, index, snap, node) = match found {
        Ok(v) => v,
        Err(e) => return error_page(&c, &caller, StatusCode::NOT_FOUND, &e),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "snapshot".into());
    match node {
        Some(n) if n.kind == NodeKind::File => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::CONTENT_LENGTH, n.size.to_string()),
                (header::CONTENT_DISPOSITION, files::disposition(&name)),
            ],
            files::file_body(repo, index, &n),
        )
            .into_response(),
        None => tar_response(repo, index, snap.tree, name),
        Some(n) if n.kind == NodeKind::Dir => match n.subtree {
            Some(t) => tar_response(repo, index, t, name),
            None => error_page(
                &c,
                &caller,
                StatusCode::NOT_FOUND,
                "directory without contents",
            ),
        },
        Some(_) => error_page(
            &c,
            &caller,
            StatusCode::BAD_REQUEST,
            "only files and directories can be downloaded",
        ),
    }
}

fn tar_response(
    repo: Arc<crate::repo::Repository>,
    index: Arc<crate::repo::index::Index>,
    tree: Id,
    name: String,
) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (
                header::CONTENT_DISPOSITION,
                files::disposition(&format!("{name}.tar")),
            ),
        ],
        files::tar_body(repo, index, tree, name),
    )
        .into_response()
}
