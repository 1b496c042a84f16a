//! Which snapshots a retention policy keeps, and why.
//!
//! Rules follow restic's: snapshots are grouped (by host and paths unless told
//! otherwise), sorted newest first, and each `keep-*` rule keeps the newest
//! snapshot of each of its last N periods. Periods are calendar periods in the
//! local time zone of the machine running `forget` (set TZ to change it), so
//! month ends, leap days and DST changes are handled by the calendar, not by
//! fixed durations.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, Local, TimeZone, Timelike, Utc};
use serde::Serialize;

use crate::id::Id;
use crate::repo::snapshot::Snapshot;

/// A retention policy; all-zero means "keep everything".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Keep the N newest snapshots.
    pub last: usize,
    /// Keep the newest snapshot of each of the last N hours.
    pub hourly: usize,
    /// ... days.
    pub daily: usize,
    /// ... ISO weeks.
    pub weekly: usize,
    /// ... months.
    pub monthly: usize,
    /// ... years.
    pub yearly: usize,
    /// Keep every snapshot newer than this, relative to the newest snapshot
    /// of its group.
    pub within: Option<Duration>,
    /// Keep every snapshot carrying one of these tags.
    pub tags: Vec<String>,
}

impl Policy {
    /// True when the policy keeps nothing on purpose (no rule given).
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// How snapshots are grouped before the policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    /// Group by host name.
    pub host: bool,
    /// Group by the set of backed-up paths.
    pub paths: bool,
    /// Group by the set of tags.
    pub tags: bool,
}

impl Default for Grouping {
    fn default() -> Self {
        Grouping {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

/// The decision for one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Snapshot id.
    pub id: Id,
    /// Snapshot time.
    pub time: DateTime<Utc>,
    /// The group it belongs to (e.g. "host=web1 paths=/data").
    pub group: String,
    /// Kept or removed.
    pub keep: bool,
    /// The rules that keep it ("last 1/3", "daily 2026-11-24", ...); empty when removed.
    pub reasons: Vec<String>,
}

fn group_key(s: &Snapshot, g: Grouping) -> String {
    let mut parts = Vec::new();
    if g.host {
        parts.push(format!("host={}", s.hostname));
    }
    if g.paths {
        let mut p = s.paths.clone();
        p.sort();
        parts.push(format!("paths={}", p.join(",")));
    }
    if g.tags {
        let mut t = s.tags.clone();
        t.sort();
        parts.push(format!("tags={}", t.join(",")));
    }
    parts.join(" ")
}

/// The calendar bucket of a time for a rule, in time zone `tz`.
fn bucket<T: TimeZone>(t: &DateTime<Utc>, tz: &T, rule: &str) -> String
where
    T::Offset: std::fmt::Display,
{
    let l = t.with_timezone(tz);
    match rule {
        "hourly" => format!(
            "{:04}-{:02}-{:02} {:02}h",
            l.year(),
            l.month(),
            l.day(),
            l.hour()
        ),
        "daily" => format!("{:04}-{:02}-{:02}", l.year(), l.month(), l.day()),
        "weekly" => {
            let w = l.iso_week();
            format!("{:04}-W{:02}", w.year(), w.week())
        }
        "monthly" => format!("{:04}-{:02}", l.year(), l.month()),
        _ => format!("{:04}", l.year()),
    }
}

/// Applies the policy in the local time zone.
pub fn apply(snapshots: &[(Id, Snapshot)], policy: &Policy, grouping: Grouping) -> Vec<Decision> {
    apply_in(snapshots, policy, grouping, &Local)
}

/// Applies the policy with an explicit time zone (for tests).
pub fn apply_in<T: TimeZone>(
    snapshots: &[(Id, Snapshot)],
    policy: &Policy,
    grouping: Grouping,
    tz: &T,
) -> Vec<Decision>
where
    T::Offset: std::fmt::Display,
{
    let mut groups: BTreeMap<String, Vec<&(Id, Snapshot)>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(group_key(&s.1, grouping)).or_default().push(s);
    }
    let mut out = Vec::new();
    for (group, mut list) in groups {
        // Newest first; ties broken by id so the result is deterministic.
        list.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
        let newest = list.first().map(|s| s.1.time);
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); list.len()];
        if policy.is_empty() {
            for r in reasons.iter_mut() {
                r.push("no policy given".into());
            }
        }
        for (i, (_, _)) in list.iter().enumerate().take(policy.last) {
            reasons[i].push(format!("last {}/{}", i + 1, policy.last));
        }
        for (rule, n) in [
            ("hourly", policy.hourly),
            ("daily", policy.daily),
            ("weekly", policy.weekly),
            ("monthly", policy.monthly),
            ("yearly", policy.yearly),
        ] {
            let mut seen: Vec<String> = Vec::new();
            for (i, (_, s)) in list.iter().enumerate() {
                if seen.len() >= n {
                    break;
                }
                let b = bucket(&s.time, tz, rule);
                if !seen.contains(&b) {
                    reasons[i].push(format!("{rule} {b}"));
                    seen.push(b);
                }
            }
        }
        if let (Some(within), Some(newest)) = (policy.within, newest) {
            for (i, (_, s)) in list.iter().enumerate() {
                if newest - s.time <= within {
                    reasons[i].push(format!(
                        "within {}",
                        humantime::format_duration(within.to_std().unwrap_or_default())
                    ));
                }
            }
        }
        for (i, (_, s)) in list.iter().enumerate() {
            for t in &policy.tags {
                if s.tags.contains(t) {
                    reasons[i].push(format!("tag {t}"));
                }
            }
        }
        for ((id, s), r) in list.into_iter().map(|x| (&x.0, &x.1)).zip(reasons) {
            out.push(Decision {
                id: *id,
                time: s.time,
                group: group.clone(),
                keep: !r.is_empty(),
                reasons: r,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn snap(time: &str, tags: &[&str]) -> Snapshot {
        Snapshot {
            time: DateTime::parse_from_rfc3339(time)
                .unwrap()
                .with_timezone(&Utc),
            tree: Id::default(),
            paths: vec!["/data".into()],
            hostname: "h".into(),
            username: "u".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            mode: Default::default(),
            parent: None,
            summary: Default::default(),
            program_version: String::new(),
            original: None,
        }
    }

    fn ids(n: usize) -> Vec<Id> {
        (0..n).map(|i| Id([i as u8; 32])).collect()
    }

    fn kept(snaps: &[(&str, &[&str])], policy: &Policy, tz: &FixedOffset) -> Vec<String> {
        let list: Vec<(Id, Snapshot)> = ids(snaps.len())
            .into_iter()
            .zip(snaps.iter().map(|(t, tags)| snap(t, tags)))
            .collect();
        let mut k: Vec<String> = apply_in(&list, policy, Grouping::default(), tz)
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.time.to_rfc3339())
            .collect();
        k.sort();
        k
    }

    fn utc() -> FixedOffset {
        FixedOffset::east_opt(0).unwrap()
    }

    #[test]
    fn keep_last_and_daily() {
        let s: Vec<(&str, &[&str])> = vec![
            ("2026-11-20T10:00:00Z", &[]),
            ("2026-11-20T18:00:00Z", &[]),
            ("2026-11-21T09:00:00Z", &[]),
            ("2026-11-22T09:00:00Z", &[]),
        ];
        let p = Policy {
            daily: 2,
            ..Policy::default()
        };
        assert_eq!(
            kept(&s, &p, &utc()),
            vec!["2026-11-21T09:00:00+00:00", "2026-11-22T09:00:00+00:00"]
        );
        let p = Policy {
            last: 1,
            daily: 3,
            ..Policy::default()
        };
        // The newest of Nov 20 is the 18:00 one.
        assert_eq!(
            kept(&s, &p, &utc()),
            vec![
                "2026-11-20T18:00:00+00:00",
                "2026-11-21T09:00:00+00:00",
                "2026-11-22T09:00:00+00:00"
            ]
        );
    }

    #[test]
    fn month_ends_and_leap_days() {
        let s: Vec<(&str, &[&str])> = vec![
            ("2024-01-31T23:00:00Z", &[]),
            ("2024-02-01T00:30:00Z", &[]),
            ("2024-02-29T12:00:00Z", &[]),
            ("2024-03-01T00:00:00Z", &[]),
        ];
        let p = Policy {
            monthly: 3,
            ..Policy::default()
        };
        assert_eq!(
            kept(&s, &p, &utc()),
            vec![
                "2024-01-31T23:00:00+00:00",
                "2024-02-29T12:00:00+00:00",
                "2024-03-01T00:00:00+00:00"
            ]
        );
        let p = Policy {
            daily: 10,
            ..Policy::default()
        };
        assert_eq!(kept(&s, &p, &utc()).len(), 4, "Feb 29 is a day of its own");
    }

    #[test]
    fn time_zone_moves_day_boundaries() {
        let s: Vec<(&str, &[&str])> =
            vec![("2026-06-01T22:30:00Z", &[]), ("2026-06-02T01:00:00Z", &[])];
        let p = Policy {
            daily: 5,
            ..Policy::default()
        };
        // In UTC these are two days; at UTC+3 both fall on June 2.
        assert_eq!(kept(&s, &p, &utc()).len(), 2);
        assert_eq!(
            kept(&s, &p, &FixedOffset::east_opt(3 * 3600).unwrap()),
            vec!["2026-06-02T01:00:00+00:00"]
        );
    }

    #[test]
    fn weeks_span_years() {
        // 2026-12-31 and 2027-01-01 are in ISO week 2026-W53.
        let s: Vec<(&str, &[&str])> =
            vec![("2026-12-31T12:00:00Z", &[]), ("2027-01-01T12:00:00Z", &[])];
        let p = Policy {
            weekly: 5,
            ..Policy::default()
        };
        assert_eq!(kept(&s, &p, &utc()), vec!["2027-01-01T12:00:00+00:00"]);
        let p = Policy {
            yearly: 5,
            ..Policy::default()
        };
        assert_eq!(kept(&s, &p, &utc()).len(), 2);
    }

    #[test]
    fn within_and_tags() {
        let s: Vec<(&str, &[&str])> = vec![
            ("2026-11-01T00:00:00Z", &["keep"]),
            ("2026-11-20T00:00:00Z", &[]),
            ("2026-11-24T00:00:00Z", &[]),
            ("2026-11-25T00:00:00Z", &[]),
        ];
        let p = Policy {
            within: Some(Duration::days(2)),
            tags: vec!["keep".into()],
            ..Policy::default()
        };
        assert_eq!(
            kept(&s, &p, &utc()),
            vec![
                "2026-11-01T00:00:00+00:00",
                "2026-11-24T00:00:00+00:00",
                "2026-11-25T00:00:00+00:00"
            ]
        );
    }

    #[test]
    fn empty_policy_keeps_everything_and_groups_are_separate() {
        let mut a = snap("2026-11-01T00:00:00Z", &[]);
        a.hostname = "a".into();
        let b = snap("2026-11-02T00:00:00Z", &[]);
        let list = vec![(Id([1; 32]), a), (Id([2; 32]), b)];
        assert!(
            apply_in(&list, &Policy::default(), Grouping::default(), &utc())
                .iter()
                .all(|d| d.keep)
        );
        let d = apply_in(
            &list,
            &Policy {
                last: 1,
                ..Policy::default()
            },
            Grouping::default(),
            &utc(),
        );
        assert!(d.iter().all(|d| d.keep), "each host keeps its own newest");
    }
}
