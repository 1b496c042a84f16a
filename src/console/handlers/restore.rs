//! Restores from the console: the confirmation, the start, and the
//! progress page and fragment.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{C, blocking, csrf_of, error_page, html, params, query, see_other, snapshot_and_path};
use crate::console::Console;
use crate::console::auth::{Caller, csrf_ok};
use crate::console::html::{csrf_field, esc, page, q};
use crate::console::pages::restore_status;

/// Validates a restore request: (snapshot, path, target).
fn restore_request(
    c: &Console,
    id: &str,
    f: &HashMap<String, String>,
) -> Result<(String, std::path::PathBuf, std::path::PathBuf), (StatusCode, String)> {
    if c.read_only() {
        return Err((
            StatusCode::FORBIDDEN,
            "this console is read-only (strata ui): restore with `strata restore`".into(),
        ));
    }
    let (id, path) = snapshot_and_path(id, f).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    let target = crate::console::restores::allowed_target(
        f.get("target").map_or("", String::as_str),
        &c.restore_targets,
    )
    .map_err(|e| (StatusCode::FORBIDDEN, e))?;
    Ok((id, path, target))
}

/// `GET /snapshots/ID/restore?path=&target=`: the confirmation.
pub async fn restore_confirm(
    State(c): C,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let f = query(raw);
    let (id, path, target) = match restore_request(&c, &id, &f) {
        Ok(v) => v,
        Err((s, e)) => return error_page(&c, &caller, s, &e),
    };
    let shown = crate::repo::tree::escape_bytes(path.as_os_str().as_bytes());
    let b = format!(
        "<p>Restore <strong>{}</strong> of snapshot <strong>{}</strong> into <strong>{}</strong> on the agent's host? \
Files there that differ from the snapshot are replaced; nothing else is removed.</p>\
<form method=\"post\" action=\"/snapshots/{}/restore\">{}<input type=\"hidden\" name=\"path\" value=\"{}\"><input type=\"hidden\" name=\"target\" value=\"{}\">\
<button type=\"submit\" id=\"confirm\">Restore now</button> <a href=\"/snapshots/{}/browse?path={}\">Cancel</a></form>",
        esc(&shown),
        esc(&id[..id.len().min(8)]),
        esc(&target.to_string_lossy()),
        esc(&id),
        csrf_field(csrf_of(&caller)),
        esc(&path.to_string_lossy()),
        esc(&target.to_string_lossy()),
        esc(&id),
        q(&path.to_string_lossy()),
    );
    html(page(
        "Confirm restore",
        csrf_of(&caller),
        c.access.protected(),
        &b,
    ))
}

/// `POST /snapshots/ID/restore`: starts it, then shows its progress.
pub async fn restore_start(
    State(c): C,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = params(&body);
    if !csrf_ok(&caller, f.get("csrf").map(String::as_str)) {
        return error_page(
            &c,
            &caller,
            StatusCode::FORBIDDEN,
            "the form is stale or forged (CSRF token mismatch): reload the page and try again",
        );
    }
    let (id, path, target) = match restore_request(&c, &id, &f) {
        Ok(v) => v,
        Err((s, e)) => return error_page(&c, &caller, s, &e),
    };
    let cc = c.clone();
    let started = blocking(move || {
        let repo = cc.source.repo()?;
        let (sid, snap) = repo.find_snapshot(&id)?;
        let index = repo.load_index()?;
        // The path must exist in the snapshot (a restore of nothing would
        // look like success).
        crate::inspect::find_node(&repo, &index, &snap.tree, &path)?;
        tracing::info!(snapshot = %sid.short(), path = %path.display(), target = %target.display(), "console restore started");
        Ok(cc.restores.start(
            repo,
            snap,
            sid.short(),
            path.to_string_lossy().into_owned(),
            target,
            cc.history.clone(),
        )?)
    })
    .await;
    match started {
        Ok(t) => see_other(&format!("/restores/{}", t.id)),
        Err(e) => error_page(&c, &caller, StatusCode::BAD_REQUEST, &e),
    }
}

/// `GET /restores/N`.
pub async fn restore_page(
    State(c): C,
    Extension(caller): Extension<Caller>,
    Path(n): Path<u64>,
) -> Response {
    let Some(t) = c.restores.get(n) else {
        return error_page(&c, &caller, StatusCode::NOT_FOUND, "no such restore");
    };
    let (status, ended) = restore_status(&t);
    let poll = if ended {
        String::new()
    } else {
        format!(" data-poll=\"/fragments/restores/{n}\"")
    };
    let b = format!(
        "<p>{} of snapshot {} into {}</p><div id=\"restore-status\" aria-live=\"polite\"{poll}>{status}</div><p><a href=\"/\">Back to the dashboard</a></p>",
        esc(&t.path),
        esc(&t.snapshot),
        esc(&t.target.to_string_lossy()),
    );
    html(page(
        &format!("Restore {n}"),
        csrf_of(&caller),
        c.access.protected(),
        &b,
    ))
}

/// `GET /fragments/restores/N`.
pub async fn restore_fragment(State(c): C, Path(n): Path<u64>) -> Response {
    let Some(t) = c.restores.get(n) else {
        return (StatusCode::NOT_FOUND, "no such restore").into_response();
    };
    let (status, ended) = restore_status(&t);
    (
        [("X-Strata-Done", if ended { "1" } else { "0" })],
        html(status),
    )
        .into_response()
}
