//! The dashboard (`/`): jobs, repository, storage and charts; the live
//! jobs fragment, and running a job.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{C, csrf_of, error_page, html, params, query, see_other};
use crate::console::auth::{Caller, csrf_ok};
use crate::console::html::{csrf_field, esc, page, q, rate, secs};
use crate::console::pages::jobs_table;
use crate::console::{JobView, charts};
use crate::id::Id;
use crate::repo::snapshot::Snapshot;
use crate::report::bytes;

/// A group of snapshots (same host and paths) as a job for `strata ui`.
fn group_label(s: &Snapshot) -> String {
    let mut p = s.paths.clone();
    p.sort();
    format!("{}:{}", s.hostname, p.join(","))
}

/// For `strata ui`: each group's snapshots as runs, and the groups as jobs.
fn jobs_from_snapshots(
    snaps: &[(Id, Snapshot)],
) -> (Vec<JobView>, Vec<crate::console::history::Run>) {
    let mut runs = Vec::new();
    let mut jobs: Vec<JobView> = Vec::new();
    let mut sorted: Vec<&(Id, Snapshot)> = snaps.iter().collect();
    sorted.sort_by_key(|(_, s)| s.time);
    for (id, s) in sorted {
        let label = group_label(s);
        let sum = &s.summary;
        let r = crate::report::rate(sum.total_bytes, sum.duration_s);
        let end = s.time.timestamp_millis() as f64 / 1000.0 + sum.duration_s;
        runs.push(crate::console::history::Run {
            job: label.clone(),
            kind: "backup".into(),
            end,
            duration_s: sum.duration_s,
            ok: true,
            bytes_read: sum.bytes_read,
            bytes_added: sum.data_added,
            rate: r,
            snapshot: Some(id.to_hex()),
        });
        let view = JobView {
            name: label.clone(),
            kind: "backup".into(),
            running: None,
            last_run: end,
            last_ok: true,
            last_duration: sum.duration_s,
            bytes_read: sum.bytes_read,
            bytes_added: sum.data_added,
            rate: r,
            last_snapshot: Some(id.to_hex()),
            next_run: 0.0,
            paths: s.paths.clone(),
        };
        match jobs.iter_mut().find(|j| j.name == label) {
            Some(j) => *j = view,
            None => jobs.push(view),
        }
    }
    (jobs, runs)
}

/// `GET /fragments/jobs`: the live jobs table.
pub async fn jobs_fragment(State(c): C, Extension(caller): Extension<Caller>) -> Response {
    let Some(s) = c.scheduler.clone() else {
        return ([("X-Strata-Done", "1")], html(String::new())).into_response();
    };
    let jobs = match tokio::task::spawn_blocking(move || s.jobs()).await {
        Ok(j) => j,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let (table, running) = jobs_table(&jobs, csrf_of(&caller), true);
    let done = if running { "0" } else { "1" };
    ([("X-Strata-Done", done)], html(table)).into_response()
}

/// `GET /`: jobs, repository, storage, charts.
pub async fn dashboard(
    State(c): C,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Response {
    let qs = query(raw);
    let cc = c.clone();
    struct Data {
        jobs: Vec<JobView>,
        figures: Result<crate::console::source::RepoFigures, String>,
        storage: Vec<crate::console::source::StoreRow>,
        members: Vec<crate::console::MemberView>,
        history: Arc<crate::console::history::History>,
    }
    let data = tokio::task::spawn_blocking(move || {
        let figures = cc.source.figures().map_err(|e| crate::error::one_line(&e));
        let storage = cc.source.storage();
        match &cc.scheduler {
            Some(s) => Data {
                jobs: s.jobs(),
                figures,
                storage,
                members: s.members(),
                history: cc.history.clone(),
            },
            None => {
                let snaps = cc
                    .source
                    .repo()
                    .and_then(|r| r.snapshots(crate::repo::OnDamage::Skip).map(|l| l.objects))
                    .unwrap_or_default();
                let (jobs, runs) = jobs_from_snapshots(&snaps);
                Data {
                    jobs,
                    figures,
                    storage,
                    members: Vec::new(),
                    history: Arc::new(crate::console::history::History::from_runs(runs)),
                }
            }
        }
    })
    .await;
    let d = match data {
        Ok(d) => d,
        Err(e) => {
            return error_page(
                &c,
                &caller,
                StatusCode::INTERNAL_SERVER_ERROR,
                &e.to_string(),
            );
        }
    };
    let csrf = csrf_of(&caller);
    let mut b = String::new();
    if let Some(name) = qs.get("started")
        && d.jobs.iter().any(|j| &j.name == name)
    {
        let _ = write!(
            b,
            "<p class=\"notice\" role=\"status\">Job {} started.</p>",
            esc(name)
        );
    }
    if c.read_only() {
        b.push_str("<p class=\"notice\">Read-only view of the repository (<code>strata ui</code>): one row per host and set of paths.</p>");
    }
    let (table, running) = jobs_table(&d.jobs, csrf, !c.read_only());
    let poll = if running {
        " data-poll=\"/fragments/jobs\""
    } else {
        ""
    };
    let _ = write!(
        b,
        "<h2>Jobs</h2><div id=\"jobs\" aria-live=\"polite\"{poll}>{table}</div>"
    );
    if let Some(check) = d.jobs.iter().find(|j| j.kind == "check") {
        let _ = write!(
            b,
            "<p><form class=\"inline\" method=\"post\" action=\"/actions/run/{}\">{}<button type=\"submit\" class=\"secondary\">Run a check now</button></form></p>",
            q(&check.name),
            csrf_field(csrf)
        );
    }
    b.push_str("<h2>Repository</h2>");
    match &d.figures {
        Ok(f) => {
            let _ = write!(
                b,
                "<div class=\"cards\"><div class=\"card\"><div>Snapshots</div><div class=\"v\" id=\"snapshot-count\">{}</div></div>\
<div class=\"card\"><div>Size</div><div class=\"v\">{}</div></div>\
<div class=\"card\"><div>Deduplication</div><div class=\"v\">{:.2}×</div></div>\
<div class=\"card\"><div>Compression</div><div class=\"v\">{:.2}×</div></div></div>",
                f.snapshots,
                bytes(f.size),
                f.dedup_ratio,
                f.compression_ratio
            );
        }
        Err(e) => {
            let _ = write!(b, "<p class=\"error\">{}</p>", esc(e));
        }
    }
    b.push_str("<h2>Storage</h2><div class=\"table-wrap\"><table><thead><tr><th scope=\"col\">Member</th><th scope=\"col\">Reachable</th><th scope=\"col\">Copy</th><th scope=\"col\" class=\"num\">Objects</th><th scope=\"col\" class=\"num\">Bytes</th><th scope=\"col\" class=\"num\">Requests</th><th scope=\"col\" class=\"num\">Errors</th></tr></thead><tbody>");
    for s in &d.storage {
        let m = d.members.iter().find(|m| m.name == s.name);
        let reach = if s.reachable {
            "<span class=\"ok\">yes</span>".to_string()
        } else {
            format!(
                "<span class=\"failed\">no</span> {}",
                esc(s.error.as_deref().unwrap_or(""))
            )
        };
        let whole = if !s.reachable {
            "–".to_string()
        } else if s.missing == 0 {
            "<span class=\"ok\">whole</span>".into()
        } else {
            format!(
                "<span class=\"running\">lagging</span>: lacks {} objects",
                s.missing
            )
        };
        let _ = write!(
            b,
            "<tr><th scope=\"row\">{}</th><td>{reach}</td><td>{whole}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&s.name),
            s.objects,
            bytes(s.bytes),
            m.map_or("–".into(), |m| m.requests.to_string()),
            m.map_or("–".into(), |m| m.errors.to_string()),
        );
    }
    b.push_str("</tbody></table></div><h2>Charts</h2>");
    let names: Vec<String> = if c.read_only() {
        d.history.jobs()
    } else {
        d.jobs
            .iter()
            .filter(|j| j.kind == "backup")
            .map(|j| j.name.clone())
            .collect()
    };
    for name in names {
        let runs: Vec<_> = d
            .history
            .runs_of(&name)
            .into_iter()
            .filter(|r| r.ok)
            .collect();
        let pts = |f: &dyn Fn(&crate::console::history::Run) -> f64| -> Vec<(f64, f64)> {
            runs.iter().map(|r| (r.end, f(r))).collect()
        };
        let _ = write!(
            b,
            "<h3>{}</h3><div class=\"charts\">{}{}{}</div>",
            esc(&name),
            charts::line(&format!("{name}: backup rate"), &pts(&|r| r.rate), &rate),
            charts::line(&format!("{name}: duration"), &pts(&|r| r.duration_s), &secs),
            charts::line(
                &format!("{name}: data added"),
                &pts(&|r| r.bytes_added as f64),
                &|v| bytes(v as u64)
            ),
        );
    }
    let restores: Vec<(f64, f64)> = d
        .history
        .restores()
        .iter()
        .map(|r| (r.end, r.rate))
        .collect();
    let _ = write!(
        b,
        "<h3>Restores</h3><div class=\"charts\">{}</div>",
        charts::line("restores: recovery rate", &restores, &rate)
    );
    html(page("Dashboard", csrf, c.access.protected(), &b))
}

/// `POST /actions/run/NAME`.
pub async fn run_job(
    State(c): C,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let form = params(&body);
    if !csrf_ok(&caller, form.get("csrf").map(String::as_str)) {
        return error_page(
            &c,
            &caller,
            StatusCode::FORBIDDEN,
            "the form is stale or forged (CSRF token mismatch): reload the page and try again",
        );
    }
    let Some(s) = c.scheduler.clone() else {
        return error_page(
            &c,
            &caller,
            StatusCode::FORBIDDEN,
            "this console is read-only (strata ui): jobs run in the agent",
        );
    };
    let n = name.clone();
    let answer = tokio::task::spawn_blocking(move || {
        if !s.jobs().iter().any(|j| j.name == n) {
            return Err(format!(
                "no job named {:?}",
                n.chars().take(64).collect::<String>()
            ));
        }
        s.trigger(&n)
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match answer {
        Ok(_) => see_other(&format!("/?started={}", q(&name))),
        Err(e) => error_page(&c, &caller, StatusCode::CONFLICT, &e),
    }
}
