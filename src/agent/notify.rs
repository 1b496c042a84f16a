//! Notifications (`[[agent.notify]]`): after each run, a webhook gets the
//! run's JSON summary, or a healthchecks-style monitor gets a ping.
//!
//! - `url = "https://..."`: `POST` of the summary (`Content-Type:
//!   application/json`): job, kind, status, host, snapshot id, start time,
//!   duration, figures, message and error.
//! - `ping_url = "https://hc-ping.com/UUID"`: `GET <ping_url>` on success,
//!   `GET <ping_url>/fail` on a failure or a missed run.
//! - `events` picks which of `success`, `failure` and `missed` are sent
//!   (default: all three); `jobs` limits an entry to some jobs (default:
//!   every job, `prune` and `check` included).
//! - A request that fails (no answer, or a status other than 2xx) is
//!   retried `retries` times (default 3) after 1, 2, 4, ... seconds (at most
//!   30). A notification that cannot be delivered is an error in the
//!   agent's log; it never changes the run's outcome.
//!
//! A run is `missed` when a scheduled run is skipped because the previous
//! one is still going, or when the agent finds at start-up that a backup
//! job's scheduled run was missed while it was not running (a job without
//! any snapshot yet excepted). Its summary has `status: "missed"` and says
//! why in `message`.

use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::schedule::ConfigDuration;

/// Which outcomes an entry is sent for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyEvent {
    /// The run succeeded.
    Success,
    /// The run failed.
    Failure,
    /// A scheduled run did not happen.
    Missed,
}

impl NotifyEvent {
    /// `success`, `failure` or `missed`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Success => "success",
            NotifyEvent::Failure => "failure",
            NotifyEvent::Missed => "missed",
        }
    }
}

fn all_events() -> Vec<NotifyEvent> {
    vec![
        NotifyEvent::Success,
        NotifyEvent::Failure,
        NotifyEvent::Missed,
    ]
}

/// One `[[agent.notify]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Webhook: the run's JSON summary is POSTed here.
    pub url: Option<String>,
    /// Healthchecks-style monitor: GET here on success, `<ping_url>/fail`
    /// on failure.
    pub ping_url: Option<String>,
    /// Outcomes to send (default: success, failure and missed).
    #[serde(default = "all_events")]
    pub events: Vec<NotifyEvent>,
    /// Only for these jobs (default: every job).
    #[serde(default)]
    pub jobs: Vec<String>,
    /// Retries after a failed request (default 3).
    pub retries: Option<u32>,
    /// Time limit of each request (default 10s).
    pub timeout: Option<ConfigDuration>,
}

impl NotifyConfig {
    /// Checks the entry; `jobs` are the names of the configured jobs.
    pub fn validate(&self, jobs: &[String]) -> std::result::Result<(), String> {
        let target = match (&self.url, &self.ping_url) {
            (Some(u), None) => ("url", u),
            (None, Some(u)) => ("ping_url", u),
            _ => return Err("give either `url` (a webhook) or `ping_url` (a monitor)".into()),
        };
        match url::Url::parse(target.1) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(format!(
                    "field `{}` must be an http:// or https:// URL, got {:?}",
                    target.0,
                    redact(target.1)
                ));
            }
        }
        if self.events.is_empty() {
            return Err(
                "field `events` is empty: list some of \"success\", \"failure\", \"missed\"".into(),
            );
        }
        if let Some(j) = self.jobs.iter().find(|j| !jobs.contains(j)) {
            return Err(format!("field `jobs` names {j:?}, which is not a job"));
        }
        if self.retries.is_some_and(|r| r > 10) {
            return Err("field `retries` must be at most 10".into());
        }
        Ok(())
    }

    /// True when this entry wants `event` of `job`.
    pub fn wants(&self, job: &str, event: NotifyEvent) -> bool {
        self.events.contains(&event) && (self.jobs.is_empty() || self.jobs.iter().any(|j| j == job))
    }
}

/// Scheme, host and port of a URL, for the log: paths and queries of
/// webhooks and ping URLs often hold secrets.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}/…",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "(not a URL)".into(),
    }
}

/// Sends `report` (a run's JSON summary, whose `status` is `event`) to every
/// entry that wants it, with retries; failures are logged. Blocks until done.
pub fn send(targets: &[NotifyConfig], job: &str, event: NotifyEvent, report: &serde_json::Value) {
    let wanted: Vec<&NotifyConfig> = targets.iter().filter(|t| t.wants(job, event)).collect();
    if wanted.is_empty() {
        return;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(job = %job, "cannot send notifications: {e}");
            return;
        }
    };
    let body = serde_json::to_vec(report).unwrap_or_default();
    rt.block_on(async {
        let sends = wanted.iter().map(|t| deliver(t, job, event, &body));
        futures::future::join_all(sends).await;
    });
}

/// [`send`] on a thread of its own (for the scheduler, which must not wait).
pub fn send_in_background(
    targets: Vec<NotifyConfig>,
    job: String,
    event: NotifyEvent,
    report: serde_json::Value,
) {
    if !targets.iter().any(|t| t.wants(&job, event)) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("strata-notify".into())
        .spawn(move || send(&targets, &job, event, &report));
    if let Err(e) = spawned {
        tracing::error!("cannot start a notification thread: {e}");
    }
}

async fn deliver(t: &NotifyConfig, job: &str, event: NotifyEvent, body: &[u8]) {
    let timeout = t.timeout.map_or(Duration::from_secs(10), |d| d.0);
    let retries = t.retries.unwrap_or(3);
    let client = match reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(job = %job, "cannot send notifications: {e}");
            return;
        }
    };
    let (shown, request) = match (&t.url, &t.ping_url) {
        (Some(url), _) => (
            redact(url),
            client
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_vec()),
        ),
        (None, Some(ping)) => {
            let url = match event {
                NotifyEvent::Success => ping.clone(),
                _ => format!("{}/fail", ping.trim_end_matches('/')),
            };
            (redact(ping), client.get(url))
        }
        (None, None) => return,
    };
    let mut delay = Duration::from_secs(1);
    for attempt in 0..=retries {
        let Some(req) = request.try_clone() else {
            return;
        };
        match attempt_once(req).await {
            Ok(()) => {
                tracing::debug!(job = %job, event = event.as_str(), "notified {shown}");
                return;
            }
            Err(e) if attempt < retries => {
                tracing::warn!(
                    job = %job,
                    "notification to {shown} failed ({e}); retrying in {}s",
                    delay.as_secs()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                tracing::error!(
                    job = %job,
                    "notification to {shown} failed {} time(s), giving up: {e}",
                    retries + 1
                );
            }
        }
    }
}

async fn attempt_once(req: reqwest::RequestBuilder) -> Result<()> {
    let resp = req.send().await.map_err(|e| {
        // reqwest's error names the URL; say what failed without it.
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else {
            "request failed"
        };
        anyhow::anyhow!("{what}")
    })?;
    let status = resp.status();
    if !status.is_success() {
        bail!("HTTP {}", status.as_u16());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> NotifyConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn validation_and_filters() {
        let jobs = vec!["vol".to_string(), "prune".to_string()];
        let e = entry("url = \"https://example.com/hook\"\n");
        assert!(e.validate(&jobs).is_ok());
        assert!(e.wants("vol", NotifyEvent::Missed));
        let e = entry(
            "ping_url = \"https://hc-ping.com/x\"\nevents = [\"failure\"]\njobs = [\"vol\"]\n",
        );
        assert!(e.validate(&jobs).is_ok());
        assert!(e.wants("vol", NotifyEvent::Failure));
        assert!(!e.wants("vol", NotifyEvent::Success));
        assert!(!e.wants("prune", NotifyEvent::Failure));
        let both = entry("url = \"http://a/\"\nping_url = \"http://b/\"\n");
        assert!(both.validate(&jobs).unwrap_err().contains("either"));
        let bad = entry("url = \"ftp://a/secret-token\"\n");
        let msg = bad.validate(&jobs).unwrap_err();
        assert!(
            msg.contains("http") && !msg.contains("secret-token"),
            "{msg}"
        );
        let unknown = entry("url = \"http://a/\"\njobs = [\"nope\"]\n");
        assert!(unknown.validate(&jobs).unwrap_err().contains("nope"));
        assert!(
            toml::from_str::<NotifyConfig>("url = \"http://a/\"\nevents = [\"done\"]\n").is_err()
        );
    }

    #[test]
    fn redacts_paths() {
        assert_eq!(
            redact("https://hc-ping.com/uuid-secret"),
            "https://hc-ping.com/…"
        );
        assert_eq!(
            redact("http://127.0.0.1:8080/x?t=1"),
            "http://127.0.0.1:8080/…"
        );
    }
}
