//! The stylesheet and script, compiled into the binary (no CDN, no build
//! step, works offline).

/// `(content type, body)` of asset `name`, if there is one.
pub fn get(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "style.css" => Some(("text/css; charset=utf-8", include_str!("assets/style.css"))),
        "console.js" => Some((
            "text/javascript; charset=utf-8",
            include_str!("assets/console.js"),
        )),
        _ => None,
    }
}
