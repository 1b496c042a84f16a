//! The probe: does the store answer, does the password open the
//! repository (creating it when asked), how are the pool members.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::jobs::JobSpec;
use crate::error::{Fatal, one_line};
use crate::session::Ctx;

/// A probe's findings.
pub struct Probe {
    /// Reachable (write quorum of members up) and, when asked, unlocked.
    pub ready: bool,
    /// Why not.
    pub why: String,
    /// The password opened the repository (None: not tried this time).
    pub unlocked: Option<bool>,
    /// Member health.
    pub members: Vec<(String, bool)>,
    /// Requests the probe sent.
    pub counts: Vec<crate::store::RequestCounts>,
    /// When each backup job last saved a snapshot (only on unlocking).
    pub last_backups: Option<Vec<(String, Option<DateTime<Utc>>)>>,
}

pub(super) fn member_name(m: &str) -> String {
    if m.is_empty() {
        "repository".into()
    } else {
        m.to_string()
    }
}

/// Checks that the store answers and (with `unlock`) that the password
/// opens the repository; creates it first when `init` and it is missing.
pub(super) fn probe(ctx: &Ctx, unlock: bool, init: bool, jobs: &[JobSpec], host: &str) -> Probe {
    let mut p = Probe {
        ready: false,
        why: String::new(),
        unlocked: None,
        members: Vec::new(),
        counts: Vec::new(),
        last_backups: None,
    };
    let backend: Arc<dyn crate::store::Backend> = if ctx.pool.is_some() {
        let pool = match ctx.pool() {
            Ok(pool) => pool,
            Err(e) => {
                p.why = one_line(&e);
                return p;
            }
        };
        let quorum = ctx
            .pool
            .as_ref()
            .and_then(|c| c.validate().ok())
            .unwrap_or(1);
        for m in pool.members() {
            let up = crate::repo::probe_config(m.backend.as_ref()).is_ok();
            p.members.push((m.name.clone(), up));
        }
        let up = p.members.iter().filter(|(_, up)| *up).count();
        if up < quorum {
            p.why = format!(
                "{up} of {} pool members reachable with the repository, {quorum} needed",
                p.members.len()
            );
        }
        pool.rank_members(crate::repo::layout::CONFIG);
        ctx.throttled(Arc::new(pool))
    } else {
        match ctx.backend() {
            Ok(b) => {
                let up = crate::repo::probe_config(b.as_ref());
                if let Err(e) = &up {
                    p.why = one_line(e);
                }
                p.members.push(("repository".into(), up.is_ok()));
                b
            }
            Err(e) => {
                p.why = one_line(&e);
                return p;
            }
        }
    };
    if unlock && (p.why.is_empty() || init) {
        let mut opened = ctx.open_on(backend.clone());
        if init
            && let Err(e) = &opened
            && e.downcast_ref::<Fatal>()
                .is_some_and(|f| matches!(f, Fatal::NoRepository(_)))
        {
            opened = ctx.password(false).and_then(|pw| {
                let repo = crate::repo::Repository::init(
                    backend.clone(),
                    &pw,
                    crate::crypto::keyfile::KdfParams::default(),
                )?;
                tracing::info!(repository = %backend.location(), "created the repository");
                Ok(Arc::new(repo))
            });
            if opened.is_ok() {
                p.why.clear();
                for m in &mut p.members {
                    m.1 = true;
                }
            }
        }
        match opened {
            Ok(repo) => {
                p.unlocked = Some(true);
                match super::jobs::last_backups(&repo, jobs, host) {
                    Ok(l) => p.last_backups = Some(l),
                    Err(e) => p.why = format!("listing snapshots: {}", one_line(&e)),
                }
            }
            Err(e) => {
                p.unlocked = Some(false);
                p.why = one_line(&e);
            }
        }
    }
    for n in backend
        .replicated()
        .map(|r| r.take_notices())
        .unwrap_or_default()
    {
        tracing::warn!("{n}");
    }
    p.counts = backend.request_counts();
    p.ready = p.why.is_empty();
    p
}
