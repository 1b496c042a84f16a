//! Cron schedules (5 fields, or 6 with a leading seconds field) with an
//! optional random delay (jitter), evaluated in the local time zone (set TZ
//! to change it; containers usually run in UTC).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Local};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Deserializer};

/// A parsed cron expression.
#[derive(Clone)]
pub struct Schedule {
    pattern: String,
    cron: Cron,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.pattern)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

impl Schedule {
    /// Parses `min hour day month weekday`, or the same with a leading
    /// seconds field (`*/5 * * * * *` is every five seconds).
    pub fn parse(pattern: &str) -> Result<Schedule, String> {
        let fields = pattern.split_whitespace().count();
        if !pattern.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "invalid cron expression {pattern:?}: it has {fields} fields; give 5 (minute hour day month weekday) or 6 (a leading seconds field)"
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        // The parser is third-party code fed user input: a panic in it must
        // not take the agent down.
        let parsed = std::panic::catch_unwind(|| parser.parse(pattern))
            .map_err(|_| format!("invalid cron expression {pattern:?}"))?;
        let cron = parsed.map_err(|e| format!("invalid cron expression {pattern:?}: {e}"))?;
        // An expression that never fires (e.g. 30 February) is refused now
        // rather than silently never running.
        let s = Schedule {
            pattern: pattern.to_string(),
            cron,
        };
        if s.next_after(Local::now()).is_none() {
            return Err(format!(
                "cron expression {pattern:?} never matches a time in the future"
            ));
        }
        Ok(s)
    }

    /// The first matching time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Local>) -> Option<DateTime<Local>> {
        std::panic::catch_unwind(|| self.cron.find_next_occurrence(&t, false))
            .ok()?
            .ok()
    }

    /// The last matching time strictly before `t`.
    pub fn previous_before(&self, t: DateTime<Local>) -> Option<DateTime<Local>> {
        std::panic::catch_unwind(|| self.cron.find_previous_occurrence(&t, false))
            .ok()?
            .ok()
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Schedule::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A duration written as `30s`, `5m`, `1h 30m` (humantime) in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(ConfigDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?} ({e}); write it like 30s, 15m or 1h"
                ))
            })
    }
}

/// A random delay in `[0, max]`, so many agents on one schedule do not all
/// hit the store at the same second.
pub fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::random_range(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn seconds_field_is_optional() {
        let every5 = Schedule::parse("*/5 * * * * *").unwrap();
        let t = Local.with_ymd_and_hms(2026, 1, 1, 0, 0, 1).unwrap();
        assert_eq!(
            every5.next_after(t).unwrap(),
            Local.with_ymd_and_hms(2026, 1, 1, 0, 0, 5).unwrap()
        );
        let hourly = Schedule::parse("15 * * * *").unwrap();
        assert_eq!(
            hourly.next_after(t).unwrap(),
            Local.with_ymd_and_hms(2026, 1, 1, 0, 15, 0).unwrap()
        );
        assert_eq!(
            hourly.previous_before(t).unwrap(),
            Local.with_ymd_and_hms(2025, 12, 31, 23, 15, 0).unwrap()
        );
    }

    #[test]
    fn bad_expressions_are_refused() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * * *",
            "a b c d e",
            "0 0 30 2 *",
            "*/0 * * * *",
            "1-",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations_and_jitter() {
        #[derive(Deserialize)]
        struct T {
            d: ConfigDuration,
        }
        let t: T = toml::from_str("d = \"1h 30m\"").unwrap();
        assert_eq!(t.d.0, Duration::from_secs(5400));
        let e = toml::from_str::<T>("d = \"soon\"")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("invalid duration"), "{e}");
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        for _ in 0..100 {
            assert!(jitter(Duration::from_secs(2)) <= Duration::from_secs(2));
        }
    }
}
