//! When the idle agent probes the store. Readiness rests first on the
//! outcome of real operations: a job that reached the repository proves it
//! reachable and puts the next probe off by a whole interval; a job that
//! could not reach it makes the agent not ready and probes again soon. The
//! probe itself (one HEAD per store or pool member) runs at start-up, after
//! a reload, and otherwise rarely: by default every 30 minutes for a single
//! store or a pool of two, longer for larger pools, so an idle agent sends
//! at most 96 probe requests a day. While not ready it retries after 30 s,
//! doubling up to the interval.

use std::time::{Duration, Instant};

/// The first retry after a failed probe or job; it doubles up to the
/// probe interval.
pub const FIRST_RETRY: Duration = Duration::from_secs(30);

/// Probe requests an idle agent may send per day at default settings.
pub const DAILY_PROBE_BUDGET: u64 = 96;

/// The default probe interval for a store of `members` members (1 for a
/// single store): 30 minutes per two members, so that one probe (a request
/// per member) a interval stays within [`DAILY_PROBE_BUDGET`] a day.
pub fn default_interval(members: usize) -> Duration {
    Duration::from_secs(30 * 60) * members.max(1).div_ceil(2) as u32
}

/// What a finished job tells about the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobSignal {
    /// It reached the repository (it succeeded, or failed for reasons of
    /// its own, such as unreadable source files).
    Reachable,
    /// It could not reach or open the repository: why.
    Unreachable(String),
}

/// When the next probe is due.
#[derive(Debug, Clone)]
pub struct ProbeClock {
    interval: Duration,
    failures: u32,
    next: Instant,
}

impl ProbeClock {
    /// A clock whose first probe is due at `now` (start-up).
    pub fn new(interval: Duration, now: Instant) -> ProbeClock {
        ProbeClock {
            interval: interval.max(Duration::from_secs(1)),
            failures: 0,
            next: now,
        }
    }

    /// When the next probe is due.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// Whether a probe is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// The delay before the next try after `failures` failures in a row.
    fn retry(&self) -> Duration {
        let shift = self.failures.saturating_sub(1).min(16);
        (FIRST_RETRY * (1u32 << shift)).min(self.interval)
    }

    /// A probe finished at `now`; `ready` is its outcome.
    pub fn probed(&mut self, ready: bool, now: Instant) {
        if ready {
            self.failures = 0;
            self.next = now + self.interval;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.next = now + self.retry();
        }
    }

    /// A job finished at `now`: its outcome stands in for a probe.
    pub fn job_done(&mut self, signal: &JobSignal, now: Instant) {
        match signal {
            JobSignal::Reachable => {
                self.failures = 0;
                self.next = self.next.max(now + self.interval);
            }
            JobSignal::Unreachable(_) => {
                self.failures = self.failures.saturating_add(1);
                self.next = self.next.min(now + self.retry());
            }
        }
    }

    /// Probe at `now` (after a config reload).
    pub fn probe_now(&mut self, now: Instant) {
        self.next = now;
    }
}

/// Whether a job's error means the repository could not be reached or
/// opened (as opposed to a failure of the job's own).
pub fn unreachable_error(e: &anyhow::Error) -> bool {
    use crate::error::Fatal;
    crate::store::is_unreachable(e)
        || crate::store::is_access_denied(e)
        || e.chain().any(|c| {
            c.is::<crate::store::NoCredentials>()
                || c.downcast_ref::<Fatal>()
                    .is_some_and(|f| matches!(f, Fatal::NoRepository(_) | Fatal::WrongPassword))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probes sent over `span` by an idle agent whose probes all succeed.
    fn idle_probes(interval: Duration, span: Duration) -> u64 {
        let start = Instant::now();
        let mut clock = ProbeClock::new(interval, start);
        let mut now = start;
        let mut probes = 0;
        while now < start + span {
            now = clock.next().max(now);
            if now >= start + span {
                break;
            }
            assert!(clock.due(now));
            probes += 1;
            clock.probed(true, now);
        }
        probes
    }

    #[test]
    fn an_idle_agent_stays_within_the_daily_request_budget() {
        let day = Duration::from_secs(86_400);
        for members in 1..=8u64 {
            let probes = idle_probes(default_interval(members as usize), day);
            // One request per member per probe.
            let requests = probes * members;
            assert!(
                requests <= DAILY_PROBE_BUDGET,
                "{members} member(s): {requests} requests a day"
            );
        }
        assert_eq!(default_interval(1), Duration::from_secs(1800));
        assert_eq!(default_interval(2), Duration::from_secs(1800));
        assert_eq!(default_interval(3), Duration::from_secs(3600));
        // The old default: a probe every 30 s, 2,880 a day.
        assert_eq!(idle_probes(Duration::from_secs(30), day), 2880);
    }

    #[test]
    fn successful_jobs_stand_in_for_probes() {
        let start = Instant::now();
        let interval = default_interval(1);
        let mut clock = ProbeClock::new(interval, start);
        clock.probed(true, start);
        // A backup every 15 minutes for a day: no probe is ever due.
        let mut probes = 0;
        let mut now = start;
        for _ in 0..96 {
            let job = now + Duration::from_secs(900);
            if clock.due(job) {
                probes += 1;
                clock.probed(true, job);
            }
            now = job;
            clock.job_done(&JobSignal::Reachable, now);
        }
        assert_eq!(probes, 0);
        assert_eq!(clock.next(), now + interval);
    }

    #[test]
    fn failures_retry_soon_then_back_off_to_the_interval() {
        let start = Instant::now();
        let interval = default_interval(1);
        let mut clock = ProbeClock::new(interval, start);
        clock.probed(true, start);
        // A job that cannot reach the store brings the next probe forward.
        let t = start + Duration::from_secs(60);
        clock.job_done(&JobSignal::Unreachable("down".into()), t);
        assert_eq!(clock.next(), t + FIRST_RETRY);
        // Failed probes back off: 60 s, 120 s, ... up to the interval.
        let mut now = clock.next();
        let mut waits = Vec::new();
        for _ in 0..8 {
            clock.probed(false, now);
            waits.push((clock.next() - now).as_secs());
            now = clock.next();
        }
        assert_eq!(waits, [60, 120, 240, 480, 960, 1800, 1800, 1800]);
        // Back up: the whole interval again.
        clock.probed(true, now);
        assert_eq!(clock.next(), now + interval);
        // A reload probes at once.
        clock.probe_now(now);
        assert!(clock.due(now));
    }

    #[test]
    fn a_day_of_outage_costs_few_probes() {
        let start = Instant::now();
        let mut clock = ProbeClock::new(default_interval(1), start);
        let mut now = start;
        let mut probes = 0;
        while now < start + Duration::from_secs(86_400) {
            probes += 1;
            clock.probed(false, now);
            now = clock.next();
        }
        assert!(probes <= 60, "{probes}");
    }

    #[test]
    fn storage_errors_are_told_from_job_failures() {
        let e = anyhow::Error::new(crate::store::Unreachable {
            endpoint: None,
            cause: "refused".into(),
        })
        .context("writing");
        assert!(unreachable_error(&e));
        assert!(unreachable_error(&anyhow::Error::new(
            crate::error::Fatal::WrongPassword
        )));
        assert!(!unreachable_error(&anyhow::anyhow!(
            "source /data is not readable"
        )));
    }
}
