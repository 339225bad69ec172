//! Every subject family of the `JOBS` stream, and the hashing that turns free text
//! (owners, keys, names) into safe subject tokens:
//!
//! | family | subject | built by |
//! |---|---|---|
//! | job events | `jobs.<queue>.<job_id>.<event>` | [`for_event`], [`job_event`] |
//! | fired periodic jobs | `jobs.<queue>.sched-<key>.queued[-lane]` | [`schedule_target`] |
//! | schedule records | `schedules.<key>` | [`schedule_key`], [`schedule`] |
//! | delayed-job timers | `timers.<queue>.<job_id>` | [`timer`] |
//! | idempotency records | `idem.<hash>` | [`idempotency`] |
//! | user events | `users.<user_id>.<event>` | [`user_event`] |
//! | queue control (pause) | `queues.<queue>` | [`queue_control`] |
//! | workflow events | `workflows.<workflow_id>.<event>` | [`workflow_event`] |
//!
//! [`stream_subjects`] lists them all; nothing else builds a subject by hand.
//!
//! Priority lanes: the events that make a job runnable (`queued`,
//! `retry_requested`) carry the job's lane in their event token:
//! `queued` / `queued-high` / `queued-low` (normal has no suffix). Each lane
//! has its own worker consumer, and workers pull higher lanes first. Every
//! other event's token is its plain type name.
//!
//! Every token that goes into a subject is validated here, so a queue name can
//! never smuggle a `.`, `*` or `>` into a subject and widen a filter.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use sha2::{Digest, Sha256};

use crate::event::{Event, EventType, Priority};
use crate::user::UserEventType;

/// Prefix of every job event subject.
pub const PREFIX: &str = "jobs";

/// Why a subject token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The token is empty.
    #[error("must not be empty")]
    Empty,
    /// The token is longer than allowed.
    #[error("must be at most {max} characters")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// The token contains a character outside `[A-Za-z0-9_-]`.
    #[error("may contain only letters, digits, '-' and '_' (found {0:?})")]
    BadChar(char),
}

/// Checks a subject token: 1..=64 of `[A-Za-z0-9_-]`, so never `.`, `*`, `>` or whitespace.
pub fn validate_token(token: &str) -> Result<(), TokenError> {
    const MAX: usize = 64;
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    if token.len() > MAX {
        return Err(TokenError::TooLong { max: MAX });
    }
    match token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        Some(c) => Err(TokenError::BadChar(c)),
        None => Ok(()),
    }
}

/// A validated queue name (a subject token).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueName(String);

impl QueueName {
    /// The queue jobs go to when none is given.
    pub fn default_queue() -> Self {
        QueueName("default".to_owned())
    }

    /// Parses a queue name, refusing anything that is not a safe subject token.
    pub fn parse(name: &str) -> Result<Self, TokenError> {
        validate_token(name)?;
        Ok(QueueName(name.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for QueueName {
    type Error = TokenError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        validate_token(&value)?;
        Ok(QueueName(value))
    }
}

impl From<QueueName> for String {
    fn from(q: QueueName) -> String {
        q.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Subject of one event of one job.
pub fn job_event(queue: &QueueName, job_id: Uuid, event: EventType) -> String {
    format!("{PREFIX}.{queue}.{job_id}.{}", event.as_str())
}

/// Filter for the `queued` events of one queue (what a worker consumes).
pub fn queued_in(queue: &QueueName) -> String {
    format!("{PREFIX}.{queue}.*.{}", EventType::Queued.as_str())
}

/// Filter for every event of one job, whatever its queue.
pub fn of_job(job_id: Uuid) -> String {
    format!("{PREFIX}.*.{job_id}.*")
}

/// Filter for every job event (what the projector consumes).
pub fn all_events() -> String {
    format!("{PREFIX}.>")
}

/// Priority lanes, most urgent first: the order in which workers pull.
pub const LANES: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

/// Durable consumer name of one priority lane of a queue, shared by all its workers:
/// `worker-<queue>` for the normal lane, `worker_high-<queue>` and `worker_low-<queue>`
/// for the others (the `_` cannot collide with a normal lane's `worker-…`). The API
/// reads these consumers for admission control and `/readyz`.
pub fn lane_consumer(queue: &QueueName, lane: Priority) -> String {
    match lane {
        Priority::Normal => format!("worker-{queue}"),
        other => format!("worker_{}-{queue}", other.as_str()),
    }
}

/// Name of the stream holding a limited queue's concurrency tokens, beside the job stream.
pub fn slots_stream(job_stream: &str) -> String {
    format!("{job_stream}_SLOTS")
}

/// Durable name of a limited queue's slots consumer (its tokens).
pub fn slots_consumer(queue: &str) -> String {
    format!("slots-{queue}")
}

/// The queue of a worker lane consumer ([`lane_consumer`]); `None` for any other consumer.
pub fn lane_consumer_queue(name: &str) -> Option<&str> {
    let (prefix, queue) = name.split_once('-')?;
    matches!(prefix, "worker" | "worker_high" | "worker_low").then_some(queue)
}

/// Whether a durable consumer is a worker lane ([`lane_consumer`]).
pub fn is_lane_consumer(name: &str) -> bool {
    name.starts_with("worker-") || name.starts_with("worker_")
}

/// Suffix of a lane in a runnable event's token (`""` for normal, so normal
/// jobs keep the plain `queued` subject).
pub fn lane_suffix(lane: Priority) -> &'static str {
    match lane {
        Priority::Low => "-low",
        Priority::Normal => "",
        Priority::High => "-high",
    }
}

/// The event token of `event` on `lane` (the lane only counts for runnable events).
pub fn event_token(event: EventType, lane: Option<Priority>) -> String {
    match lane {
        Some(l) => format!("{}{}", event.as_str(), lane_suffix(l)),
        None => event.as_str().to_owned(),
    }
}

/// Splits an event token into its type and lane (`queued-high` → `(Queued, Some(High))`).
pub fn parse_event_token(token: &str) -> Option<(EventType, Option<Priority>)> {
    if let Some(t) = EventType::parse(token) {
        return Some((t, None));
    }
    let (name, lane) = token.rsplit_once('-')?;
    let lane = Priority::parse(lane).filter(|l| *l != Priority::Normal)?;
    let t = EventType::parse(name)?;
    matches!(t, EventType::Queued | EventType::RetryRequested).then_some((t, Some(lane)))
}

/// Subject of `event` of job `job_id`: runnable events go to their priority lane.
/// Every publisher uses this, so a job always lands on the lane its priority names.
pub fn for_event(queue: &QueueName, job_id: Uuid, event: &Event) -> String {
    format!(
        "{PREFIX}.{queue}.{job_id}.{}",
        event_token(event.event_type(), event.lane())
    )
}

/// The lane of a runnable event's subject (`jobs.<queue>.<id>.queued-high` → `High`);
/// `None` for any other subject.
pub fn runnable_lane(subject: &str) -> Option<Priority> {
    let token = subject.rsplit('.').next()?;
    match parse_event_token(token)? {
        (EventType::Queued | EventType::RetryRequested, lane) => {
            Some(lane.unwrap_or(Priority::Normal))
        }
        _ => None,
    }
}

/// Filters of one lane of one queue: its `queued` and `retry_requested` events
/// (what a lane's worker consumer takes).
pub fn runnable_in(queue: &QueueName, lane: Priority) -> Vec<String> {
    [EventType::Queued, EventType::RetryRequested]
        .into_iter()
        .map(|t| format!("{PREFIX}.{queue}.*.{}", event_token(t, Some(lane))))
        .collect()
}

/// Filter of the cancel requests of one queue (workers listen on it to stop running handlers).
pub fn cancel_requests_in(queue: &QueueName) -> String {
    format!("{PREFIX}.{queue}.*.{}", EventType::CancelRequested.as_str())
}

/// Subject of the concurrency tokens ("slots") of one queue, on the slots stream
/// beside the job stream `stream` (not an event subject: outside `jobs.>`).
pub fn slots_of(stream: &str, queue: &QueueName) -> String {
    format!("slots.{stream}.{queue}")
}

/// Every slots subject beside the job stream `stream`.
pub fn all_slots(stream: &str) -> String {
    format!("slots.{stream}.>")
}

/// Subject of the replay commands of the projector `projector` over the job stream
/// `stream` (a NATS request, not stored: outside the stream's subjects).
pub fn replay_commands(stream: &str, projector: &str) -> String {
    format!("jobstream.replay.{stream}.{projector}")
}

/// Subject of the verify commands of the projector `projector` over the job stream
/// `stream` (a NATS request, not stored: outside the stream's subjects).
pub fn verify_commands(stream: &str, projector: &str) -> String {
    format!("jobstream.verify.{stream}.{projector}")
}

/// The parts of a job event subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSubject<'a> {
    /// The queue token.
    pub queue: &'a str,
    /// The job id token.
    pub job_id: &'a str,
    /// The event token.
    pub event: &'a str,
}

/// Splits a job event subject into its parts; `None` if it does not have the shape.
pub fn parse(subject: &str) -> Option<ParsedSubject<'_>> {
    let mut parts = subject.split('.');
    let (prefix, queue, job_id, event) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if prefix != PREFIX || parts.next().is_some() {
        return None;
    }
    Some(ParsedSubject {
        queue,
        job_id,
        event,
    })
}

/// Subject prefix of delayed-job timers (messages held by nats-server's scheduler, not events).
pub const TIMERS_PREFIX: &str = "timers";
/// Subject prefix of idempotency records (one per owner and key).
pub const IDEMPOTENCY_PREFIX: &str = "idem";
/// Subject prefix of schedule records.
pub const SCHEDULES_PREFIX: &str = "schedules";
/// Subject prefix of user events.
pub const USERS_PREFIX: &str = "users";
/// Subject prefix of queue control records (see [`crate::queue`]).
pub const QUEUES_PREFIX: &str = "queues";
/// Subject prefix of workflow events.
pub const WORKFLOWS_PREFIX: &str = "workflows";

/// Lowercase hex of the first `n` bytes of SHA-256 over `parts` (NUL-separated, so
/// `("ab", "c")` and `("a", "bc")` differ): a safe subject token from any text.
pub fn hash_hex(parts: &[&str], n: usize) -> String {
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update([0u8]);
        }
        h.update(p.as_bytes());
    }
    h.finalize()
        .iter()
        .take(n)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Subject of the timer that produces a delayed job's `queued` event at its `run_at`.
pub fn timer(queue: &QueueName, job_id: Uuid) -> String {
    format!("{TIMERS_PREFIX}.{queue}.{job_id}")
}

/// Subject of the idempotency record of `owner`'s `key` (hashed: any key, never a collision between owners).
pub fn idempotency(owner: &str, key: &str) -> String {
    let hash = hash_hex(&["idempotency", owner, key], 16);
    format!("{IDEMPOTENCY_PREFIX}.{hash}")
}

/// The stream key of `owner`'s schedule `name`: 32 hex characters, a safe subject token.
pub fn schedule_key(owner: &str, name: &str) -> String {
    hash_hex(&["schedule", owner, name], 16)
}

/// Subject holding schedule `key`'s current record.
pub fn schedule(key: &str) -> String {
    format!("{SCHEDULES_PREFIX}.{key}")
}

/// Filter for every schedule record.
pub fn all_schedules() -> String {
    format!("{SCHEDULES_PREFIX}.>")
}

/// The job-id token of the subject fired jobs of schedule `key` are produced on.
pub fn fired_token(key: &str) -> String {
    format!("sched-{key}")
}

/// The schedule key of a fired job's subject (`jobs.<queue>.sched-<key>.queued…`);
/// `None` for any other subject.
pub fn fired_schedule_key(subject: &str) -> Option<&str> {
    parse(subject)?.job_id.strip_prefix("sched-")
}

/// Where nats-server publishes the jobs schedule `key` fires (`Nats-Schedule-Target`):
/// the `queued` subject of the schedule job's queue and priority lane.
pub fn schedule_target(queue: &QueueName, key: &str, lane: Priority) -> String {
    format!(
        "{PREFIX}.{queue}.{}.{}",
        fired_token(key),
        event_token(EventType::Queued, Some(lane))
    )
}

/// Subject of one event of one user.
pub fn user_event(user_id: Uuid, t: UserEventType) -> String {
    format!("{USERS_PREFIX}.{user_id}.{}", t.as_str())
}

/// Filter for every event of one user.
pub fn of_user(user_id: Uuid) -> String {
    format!("{USERS_PREFIX}.{user_id}.*")
}

/// Filter for every user event.
pub fn all_user_events() -> String {
    format!("{USERS_PREFIX}.>")
}

/// Subject holding a queue's current control record (paused or resumed): one message,
/// rolled up on each change (see [`crate::queue`]).
pub fn queue_control(queue: &QueueName) -> String {
    format!("{QUEUES_PREFIX}.{queue}")
}

/// Filter for every queue's control record.
pub fn all_queue_controls() -> String {
    format!("{QUEUES_PREFIX}.>")
}

/// Name of the KV bucket of the workers registry beside the job stream `stream`
/// (not a stream subject: heartbeats are not history, see [`crate::queue`]).
pub fn workers_bucket(stream: &str) -> String {
    format!("{stream}_workers")
}

/// Subject of one event (`submitted`, `cancel_requested`, `retry_requested`) of one workflow.
pub fn workflow_event(workflow_id: Uuid, token: &str) -> String {
    format!("{WORKFLOWS_PREFIX}.{workflow_id}.{token}")
}

/// Filter for every workflow event.
pub fn all_workflow_events() -> String {
    format!("{WORKFLOWS_PREFIX}.>")
}

/// Every subject the stream holds: job events, schedules, timers, idempotency records,
/// users, queue control, workflows.
pub fn stream_subjects() -> Vec<String> {
    vec![
        all_events(),
        all_schedules(),
        format!("{TIMERS_PREFIX}.>"),
        format!("{IDEMPOTENCY_PREFIX}.>"),
        all_user_events(),
        all_queue_controls(),
        all_workflow_events(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_refuse_wildcards_dots_and_whitespace() {
        for bad in ["a.b", "*", ">", "a b", "a\tb", "", "é"] {
            assert!(validate_token(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["default", "emails-high", "q_1"] {
            assert_eq!(validate_token(good), Ok(()));
        }
        assert!(validate_token(&"x".repeat(65)).is_err());
    }

    #[test]
    fn subjects_round_trip() {
        let q = QueueName::parse("mail").unwrap();
        let id = Uuid::now_v7();
        let s = job_event(&q, id, EventType::Succeeded);
        let p = parse(&s).unwrap();
        assert_eq!((p.queue, p.event), ("mail", "succeeded"));
        assert_eq!(p.job_id, id.to_string());
        assert_eq!(queued_in(&q), "jobs.mail.*.queued");
    }

    #[test]
    fn runnable_events_carry_their_lane() {
        let q = QueueName::parse("mail").unwrap();
        let id = Uuid::now_v7();
        let retry = |priority| Event::RetryRequested { priority, by: None };
        assert_eq!(
            for_event(&q, id, &retry(Priority::High)),
            format!("jobs.mail.{id}.retry_requested-high")
        );
        assert_eq!(
            for_event(&q, id, &retry(Priority::Normal)),
            format!("jobs.mail.{id}.retry_requested")
        );
        let done = Event::Failed { error: "x".into() };
        assert_eq!(for_event(&q, id, &done), format!("jobs.mail.{id}.failed"));
        assert_eq!(
            runnable_in(&q, Priority::Low),
            ["jobs.mail.*.queued-low", "jobs.mail.*.retry_requested-low"]
        );
        assert_eq!(runnable_in(&q, Priority::Normal)[0], queued_in(&q));
        for lane in LANES {
            assert_eq!(lane_consumer_queue(&lane_consumer(&q, lane)), Some("mail"));
        }
        assert_eq!(lane_consumer_queue("projector"), None);
        // A doorbell's ring names the lane the worker then waits on.
        for lane in LANES {
            assert_eq!(runnable_lane(&for_event(&q, id, &retry(lane))), Some(lane));
        }
        assert_eq!(runnable_lane(&for_event(&q, id, &done)), None);
        for lane in LANES {
            for t in [EventType::Queued, EventType::RetryRequested] {
                let token = event_token(t, Some(lane));
                assert_eq!(
                    parse_event_token(&token),
                    Some((t, (lane != Priority::Normal).then_some(lane)))
                );
            }
        }
        assert_eq!(
            parse_event_token("cancel_requested"),
            Some((EventType::CancelRequested, None))
        );
        assert_eq!(parse_event_token("failed-high"), None);
        assert_eq!(parse_event_token("queued-normal"), None);
        // Lane subjects still have the four-token shape the projector and history reads rely on.
        let s = for_event(&q, id, &retry(Priority::Low));
        assert_eq!(parse(&s).unwrap().event, "retry_requested-low");
    }

    #[test]
    fn hashed_tokens_are_safe_and_owner_scoped() {
        assert_ne!(idempotency("alice", "k"), idempotency("bob", "k"));
        let key = schedule_key("alice", "n");
        assert_eq!(validate_token(&key), Ok(()));
        let q = QueueName::parse("mail").unwrap();
        assert_eq!(
            schedule_target(&q, &key, Priority::High),
            format!("jobs.mail.sched-{key}.queued-high")
        );
        let fired = schedule_target(&q, &key, Priority::High);
        assert_eq!(fired_schedule_key(&fired), Some(key.as_str()));
        assert_eq!(
            fired_schedule_key(&format!("jobs.mail.{}.queued", Uuid::nil())),
            None
        );
        assert!(idempotency("a", "k.*>").starts_with("idem."));
        assert_eq!(validate_token(&idempotency("a", "k")[5..]), Ok(()));
    }
}
