//! The HTTP listener (`/healthz`, `/readyz`, `/metrics`, `POST
//! /jobs/NAME/run`) and the signal handlers, on a small runtime of their own.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::{AgentState, Event, TriggerReply};

/// Starts serving on `listener` (with the web console's routes when given)
/// and forwarding SIGTERM, SIGINT and SIGHUP to the scheduler. The handlers
/// are installed when this returns.
pub fn start(
    listener: TcpListener,
    shared: Arc<AgentState>,
    console: Option<axum::Router>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("strata-http")
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let (term, int, hup) = {
        let _guard = rt.enter();
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        )
    };
    listener
        .set_nonblocking(true)
        .context("configuring the listener")?;
    let listener = {
        let _guard = rt.enter();
        tokio::net::TcpListener::from_std(listener).context("configuring the listener")?
    };
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/jobs/{name}/run", post(trigger))
        .with_state(shared.clone());
    if let Some(console) = console {
        app = app.merge(console);
    }
    std::thread::Builder::new()
        .name("strata-http".into())
        .spawn(move || {
            rt.block_on(async move {
                tokio::spawn(forward_signals(term, int, hup, shared));
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!("HTTP listener stopped: {e}");
                }
            });
        })
        .context("starting the HTTP thread")?;
    Ok(())
}

async fn forward_signals(
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
    mut hup: tokio::signal::unix::Signal,
    shared: Arc<AgentState>,
) {
    loop {
        let event = tokio::select! {
            _ = term.recv() => Event::Shutdown("SIGTERM"),
            _ = int.recv() => Event::Shutdown("SIGINT"),
            _ = hup.recv() => Event::Reload,
        };
        if shared.events.send(event).is_err() {
            return;
        }
    }
}

/// Compares without an early exit, so timing tells nothing about the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `None` when the request may proceed, else the refusal.
fn refuse(headers: &HeaderMap, shared: &AgentState) -> Option<Response> {
    let token = shared.token.read().expect("token").clone();
    let token = token?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if same(g.as_bytes(), token.as_bytes()) => None,
        _ => Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required\n",
            )
                .into_response(),
        ),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Arc<AgentState>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&headers, &shared) {
        return r;
    }
    if shared.stopping() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let (ready, why) = shared.readiness.lock().expect("readiness").clone();
    if ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response()
    }
}

async fn metrics(State(shared): State<Arc<AgentState>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&headers, &shared) {
        return r;
    }
    let body = shared.metrics.lock().expect("metrics").render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn trigger(
    State(shared): State<Arc<AgentState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refuse(&headers, &shared) {
        return r;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    if shared
        .events
        .send(Event::Trigger {
            name: name.clone(),
            reply: tx,
        })
        .is_err()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let reply = tokio::time::timeout(Duration::from_secs(10), rx).await;
    let shown: String = name
        .chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .to_string();
    match reply {
        Ok(Ok(TriggerReply::Started)) => {
            (StatusCode::ACCEPTED, format!("job {shown} started\n")).into_response()
        }
        Ok(Ok(TriggerReply::Running)) => (
            StatusCode::CONFLICT,
            format!("job {shown} is already running\n"),
        )
            .into_response(),
        Ok(Ok(TriggerReply::Unknown)) => {
            (StatusCode::NOT_FOUND, format!("no job named {shown}\n")).into_response()
        }
        Ok(Ok(TriggerReply::Stopping)) | Ok(Err(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler did not answer\n",
        )
            .into_response(),
    }
}

/// GETs `url` (plain `http://HOST:PORT/PATH`) and returns the status code.
/// For `strata healthcheck`, in images without curl.
pub fn get_status(url: &str, timeout: Duration) -> Result<u16> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url:?}: only http:// URLs are supported"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = hostport
        .to_socket_addrs()
        .with_context(|| format!("{url:?}: bad host or port"))?
        .next()
        .with_context(|| format!("{url:?}: the host has no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {hostport}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nUser-Agent: strata-healthcheck\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let got = s.read(&mut head[n..])?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{url:?} answered something that is not HTTP"))
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn token_comparison() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(same(b"", b""));
    }
}
