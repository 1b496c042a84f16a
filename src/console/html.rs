//! HTML text building: escaping, the page frame, and small formatting
//! helpers shared by the pages.

use std::fmt::Write as _;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query-string value (everything but unreserved bytes).
pub fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A Unix time (seconds) as local `YYYY-MM-DD HH:MM:SS`, or `never`.
pub fn when(unix: f64) -> String {
    if unix <= 0.0 {
        return "never".into();
    }
    chrono::DateTime::from_timestamp_millis((unix * 1000.0) as i64)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "never".into())
}

/// Seconds as `1.2 s`, `3 min 4 s` or `2 h 5 min`.
pub fn secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{} min {} s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{} h {} min",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

/// Bytes per second, human-readable.
pub fn rate(bps: f64) -> String {
    format!("{}/s", crate::report::bytes(bps.max(0.0) as u64))
}

/// The whole page around `body`: head, navigation, main. `csrf` goes into
/// the logout form (empty: no logout button, the console has no token).
pub fn page(title: &str, csrf: &str, logout: bool, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{t} · strata</title><link rel=\"stylesheet\" href=\"/assets/style.css\">\
<script src=\"/assets/console.js\" defer></script></head><body>\
<a class=\"skip\" href=\"#main\">Skip to content</a>\
<header><nav aria-label=\"Main\"><a class=\"brand\" href=\"/\">strata</a>\
<a href=\"/\">Dashboard</a><a href=\"/snapshots\">Snapshots</a>",
        t = esc(title)
    );
    if logout {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/logout\" class=\"logout\">\
<input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<button type=\"submit\">Log out</button></form>",
            esc(csrf)
        );
    }
    let _ = write!(
        out,
        "</nav></header><main id=\"main\"><h1>{}</h1>{body}</main></body></html>",
        esc(title)
    );
    out
}

/// A hidden CSRF field for a form.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(esc("plain é"), "plain é");
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(q("/a b/&c=d"), "%2Fa+b%2F%26c%3Dd");
    }

    #[test]
    fn page_escapes_its_title() {
        let p = page("<x>", "tok\"en", true, "");
        assert!(p.contains("<h1>&lt;x&gt;</h1>"));
        assert!(p.contains("value=\"tok&quot;en\""));
        assert!(!p.contains("<x>"));
    }

    #[test]
    fn durations() {
        assert_eq!(secs(1.25), "1.2 s");
        assert_eq!(secs(125.0), "2 min 5 s");
        assert_eq!(secs(7500.0), "2 h 5 min");
        assert_eq!(when(0.0), "never");
    }
}
