//! Access: the login gate in front of every route, the login and logout
//! pages, and the static assets.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{C, error_page, html, params, see_other};
use crate::console::auth::{Caller, csrf_ok};
use crate::console::html::{esc, page};

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
    match crate::console::assets::get(&name) {
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
