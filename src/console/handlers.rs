//! The console's HTTP handlers. Repository work runs on blocking threads;
//! every error is one line on an error page.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::{Caller, csrf_ok};
use super::html::{csrf_field, esc, page, q, rate, secs};
use super::pages::{jobs_table, restore_status, snapshot_path, valid_snapshot};
use super::{Console, JobView, charts, files};
use crate::id::Id;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::NodeKind;
use crate::report::bytes;

type C = State<Arc<Console>>;

fn params(raw: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

fn query(raw: Option<String>) -> HashMap<String, String> {
    params(raw.unwrap_or_default().as_bytes())
}

fn csrf_of(caller: &Caller) -> &str {
    match caller {
        Caller::Browser(c) => c,
        Caller::Bearer => "",
    }
}

/// A page saying what went wrong, with `status`.
fn error_page(c: &Console, caller: &Caller, status: StatusCode, msg: &str) -> Response {
    let body = format!("<p class=\"error\" role=\"alert\">{}</p>", esc(msg));
    (
        status,
        html(page("Error", csrf_of(caller), c.access.protected(), &body)),
    )
        .into_response()
}

fn html(s: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], s).into_response()
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// Runs `f` on a blocking thread; an error becomes a one-line message.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(crate::error::one_line(&e)),
        Err(e) => Err(format!("internal error: {e}")),
    }
}

/// Lets in the logged-in (and the login page and assets), sets security
/// headers on every answer.
pub async fn gate(State(c): C, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let public = path == "/login" || path.starts_with("/assets/");
    let mut resp = if public {
        next.run(req).await
    } else {
        match c.access.caller(req.headers()) {
            Some(caller) => {
                req.extensions_mut().insert(caller);
                next.run(req).await
            }
            None if req.method() == Method::GET && !path.starts_with("/fragments/") => {
                see_other("/login")
            }
            None => (StatusCode::UNAUTHORIZED, "log in first\n").into_response(),
        }
    };
    let h = resp.headers_mut();
    for (k, v) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    if !path.starts_with("/assets/") {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// `GET /assets/NAME`.
pub async fn asset(Path(name): Path<String>) -> Response {
    match super::assets::get(&name) {
        Some((ct, body)) => ([(header::CONTENT_TYPE, ct)], body).into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

/// `GET /login`.
pub async fn login_form(State(c): C) -> Response {
    if !c.access.protected() {
        return see_other("/");
    }
    html(login_page(""))
}

fn login_page(msg: &str) -> String {
    let alert = if msg.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\" role=\"alert\">{}</p>", esc(msg))
    };
    page(
        "Log in",
        "",
        false,
        &format!(
            "{alert}<form class=\"stack\" method=\"post\" action=\"/login\">\
<label for=\"token\">Access token<input id=\"token\" name=\"token\" type=\"password\" \
autocomplete=\"current-password\" required autofocus></label>\
<button type=\"submit\">Log in</button></form>"
        ),
    )
}

/// `POST /login`.
pub async fn login(State(c): C, body: Bytes) -> Response {
    let form = params(&body);
    match c.access.login(form.get("token").map_or("", String::as_str)) {
        Some(cookie) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/".to_string()),
                (header::SET_COOKIE, cookie),
            ],
        )
            .into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            html(login_page(
                "Wrong token: give the token the console was started with.",
            )),
        )
            .into_response(),
    }
}

/// `POST /logout`.
pub async fn logout(
    State(c): C,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
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
    let cookie = c.access.logout(&headers);
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/login".to_string()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

/// A group of snapshots (same host and paths) as a job for `strata ui`.
fn group_label(s: &Snapshot) -> String {
    let mut p = s.paths.clone();
    p.sort();
    format!("{}:{}", s.hostname, p.join(","))
}

/// For `strata ui`: each group's snapshots as runs, and the groups as jobs.
fn jobs_from_snapshots(snaps: &[(Id, Snapshot)]) -> (Vec<JobView>, Vec<super::history::Run>) {
    let mut runs = Vec::new();
    let mut jobs: Vec<JobView> = Vec::new();
    let mut sorted: Vec<&(Id, Snapshot)> = snaps.iter().collect();
    sorted.sort_by_key(|(_, s)| s.time);
    for (id, s) in sorted {
        let label = group_label(s);
        let sum = &s.summary;
        let r = crate::report::rate(sum.total_bytes, sum.duration_s);
        let end = s.time.timestamp_millis() as f64 / 1000.0 + sum.duration_s;
        runs.push(super::history::Run {
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
        figures: Result<super::source::RepoFigures, String>,
        storage: Vec<super::source::StoreRow>,
        members: Vec<super::MemberView>,
        history: Arc<super::history::History>,
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
                    history: Arc::new(super::history::History::from_runs(runs)),
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
        let pts = |f: &dyn Fn(&super::history::Run) -> f64| -> Vec<(f64, f64)> {
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

/// Reads `id` and `path` from a request; `Err` is the refusal.
fn snapshot_and_path(
    id: &str,
    qs: &HashMap<String, String>,
) -> Result<(String, std::path::PathBuf), String> {
    if !valid_snapshot(id) {
        return Err("a snapshot is named by hex digits or latest".into());
    }
    Ok((
        id.to_string(),
        snapshot_path(qs.get("path").map_or("/", String::as_str))?,
    ))
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
    let target = super::restores::allowed_target(
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
