//! Parts of pages that are rendered in more than one place (the live
//! fragments the script refreshes) and the snapshot helpers they share.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use super::JobView;
use super::html::{csrf_field, esc, q, rate, secs, when};
use super::restores::{State, Task};
use crate::report::bytes;

/// Checks a snapshot reference from a URL: `latest` or 1 to 64 hex digits.
pub fn valid_snapshot(s: &str) -> bool {
    s == "latest" || (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Checks a path inside a snapshot from a URL: absolute, no `.` or `..`,
/// no NUL, at most 4096 bytes.
pub fn snapshot_path(s: &str) -> Result<PathBuf, String> {
    let p = Path::new(s);
    if s.len() > 4096
        || s.contains('\0')
        || !p.is_absolute()
        || s.split('/').any(|seg| seg == "." || seg == "..")
        || p.components()
            .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        return Err(format!(
            "path {:?} must be absolute, without `.` or `..`",
            s.chars().take(200).collect::<String>()
        ));
    }
    Ok(p.to_path_buf())
}

/// The jobs table; the second value is true while a job runs.
pub fn jobs_table(jobs: &[JobView], csrf: &str, actions: bool) -> (String, bool) {
    let mut any_running = false;
    let mut out = String::from(
        "<div class=\"table-wrap\"><table><caption class=\"muted\">Last run of each job</caption><thead><tr>\
<th scope=\"col\">Job</th><th scope=\"col\">Status</th><th scope=\"col\">Last run</th>\
<th scope=\"col\" class=\"num\">Took</th><th scope=\"col\" class=\"num\">Read</th>\
<th scope=\"col\" class=\"num\">Added</th><th scope=\"col\" class=\"num\">Rate</th>\
<th scope=\"col\">Snapshot</th><th scope=\"col\" class=\"hide-narrow\">Next run</th>",
    );
    if actions {
        out.push_str("<th scope=\"col\">Action</th>");
    }
    out.push_str("</tr></thead><tbody>");
    if jobs.is_empty() {
        out.push_str("<tr><td colspan=\"10\" class=\"muted\">No jobs.</td></tr>");
    }
    for j in jobs {
        let status = match &j.running {
            Some(p) => {
                any_running = true;
                let bar = if p.total_bytes > 0 {
                    format!(
                        "<progress max=\"{}\" value=\"{}\" aria-label=\"progress of {}\"></progress> ",
                        p.total_bytes,
                        p.bytes.min(p.total_bytes),
                        esc(&j.name)
                    )
                } else {
                    String::new()
                };
                format!(
                    "<span class=\"running\">running</span><br>{bar}{} files, {} in {} ({})",
                    p.files,
                    bytes(p.bytes),
                    secs(p.elapsed_s),
                    rate(crate::report::rate(p.bytes, p.elapsed_s))
                )
            }
            None if j.last_run <= 0.0 => "<span class=\"muted\">never ran</span>".into(),
            None if j.last_ok => "<span class=\"ok\">ok</span>".into(),
            None => "<span class=\"failed\">failed</span>".into(),
        };
        let backup = j.kind == "backup" && j.last_run > 0.0;
        let num = |v: String| if backup { v } else { "–".into() };
        let snap = match &j.last_snapshot {
            Some(id) if valid_snapshot(id) => format!(
                "<a class=\"snapshot-link\" href=\"/snapshots/{id}/browse?path=%2F\">{}</a>",
                esc(&id[..id.len().min(8)])
            ),
            _ => "–".into(),
        };
        let _ = write!(
            out,
            "<tr data-job=\"{n}\"><th scope=\"row\">{n} <span class=\"muted\">{k}</span></th><td>{status}</td><td>{}</td>\
<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
<td>{snap}</td><td class=\"hide-narrow\">{}</td>",
            when(j.last_run),
            if j.last_run > 0.0 {
                secs(j.last_duration)
            } else {
                "–".into()
            },
            num(bytes(j.bytes_read)),
            num(bytes(j.bytes_added)),
            num(rate(j.rate)),
            if j.next_run > 0.0 {
                when(j.next_run)
            } else {
                "–".into()
            },
            n = esc(&j.name),
            k = esc(&j.kind),
        );
        if actions {
            let _ = write!(
                out,
                "<td><form class=\"inline\" method=\"post\" action=\"/actions/run/{}\">{}\
<button type=\"submit\" aria-label=\"Run job {n} now\">Run now</button></form></td>",
                q(&j.name),
                csrf_field(csrf),
                n = esc(&j.name)
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    (out, any_running)
}

/// The status of a console restore; true once it has ended.
pub fn restore_status(t: &Task) -> (String, bool) {
    let state = t.state.lock().expect("restore state").clone();
    let c = &t.counters;
    use std::sync::atomic::Ordering::Relaxed;
    let (done_bytes, total) = (c.bytes.load(Relaxed), c.total_bytes.load(Relaxed));
    let elapsed = t.started.elapsed().as_secs_f64();
    let mut out = String::new();
    let ended = match state {
        State::Running => {
            let bar = if total > 0 {
                format!(
                    "<progress max=\"{total}\" value=\"{}\" aria-label=\"restore progress\"></progress> ",
                    done_bytes.min(total)
                )
            } else {
                String::new()
            };
            let _ = write!(
                out,
                "<p><span class=\"running\" id=\"restore-state\">running</span> {bar}{} files, {} of {} in {}; {}</p>",
                c.files.load(Relaxed),
                bytes(done_bytes),
                bytes(total),
                secs(elapsed),
                rate(crate::report::rate(done_bytes, elapsed))
            );
            false
        }
        State::Done(files, b, took) => {
            let _ = write!(
                out,
                "<p><span class=\"ok\" id=\"restore-state\">done</span>: {files} files, {} in {}; recovery rate {}</p>",
                bytes(b),
                secs(took),
                rate(crate::report::rate(b, took))
            );
            true
        }
        State::Failed(why) => {
            let _ = write!(
                out,
                "<p><span class=\"failed\" id=\"restore-state\">failed</span>: {}</p>",
                esc(&why)
            );
            true
        }
    };
    (out, ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_references() {
        assert!(valid_snapshot("latest") && valid_snapshot("1cc72bda"));
        assert!(!valid_snapshot("") && !valid_snapshot("../x") && !valid_snapshot(&"a".repeat(65)));
    }

    #[test]
    fn paths_stay_inside_the_snapshot() {
        assert_eq!(snapshot_path("/a/b").unwrap(), PathBuf::from("/a/b"));
        for bad in ["a/b", "/a/../b", "/a/./b", "/a\0b", "../etc/passwd", ""] {
            assert!(snapshot_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn job_names_are_escaped() {
        let jobs = vec![JobView {
            name: "<script>".into(),
            kind: "backup".into(),
            last_run: 1.0,
            last_ok: true,
            last_snapshot: Some("0123456789abcdef".into()),
            ..Default::default()
        }];
        let (html, running) = jobs_table(&jobs, "tok", true);
        assert!(!running);
        assert!(!html.contains("<script>") && html.contains("&lt;script&gt;"));
        assert!(html.contains(">01234567</a>") && html.contains("class=\"ok\""));
        assert!(html.contains("/actions/run/%3Cscript%3E"));
    }
}
