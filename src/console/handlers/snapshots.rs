//! The snapshot list with its filters, and the diff of two snapshots.

use std::fmt::Write as _;

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{C, blocking, csrf_of, error_page, html, query};
use crate::console::auth::Caller;
use crate::console::html::{esc, page};
use crate::console::pages::valid_snapshot;
use crate::id::Id;
use crate::repo::snapshot::Snapshot;
use crate::report::bytes;

/// `GET /snapshots`: the list with filters, and the diff form.
pub async fn snapshots(
    State(c): C,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Response {
    let f = query(raw);
    let cc = c.clone();
    let listed = blocking(move || {
        let repo = cc.source.repo()?;
        let jobs = cc
            .scheduler
            .as_ref()
            .map(|s| (s.jobs(), s.host()))
            .unwrap_or_default();
        Ok((repo.snapshots(crate::repo::OnDamage::Skip)?.objects, jobs))
    })
    .await;
    let (mut snaps, (jobs, agent_host)) = match listed {
        Ok(v) => v,
        Err(e) => return error_page(&c, &caller, StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    snaps.sort_by_key(|(_, s)| std::cmp::Reverse(s.time));
    let get = |k: &str| f.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let day = |k: &str| get(k).and_then(|v| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok());
    let (from, to) = (day("from"), day("to"));
    let job = get("job").and_then(|n| jobs.iter().find(|j| j.name == n));
    let mut hosts: Vec<&str> = snaps.iter().map(|(_, s)| s.hostname.as_str()).collect();
    hosts.sort();
    hosts.dedup();
    let mut tags: Vec<&str> = snaps
        .iter()
        .flat_map(|(_, s)| s.tags.iter().map(String::as_str))
        .collect();
    tags.sort();
    tags.dedup();
    let shown: Vec<&(Id, Snapshot)> = snaps
        .iter()
        .filter(|(_, s)| get("host").is_none_or(|h| s.hostname == h))
        .filter(|(_, s)| get("tag").is_none_or(|t| s.tags.iter().any(|x| x == t)))
        .filter(|(_, s)| {
            job.is_none_or(|j| {
                let (mut a, mut b) = (s.paths.clone(), j.paths.clone());
                a.sort();
                b.sort();
                s.hostname == agent_host && a == b
            })
        })
        .filter(|(_, s)| {
            from.is_none_or(|d| s.time.with_timezone(&chrono::Local).date_naive() >= d)
        })
        .filter(|(_, s)| to.is_none_or(|d| s.time.with_timezone(&chrono::Local).date_naive() <= d))
        .collect();
    let select = |name: &str, label: &str, opts: &[&str]| {
        let cur = get(name).unwrap_or("");
        let mut s = format!(
            "<label for=\"f-{name}\">{label}<select id=\"f-{name}\" name=\"{name}\"><option value=\"\">any</option>"
        );
        for o in opts {
            let sel = if *o == cur { " selected" } else { "" };
            let _ = write!(s, "<option{sel}>{}</option>", esc(o));
        }
        s.push_str("</select></label>");
        s
    };
    let job_names: Vec<&str> = jobs
        .iter()
        .filter(|j| j.kind == "backup")
        .map(|j| j.name.as_str())
        .collect();
    let mut b = format!(
        "<form class=\"filters\" method=\"get\" action=\"/snapshots\">{}{}{}\
<label for=\"f-from\">From<input id=\"f-from\" type=\"date\" name=\"from\" value=\"{}\"></label>\
<label for=\"f-to\">To<input id=\"f-to\" type=\"date\" name=\"to\" value=\"{}\"></label>\
<button type=\"submit\">Filter</button></form>",
        select("host", "Host", &hosts),
        select("tag", "Tag", &tags),
        if job_names.is_empty() {
            String::new()
        } else {
            select("job", "Job", &job_names)
        },
        esc(get("from").unwrap_or("")),
        esc(get("to").unwrap_or("")),
    );
    let _ = write!(
        b,
        "<p>{} of {} snapshots</p><div class=\"table-wrap\"><table id=\"snapshots\"><thead><tr><th scope=\"col\">Id</th><th scope=\"col\">Time</th><th scope=\"col\">Host</th><th scope=\"col\" class=\"hide-narrow\">Tags</th><th scope=\"col\">Paths</th><th scope=\"col\" class=\"num\">Size</th><th scope=\"col\" class=\"num hide-narrow\">Added</th></tr></thead><tbody>",
        shown.len(),
        snaps.len()
    );
    for (id, s) in &shown {
        let _ = write!(
            b,
            "<tr><td><a href=\"/snapshots/{}/browse?path=%2F\">{}</a></td><td>{}</td><td>{}</td><td class=\"hide-narrow\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num hide-narrow\">{}</td></tr>",
            id.to_hex(),
            id.short(),
            s.time
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S"),
            esc(&s.hostname),
            esc(&s.tags.join(", ")),
            esc(&s.paths.join(" ")),
            bytes(s.summary.total_bytes),
            bytes(s.summary.data_added),
        );
    }
    b.push_str("</tbody></table></div><h2>Compare two snapshots</h2><form class=\"filters\" method=\"get\" action=\"/diff\">");
    for (name, label, pick) in [("a", "Older", 1usize), ("b", "Newer", 0)] {
        let _ = write!(
            b,
            "<label for=\"d-{name}\">{label}<select id=\"d-{name}\" name=\"{name}\">"
        );
        for (i, (id, s)) in shown.iter().enumerate() {
            let sel = if i == pick.min(shown.len().saturating_sub(1)) {
                " selected"
            } else {
                ""
            };
            let _ = write!(
                b,
                "<option value=\"{}\"{sel}>{} {}</option>",
                id.to_hex(),
                id.short(),
                s.time
                    .with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M")
            );
        }
        b.push_str("</select></label>");
    }
    b.push_str("<button type=\"submit\">Show changes</button></form>");
    html(page(
        "Snapshots",
        csrf_of(&caller),
        c.access.protected(),
        &b,
    ))
}

/// `GET /diff?a=&b=`.
pub async fn diff(
    State(c): C,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Response {
    let f = query(raw);
    let (a, b) = (
        f.get("a").cloned().unwrap_or_default(),
        f.get("b").cloned().unwrap_or_default(),
    );
    if !valid_snapshot(&a) || !valid_snapshot(&b) {
        return error_page(
            &c,
            &caller,
            StatusCode::BAD_REQUEST,
            "choose two snapshots (ids of hex digits, or latest)",
        );
    }
    let cc = c.clone();
    let changes = blocking(move || {
        let repo = cc.source.repo()?;
        let (ia, sa) = repo.find_snapshot(&a)?;
        let (ib, sb) = repo.find_snapshot(&b)?;
        let index = repo.load_index()?;
        Ok((
            ia,
            ib,
            crate::inspect::diff(&repo, &index, &sa.tree, &sb.tree)?,
        ))
    })
    .await;
    let (ia, ib, changes) = match changes {
        Ok(v) => v,
        Err(e) => return error_page(&c, &caller, StatusCode::NOT_FOUND, &e),
    };
    let mut body = format!(
        "<p>From <a href=\"/snapshots/{}/browse?path=%2F\">{}</a> to <a href=\"/snapshots/{}/browse?path=%2F\">{}</a>: {} changes. \
<span class=\"muted\">+ added, − removed, M content changed, U metadata only, T type changed</span></p>\
<div class=\"table-wrap\"><table id=\"changes\"><thead><tr><th scope=\"col\">Change</th><th scope=\"col\">Path</th></tr></thead><tbody>",
        ia.to_hex(),
        ia.short(),
        ib.to_hex(),
        ib.short(),
        changes.len()
    );
    for ch in &changes {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(&ch.kind.to_string()),
            esc(&ch.path)
        );
    }
    body.push_str("</tbody></table></div>");
    html(page(
        "Changes",
        csrf_of(&caller),
        c.access.protected(),
        &body,
    ))
}
