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
//!
//! Pausing publishes a `schedule_paused` record the same way (`Nats-Rollup: sub`) but
//! WITHOUT the schedule headers, so the firing stops while the spec stays in the stream;
//! resuming publishes `schedule_resumed` WITH them again. Since the rollup removes the
//! earlier records, both carry what the projection must keep across them (the
//! definition's creation time and its last firing), so a replay rebuilds the same row.
//!
//! The next firing is not stored anywhere: [`next_firing`] computes it the way
//! nats-server does from the timing and the record's time.

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, SubsecRound, Timelike, Utc};
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
    /// The schedule was paused: stored without the schedule headers, it fires no more
    /// until resumed, and keeps its spec.
    #[serde(rename = "schedule_paused")]
    Paused(Box<ScheduleUpdate>),
    /// A paused schedule was resumed: it fires again, counted from this record.
    #[serde(rename = "schedule_resumed")]
    Resumed(Box<ScheduleUpdate>),
}

impl ScheduleEvent {
    /// The spec, unless deleted.
    pub fn spec(&self) -> Option<&ScheduleSpec> {
        match self {
            ScheduleEvent::Created(spec) => Some(spec),
            ScheduleEvent::Paused(u) | ScheduleEvent::Resumed(u) => Some(&u.spec),
            ScheduleEvent::Deleted { .. } => None,
        }
    }

    /// Whether nats-server fires this record (it is stored with the schedule headers).
    pub fn fires(&self) -> bool {
        matches!(self, ScheduleEvent::Created(_) | ScheduleEvent::Resumed(_))
    }

    /// Its `type` tag on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            ScheduleEvent::Created(_) => "schedule_created",
            ScheduleEvent::Deleted { .. } => "schedule_deleted",
            ScheduleEvent::Paused(_) => "schedule_paused",
            ScheduleEvent::Resumed(_) => "schedule_resumed",
        }
    }
}

/// A pause or resume: the spec again, with what the projection keeps from the records
/// it rolls up (so a replay, which only sees this record, rebuilds the same row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleUpdate {
    /// The schedule, unchanged.
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    /// When its definition was created (its `schedule_created` record).
    pub created_at: DateTime<Utc>,
    /// Its last firing before this record, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired_at: Option<DateTime<Utc>>,
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
    Cron::parse(expr).map(|_| ())
}

/// A parsed cron expression: one bit per value of each field, as nats-server keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cron {
    second: u64,
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// Whether the day-of-month field is a plain `*` (see [`Cron::day_matches`]).
    dom_star: bool,
    /// Whether the day-of-week field is a plain `*`.
    dow_star: bool,
}

impl Cron {
    fn parse(expr: &str) -> Result<Cron, String> {
        let mut expr = expr.trim();
        if expr.starts_with('@') {
            // nats-server's expansions of the predefined schedules.
            expr = match expr.to_ascii_lowercase().as_str() {
                "@yearly" | "@annually" => "0 0 0 1 1 *",
                "@monthly" => "0 0 0 1 * *",
                "@weekly" => "0 0 0 * * 0",
                "@daily" | "@midnight" => "0 0 0 * * *",
                "@hourly" => "0 0 * * * *",
                _ => {
                    return Err(format!(
                        "unknown predefined schedule {expr:?}; use one of {}",
                        PREDEFINED.join(", ")
                    ));
                }
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
        let mut bits = [(0u64, false); 6];
        for (i, (field, (name, lo, hi, names))) in fields.iter().zip(specs).enumerate() {
            bits[i] = field_bits(field, lo, hi, names)
                .map_err(|e| format!("{name} field {field:?}: {e}"))?;
        }
        Ok(Cron {
            second: bits[0].0,
            minute: bits[1].0,
            hour: bits[2].0,
            dom: bits[3].0,
            month: bits[4].0,
            dow: bits[5].0,
            dom_star: bits[3].1,
            dow_star: bits[5].1,
        })
    }

    /// nats-server's (and classic cron's) day rule: when either day field is a plain `*`
    /// both must match; when both are restricted, either may.
    fn day_matches(&self, d: NaiveDate) -> bool {
        let dom = self.dom & (1 << d.day()) != 0;
        let dow = self.dow & (1 << d.weekday().num_days_from_sunday()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first matching second at or after `start` (UTC), searched as nats-server
    /// does up to five years ahead.
    fn first_at_or_after(&self, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let limit = start.year() + 5;
        let mut day = start.date_naive();
        while day.year() <= limit {
            if self.month & (1 << day.month()) != 0 && self.day_matches(day) {
                let from = if day == start.date_naive() {
                    start.time().num_seconds_from_midnight()
                } else {
                    0
                };
                for secs in from..86_400 {
                    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
                    if self.hour & (1 << h) != 0
                        && self.minute & (1 << m) != 0
                        && self.second & (1 << s) != 0
                    {
                        let t = day.and_hms_opt(h, m, s)?;
                        return Some(t.and_utc());
                    }
                }
            }
            day = day.succ_opt()?;
        }
        None
    }
}

/// The values one cron field stands for, as bits, and whether it is a plain `*`.
fn field_bits(field: &str, lo: u32, hi: u32, names: &[&str]) -> Result<(u64, bool), String> {
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
    let (mut bits, mut star) = (0u64, false);
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let step = match step {
            Some(step) => {
                let n: u32 = step
                    .parse()
                    .map_err(|_| format!("step {step:?} is not a number"))?;
                if n == 0 {
                    return Err("step must be at least 1".into());
                }
                Some(n)
            }
            None => None,
        };
        let (a, b) = if range == "*" {
            // `*/n` with n > 1 is a restriction, not a star (it matters for the day rule).
            star |= step.unwrap_or(1) == 1;
            (lo, hi)
        } else {
            match range.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (value(a)?, value(b)?);
                    if a > b {
                        return Err(format!("range {a}-{b} runs backwards"));
                    }
                    (a, b)
                }
                None if range.is_empty() => return Err("empty item".into()),
                // `n/step` runs from n to the end of the field.
                None => (
                    value(range)?,
                    if step.is_some() { hi } else { value(range)? },
                ),
            }
        };
        let step = step.unwrap_or(1);
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

/// Go's `Round(time.Second)`: to the nearest second, halves up.
fn round_to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    let whole = t.trunc_subsecs(0);
    if t.timestamp_subsec_nanos() >= 500_000_000 {
        whole + chrono::Duration::seconds(1)
    } else {
        whole
    }
}

/// When a schedule next fires after `now`, the way nats-server schedules it:
/// - cron: the first matching second after `now` (UTC);
/// - every: nats-server counts the interval from when the record was stored (`anchor`,
///   rounded to the second) and from each firing on; after a restart that missed firings
///   it restarts the count, so the last firing (`last_fired`), when later, re-anchors it.
///
/// `None` when the timing does not parse or no time matches within five years.
pub fn next_firing(
    timing: &Timing,
    anchor: DateTime<Utc>,
    last_fired: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match timing {
        Timing::Cron(expr) => {
            let cron = Cron::parse(expr).ok()?;
            cron.first_at_or_after(now.trunc_subsecs(0) + chrono::Duration::seconds(1))
        }
        Timing::Every(every) => {
            let secs: i64 = parse_every(every).ok()?.strip_suffix('s')?.parse().ok()?;
            let base = round_to_second(last_fired.map_or(anchor, |l| l.max(anchor)));
            let elapsed = (now - base).num_seconds();
            let k = if elapsed < 0 { 1 } else { elapsed / secs + 1 };
            Some(base + chrono::Duration::seconds(k.checked_mul(secs)?))
        }
    }
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

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next_cron(expr: &str, now: &str) -> Option<DateTime<Utc>> {
        next_firing(&Timing::Cron(expr.into()), at(now), None, at(now))
    }

    #[test]
    fn cron_next_firing_is_the_first_matching_second_after_now() {
        // 2026-12-02 is a Wednesday.
        let now = "2026-12-02T10:15:30.400Z";
        let cases = [
            ("* * * * * *", "2026-12-02T10:15:31Z"),
            ("0 */5 * * * *", "2026-12-02T10:20:00Z"),
            ("30 15 10 * * *", "2026-12-03T10:15:30Z"),
            ("0 0 8-11 * * mon,wed,fri", "2026-12-02T11:00:00Z"),
            ("0 0 9 * * MON", "2026-12-07T09:00:00Z"),
            ("0 0 0 * * 0", "2026-12-06T00:00:00Z"),
            ("0 0 0 1 jan *", "2027-01-01T00:00:00Z"),
            ("0 0 12 29 feb *", "2028-02-29T12:00:00Z"),
            ("10/20 * * * * *", "2026-12-02T10:15:50Z"),
            ("@hourly", "2026-12-02T11:00:00Z"),
            ("@daily", "2026-12-03T00:00:00Z"),
            ("@midnight", "2026-12-03T00:00:00Z"),
            ("@weekly", "2026-12-06T00:00:00Z"),
            ("@monthly", "2027-01-01T00:00:00Z"),
            ("@yearly", "2027-01-01T00:00:00Z"),
        ];
        for (expr, want) in cases {
            assert_eq!(next_cron(expr, now), Some(at(want)), "{expr}");
        }
        // Exactly on a matching second: the next one, not now.
        assert_eq!(
            next_cron("0 * * * * *", "2026-12-02T10:15:00Z"),
            Some(at("2026-12-02T10:16:00Z"))
        );
        // No 31st of February within five years; an invalid expression has no next firing.
        assert_eq!(next_cron("0 0 0 31 2 *", now), None);
        assert_eq!(next_cron("0 0 0 * * 7", now), None);
    }

    #[test]
    fn cron_day_fields_follow_the_star_rule() {
        // Both restricted: either matches (the 15th, a Tuesday, comes before the next Friday 18th).
        assert_eq!(
            next_cron("0 0 0 15 * fri", "2026-12-14T12:00:00Z"),
            Some(at("2026-12-15T00:00:00Z"))
        );
        // Day of week is `*`: both must match, so every day but only the 15th.
        assert_eq!(
            next_cron("0 0 0 15 * *", "2026-12-02T12:00:00Z"),
            Some(at("2026-12-15T00:00:00Z"))
        );
        // `*/2` is a restriction, not a star: odd days OR Mondays.
        assert_eq!(
            next_cron("0 0 0 */2 * mon", "2026-12-03T12:00:00Z"),
            Some(at("2026-12-05T00:00:00Z"))
        );
        assert_eq!(
            next_cron("0 0 0 */2 * mon", "2026-12-06T12:00:00Z"),
            Some(at("2026-12-07T00:00:00Z"))
        );
    }

    #[test]
    fn every_next_firing_counts_from_the_record_and_the_last_firing() {
        let every = Timing::Every("30s".into());
        let stored = at("2026-12-02T10:00:00.600Z"); // rounds to :01
        let next = |last, now| next_firing(&every, stored, last, at(now));
        assert_eq!(
            next(None, "2026-12-02T10:00:02Z"),
            Some(at("2026-12-02T10:00:31Z"))
        );
        assert_eq!(
            next(None, "2026-12-02T10:00:31Z"),
            Some(at("2026-12-02T10:01:01Z"))
        );
        assert_eq!(
            next(None, "2026-12-02T10:05:40Z"),
            Some(at("2026-12-02T10:06:01Z"))
        );
        // Re-anchored on a later firing (after a restart nats-server counts from it).
        let last = Some(at("2026-12-02T10:05:17.010Z"));
        assert_eq!(
            next(last, "2026-12-02T10:05:20Z"),
            Some(at("2026-12-02T10:05:47Z"))
        );
        // Always in the future, within one interval (plus the rounding of the record's time).
        for secs in 0..200 {
            let now = stored + chrono::Duration::milliseconds(secs * 137);
            let n = next_firing(&every, stored, None, now).unwrap();
            let most = chrono::Duration::milliseconds(30_500);
            assert!(n > now && n - now <= most, "{now} -> {n}");
        }
    }
}
