//! Periodic jobs: schedule records, their timing syntax, and their stream subjects.
//!
//! A schedule lives in the stream as ONE message on `schedules.<key>`: while it is
//! active, that message is a `schedule_created` record carrying the JetStream headers
//! `Nats-Schedule` (cron or `@every`) and `Nats-Schedule-Target`
//! (`jobs.<queue>.sched-<key>.queued`), so nats-server itself produces a copy of it on
//! every firing: no beat process. Deleting it publishes a `schedule_deleted` record with
//! `Nats-Rollup: sub`, which replaces the active one and so stops the firing. The
//! record is kept with `Nats-TTL: never`, so the stream's `max_age` never ends a schedule.
//! `<key>` is derived from (owner, name), so two users' schedules never collide.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{DecodeError, JobSpec, SCHEMA_VERSION};

/// Subject prefix of schedule records.
pub use crate::subject::SCHEDULES_PREFIX as PREFIX;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timing {
    /// A 6-field cron expression (seconds first, UTC) or a predefined `@hourly`, `@daily`, ….
    Cron(String),
    /// A fixed interval in Go duration syntax, e.g. `30s`, `5m`, `1h30m`.
    Every(String),
}

impl Timing {
    /// The `Nats-Schedule` header value.
    pub fn header_value(&self) -> String {
        match self {
            Timing::Cron(c) => c.clone(),
            Timing::Every(e) => format!("@every {e}"),
        }
    }
}

/// What a schedule is: its name, owner, timing and the job it produces on every firing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// Name, unique per owner (a subject-safe token).
    pub name: String,
    /// Subject (`sub`) of the user who made it; fired jobs belong to them.
    pub owner: String,
    /// When it fires.
    pub timing: Timing,
    /// The job each firing produces (its `owner` is the schedule's owner).
    pub job: JobSpec,
}

/// What happened to a schedule. A closed set with explicit `type` tags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ScheduleEvent {
    /// The schedule was created or replaced; it fires from now on.
    #[serde(rename = "schedule_created")]
    Created(Box<ScheduleSpec>),
    /// The schedule was deleted; it fires no more.
    #[serde(rename = "schedule_deleted")]
    Deleted {
        /// Name of the schedule.
        name: String,
        /// Its owner.
        owner: String,
    },
}

/// A schedule event with what every record shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// Schema version.
    pub v: u16,
    /// Unique id of the record (UUIDv7).
    pub event_id: Uuid,
    /// The schedule's key (see [`schedule_key`]).
    pub schedule_key: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The event, tagged by `type`.
    #[serde(flatten)]
    pub event: ScheduleEvent,
}

impl ScheduleRecord {
    /// A new record stamped now.
    pub fn new(schedule_key: String, event: ScheduleEvent) -> Self {
        ScheduleRecord {
            v: SCHEMA_VERSION,
            event_id: Uuid::now_v7(),
            schedule_key,
            at: crate::event::now(),
            event,
        }
    }

    /// JSON bytes for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a record, refusing unknown schema versions.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let rec: ScheduleRecord = serde_json::from_slice(bytes)?;
        if rec.v > SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedVersion(rec.v));
        }
        Ok(rec)
    }
}

// The subject family of schedules lives with every other one in `subject`; these names
// stay for the readers that know them from here.
pub use crate::subject::{
    all_schedules as all_subjects, fired_token, schedule as subject, schedule_key,
};

/// Shortest interval of an `every` schedule.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// Parses a Go-style duration of whole units (`30s`, `5m`, `1h30m`, `2h`); at least one second.
/// Returns the normalized form (`<seconds>s`) nats-server receives.
pub fn parse_every(s: &str) -> Result<String, String> {
    let err = || "must be a duration like 30s, 5m or 1h30m (at least 1s)".to_owned();
    let mut total: u64 = 0;
    let mut num = String::new();
    let mut chars = s.trim().chars().peekable();
    if chars.peek().is_none() {
        return Err(err());
    }
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            's' => 1,
            'm' if chars.peek() == Some(&'s') => return Err(err()),
            'm' => 60,
            _ => return Err(err()),
        };
        let n: u64 = num.parse().map_err(|_| err())?;
        num.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
    }
    if !num.is_empty() || total < MIN_EVERY.as_secs() {
        return Err(err());
    }
    Ok(format!("{total}s"))
}

const PREDEFINED: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Checks a cron expression the way nats-server reads it (ADR-51): six fields —
/// seconds, minutes, hours, day of month, month (1-12 or names), day of week (0-6 or
/// names, 0 is Sunday) — each `*`, a value, a range `a-b`, a list `a,b`, with an optional
/// step `/n`; or one of `@yearly @annually @monthly @weekly @daily @midnight @hourly`.
pub fn validate_cron(expr: &str) -> Result<(), String> {
    let expr = expr.trim();
    if expr.starts_with('@') {
        return if PREDEFINED.contains(&expr.to_ascii_lowercase().as_str()) {
            Ok(())
        } else {
            Err(format!(
                "unknown predefined schedule {expr:?}; use one of {}",
                PREDEFINED.join(", ")
            ))
        };
    }
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 6 {
        return Err(format!(
            "must have 6 fields (second minute hour day-of-month month day-of-week), found {}",
            fields.len()
        ));
    }
    let specs: [(&str, u32, u32, &[&str]); 6] = [
        ("second", 0, 59, &[]),
        ("minute", 0, 59, &[]),
        ("hour", 0, 23, &[]),
        ("day-of-month", 1, 31, &[]),
        ("month", 1, 12, &MONTHS),
        ("day-of-week", 0, 6, &DAYS),
    ];
    for (field, (name, lo, hi, names)) in fields.iter().zip(specs) {
        validate_field(field, lo, hi, names).map_err(|e| format!("{name} field {field:?}: {e}"))?;
    }
    Ok(())
}

fn validate_field(field: &str, lo: u32, hi: u32, names: &[&str]) -> Result<(), String> {
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            // Months are 1-based, days 0-based.
            return Ok(u32::try_from(i).unwrap_or(0) + lo);
        }
        let v: u32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(format!("{v} is outside {lo}-{hi}"))
        }
    };
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        if let Some(step) = step {
            let n: u32 = step
                .parse()
                .map_err(|_| format!("step {step:?} is not a number"))?;
            if n == 0 {
                return Err("step must be at least 1".into());
            }
        }
        if range == "*" {
            continue;
        }
        match range.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (value(a)?, value(b)?);
                if a > b {
                    return Err(format!("range {a}-{b} runs backwards"));
                }
            }
            None if range.is_empty() => return Err("empty item".into()),
            None => {
                value(range)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parses_go_durations() {
        assert_eq!(parse_every("30s").unwrap(), "30s");
        assert_eq!(parse_every("1h30m").unwrap(), "5400s");
        assert_eq!(parse_every("2m").unwrap(), "120s");
        for bad in ["", "0s", "100ms", "5", "s", "1x", "-1s", "1.5h"] {
            assert!(parse_every(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cron_follows_the_six_field_grammar() {
        for good in [
            "0 */5 * * * *",
            "*/2 * * * * *",
            "0 30 4 1,15 * 5",
            "0 0 8-11 * jan-mar mon,wed,fri",
            "@hourly",
            "@daily",
        ] {
            assert_eq!(validate_cron(good), Ok(()), "{good:?}");
        }
        for bad in [
            "* * * * *",
            "61 * * * * *",
            "0 0 25 * * *",
            "0 0 0 0 * *",
            "0 0 0 * 13 *",
            "0 0 0 * * 7",
            "0 */0 * * * *",
            "0 5-1 * * * *",
            "@sometimes",
            "a b c d e f",
            "",
        ] {
            assert!(validate_cron(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn keys_separate_owners() {
        assert_ne!(schedule_key("alice", "n"), schedule_key("bob", "n"));
        assert_eq!(schedule_key("alice", "n"), schedule_key("alice", "n"));
        assert_eq!(schedule_key("alice", "n").len(), 32);
        // NUL separation: ("ab","c") and ("a","bc") differ.
        assert_ne!(schedule_key("ab", "c"), schedule_key("a", "bc"));
    }
}
