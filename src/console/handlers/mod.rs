//! The console's HTTP handlers, one module per area of the console, and
//! what they share. Repository work runs on blocking threads; every error is
//! one line on an error page.

pub mod access;
pub mod browse;
pub mod dashboard;
pub mod restore;
pub mod snapshots;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Console;
use super::auth::Caller;
use super::html::{esc, page};
use super::pages::{snapshot_path, valid_snapshot};

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
