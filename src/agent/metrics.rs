//! What the agent knows about its jobs and storage, rendered in the
//! Prometheus text exposition format (version 0.0.4) for `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Figures of one job.
#[derive(Debug, Clone, Default)]
pub struct JobMetrics {
    /// `backup`, `prune` or `check`.
    pub kind: &'static str,
    /// Unix time of the last successful run's end (0: never).
    pub last_success: f64,
    /// Unix time of the last run's end, successful or not (0: never).
    pub last_run: f64,
    /// Duration of the last run, in seconds.
    pub last_duration: f64,
    /// 1 while running.
    pub running: bool,
    /// Runs started.
    pub runs: u64,
    /// Runs that failed.
    pub errors: u64,
    /// Runs not started because the previous one still ran.
    pub skipped: u64,
    /// Source bytes read by the last successful backup.
    pub last_bytes_read: u64,
    /// Bytes the last successful backup added to the repository.
    pub last_bytes_added: u64,
    /// Files in the last successful backup (new, changed and unmodified).
    pub last_files: u64,
    /// Bytes per second of the last successful backup (total size / duration).
    pub last_rate: f64,
    /// Source files the last backup could not read.
    pub last_warnings: u64,
    /// Source bytes read, all runs.
    pub bytes_read_total: u64,
    /// Bytes added to the repository, all runs.
    pub bytes_added_total: u64,
    /// For the console: unix time of the next scheduled run (0: none).
    pub next_run: f64,
    /// For the console: the paths a backup job records.
    pub paths: Vec<String>,
    /// For the console: the snapshot the last successful backup made.
    pub last_snapshot: Option<String>,
    /// For the console: the running backup's progress.
    pub progress: Option<std::sync::Arc<crate::progress::Counters>>,
    /// For the console: when the running job started.
    pub started: Option<std::time::Instant>,
}

/// Health and traffic of one store (a pool member, or `repository`).
#[derive(Debug, Clone, Default)]
pub struct MemberMetrics {
    /// Last probe: reachable and holding the repository config.
    pub up: Option<bool>,
    /// Requests sent, all jobs and probes.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
}

/// Everything `/metrics` shows.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Unix time the agent started.
    pub started: f64,
    /// The repository was reachable and opened with the password at the last probe.
    pub ready: bool,
    /// Jobs by name.
    pub jobs: BTreeMap<String, JobMetrics>,
    /// Stores by member name.
    pub members: BTreeMap<String, MemberMetrics>,
    /// Config reloads that failed.
    pub reload_errors: u64,
}

/// Escapes a label value.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A float as Prometheus writes it.
fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", num(value));
    }
}

impl Metrics {
    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut f = Family { out: &mut out };
        f.head("strata_build_info", "gauge", "Build of the running agent.");
        f.sample(
            "strata_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        f.head(
            "strata_agent_start_time_seconds",
            "gauge",
            "Unix time the agent started.",
        );
        f.sample("strata_agent_start_time_seconds", &[], self.started);
        f.head(
            "strata_repository_ready",
            "gauge",
            "1 when the repository was reachable and unlocked at the last probe.",
        );
        f.sample(
            "strata_repository_ready",
            &[],
            f64::from(u8::from(self.ready)),
        );
        f.head(
            "strata_agent_reload_errors_total",
            "counter",
            "Config reloads (SIGHUP) that were refused.",
        );
        f.sample(
            "strata_agent_reload_errors_total",
            &[],
            self.reload_errors as f64,
        );

        type Get = fn(&JobMetrics) -> f64;
        let job_families: [(&str, &str, &str, Get); 7] = [
            (
                "strata_job_last_success_timestamp_seconds",
                "gauge",
                "Unix time the job last finished successfully (0: never).",
                |j| j.last_success,
            ),
            (
                "strata_job_last_run_timestamp_seconds",
                "gauge",
                "Unix time the job last finished, successfully or not (0: never).",
                |j| j.last_run,
            ),
            (
                "strata_job_last_duration_seconds",
                "gauge",
                "Duration of the job's last run.",
                |j| j.last_duration,
            ),
            (
                "strata_job_running",
                "gauge",
                "1 while the job runs.",
                |j| f64::from(u8::from(j.running)),
            ),
            ("strata_job_runs_total", "counter", "Runs started.", |j| {
                j.runs as f64
            }),
            (
                "strata_job_errors_total",
                "counter",
                "Runs that failed.",
                |j| j.errors as f64,
            ),
            (
                "strata_job_skipped_total",
                "counter",
                "Runs not started because the previous run was still going.",
                |j| j.skipped as f64,
            ),
        ];
        for (name, kind, help, get) in job_families {
            f.head(name, kind, help);
            for (job, m) in &self.jobs {
                f.sample(name, &[("job", job), ("kind", m.kind)], get(m));
            }
        }
        let backup_families: [(&str, &str, &str, Get); 7] = [
            (
                "strata_backup_bytes_read_total",
                "counter",
                "Source bytes read by the job's backups.",
                |j| j.bytes_read_total as f64,
            ),
            (
                "strata_backup_bytes_added_total",
                "counter",
                "Bytes the job's backups added to the repository.",
                |j| j.bytes_added_total as f64,
            ),
            (
                "strata_backup_last_bytes_read",
                "gauge",
                "Source bytes read by the last successful backup.",
                |j| j.last_bytes_read as f64,
            ),
            (
                "strata_backup_last_bytes_added",
                "gauge",
                "Bytes the last successful backup added to the repository.",
                |j| j.last_bytes_added as f64,
            ),
            (
                "strata_backup_last_files",
                "gauge",
                "Files in the last successful backup.",
                |j| j.last_files as f64,
            ),
            (
                "strata_backup_last_rate_bytes_per_second",
                "gauge",
                "Backup rate of the last successful backup (total size over duration).",
                |j| j.last_rate,
            ),
            (
                "strata_backup_last_warnings",
                "gauge",
                "Source files the last backup could not read completely.",
                |j| j.last_warnings as f64,
            ),
        ];
        for (name, kind, help, get) in backup_families {
            f.head(name, kind, help);
            for (job, m) in self.jobs.iter().filter(|(_, m)| m.kind == "backup") {
                f.sample(name, &[("job", job)], get(m));
            }
        }

        f.head(
            "strata_pool_member_up",
            "gauge",
            "1 when the store answered the last probe and holds the repository.",
        );
        for (member, m) in &self.members {
            if let Some(up) = m.up {
                f.sample(
                    "strata_pool_member_up",
                    &[("member", member)],
                    f64::from(u8::from(up)),
                );
            }
        }
        f.head(
            "strata_pool_member_requests_total",
            "counter",
            "Requests sent to the store.",
        );
        for (member, m) in &self.members {
            f.sample(
                "strata_pool_member_requests_total",
                &[("member", member)],
                m.requests as f64,
            );
        }
        f.head(
            "strata_pool_member_request_errors_total",
            "counter",
            "Requests to the store that failed.",
        );
        for (member, m) in &self.members {
            f.sample(
                "strata_pool_member_request_errors_total",
                &[("member", member)],
                m.errors as f64,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_format() {
        let mut m = Metrics {
            started: 1.5,
            ready: true,
            ..Default::default()
        };
        m.jobs.insert(
            "vol".into(),
            JobMetrics {
                kind: "backup",
                last_success: 1700000000.0,
                bytes_read_total: 42,
                ..Default::default()
            },
        );
        m.jobs.insert(
            "prune".into(),
            JobMetrics {
                kind: "prune",
                ..Default::default()
            },
        );
        m.members.insert(
            "a\"b".into(),
            MemberMetrics {
                up: Some(true),
                requests: 7,
                errors: 1,
            },
        );
        let text = m.render();
        assert!(text.contains(
            "strata_job_last_success_timestamp_seconds{job=\"vol\",kind=\"backup\"} 1700000000\n"
        ));
        assert!(text.contains("strata_backup_bytes_read_total{job=\"vol\"} 42\n"));
        assert!(text.contains("strata_pool_member_requests_total{member=\"a\\\"b\"} 7\n"));
        assert!(text.contains("strata_repository_ready 1\n"));
        assert!(!text.contains("strata_backup_last_files{job=\"prune\""));
        // Every sample line follows a TYPE line of its family.
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(typed.contains(name), "{line}");
            }
        }
    }
}
