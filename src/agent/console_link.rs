//! The agent as the web console sees it: job state from the metrics, job
//! triggers through the scheduler.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{AgentState, Event, Settings, TriggerReply};
use crate::console::{self, JobView, MemberView, Progress};

struct Link {
    shared: Arc<AgentState>,
}

impl console::Scheduler for Link {
    fn jobs(&self) -> Vec<JobView> {
        let m = self.shared.metrics.lock().expect("metrics");
        m.jobs
            .iter()
            .map(|(name, j)| JobView {
                name: name.clone(),
                kind: j.kind.into(),
                running: j.running.then(|| {
                    let p = j.progress.as_ref();
                    let get = |f: fn(&crate::progress::Counters) -> u64| p.map_or(0, |c| f(c));
                    Progress {
                        files: get(|c| c.files.load(Ordering::Relaxed)),
                        bytes: get(|c| c.bytes.load(Ordering::Relaxed)),
                        total_bytes: get(|c| c.total_bytes.load(Ordering::Relaxed)),
                        elapsed_s: j.started.map_or(0.0, |s| s.elapsed().as_secs_f64()),
                    }
                }),
                last_run: j.last_run,
                last_ok: j.last_run > 0.0 && j.last_success == j.last_run,
                last_duration: j.last_duration,
                bytes_read: j.last_bytes_read,
                bytes_added: j.last_bytes_added,
                rate: j.last_rate,
                last_snapshot: j.last_snapshot.clone(),
                next_run: j.next_run,
                paths: j.paths.clone(),
            })
            .collect()
    }

    fn members(&self) -> Vec<MemberView> {
        let m = self.shared.metrics.lock().expect("metrics");
        m.members
            .iter()
            .map(|(name, s)| MemberView {
                name: name.clone(),
                up: s.up,
                requests: s.requests,
                errors: s.errors,
            })
            .collect()
    }

    fn host(&self) -> String {
        self.shared.host.read().expect("host").clone()
    }

    fn trigger(&self, name: &str) -> Result<String, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.shared
            .events
            .send(Event::Trigger {
                name: name.to_string(),
                reply: tx,
            })
            .map_err(|_| "the agent is shutting down".to_string())?;
        match rx.blocking_recv() {
            Ok(TriggerReply::Started) => Ok(format!("job {name} started")),
            Ok(TriggerReply::Running) => Err(format!("job {name} is already running")),
            Ok(TriggerReply::Unknown) => Err(format!("no job named {name}")),
            Ok(TriggerReply::Stopping) | Err(_) => Err("the agent is shutting down".into()),
        }
    }
}

/// The console's routes for this agent.
pub fn console(shared: &Arc<AgentState>, settings: &Settings) -> axum::Router {
    let token_of = shared.clone();
    let c = console::Console {
        access: console::auth::Access::new(Box::new(move || {
            token_of.token.read().expect("token").clone()
        })),
        source: console::source::Source::new(settings.ctx.clone()),
        scheduler: Some(Arc::new(Link {
            shared: shared.clone(),
        })),
        restore_targets: settings.console.restore_targets.clone(),
        history: shared.history.clone(),
        restores: Default::default(),
    };
    console::router(Arc::new(c))
}
