//! The wire format: one closed, versioned event enum inside an envelope.
//!
//! Events are JSON objects with an explicit `type` tag and schema version `v`,
//! never Rust type names. Renaming a variant means keeping its old tag as an alias.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::subject::QueueName;

/// Current schema version written into every envelope.
pub const SCHEMA_VERSION: u16 = 1;

/// Header carrying the request id that caused an event, so logs of api,
/// worker and projector can be joined.
pub const REQUEST_ID_HEADER: &str = "Jobstream-Request-Id";
/// W3C trace context header.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Every event of a job, wrapped with what all events share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Schema version of this envelope.
    pub v: u16,
    /// Unique id of the event (UUIDv7); also its `Nats-Msg-Id` for de-duplication.
    pub event_id: Uuid,
    /// The job the event belongs to (UUIDv7).
    pub job_id: Uuid,
    /// When the event happened (microsecond precision, so SQL stores it exactly).
    pub at: DateTime<Utc>,
    /// Attempt number the event belongs to (0 before the first run).
    pub attempt: u32,
    /// Where and since when the attempt this event ends ran. Set by workers on
    /// outcome events (`succeeded`, `retrying`, `failed`, `cancelled`), because a
    /// short attempt stores no `started` event (see [`AttemptRun`]); absent on
    /// every other event and on events written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<AttemptRun>,
    /// The event itself, tagged by `type`.
    #[serde(flatten)]
    pub event: Event,
}

/// The attempt an outcome event ends: which worker ran it, and since when.
///
/// # Why outcomes carry it (the two-write fast path)
/// A job that succeeds on its first attempt costs two stream writes: `queued` and
/// its outcome. The worker does not store `started` before it runs a job; it stores
/// it only once the attempt has run past a threshold or first reports progress, so
/// `running` stays visible for jobs that run long. The outcome then says where and
/// when the attempt ran, and the fold takes `started_at` from it, so the history and
/// the projection stay complete without the extra write. What keeps a cancel stored
/// before the start winning is the outcome append itself: it is conditional on the
/// job's last sequence, so an event stored meanwhile (a cancel request) makes the
/// worker fold again and decide, instead of overwriting it.
///
/// JSON: `"run": {"worker": "worker-12", "started_at": "2026-11-22T14:01:49.667129Z"}`.
/// Readers that do not know the field ignore it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRun {
    /// Id of the worker that ran the attempt.
    pub worker: String,
    /// When the attempt began (the `at` of its `started` event, when one was stored).
    pub started_at: DateTime<Utc>,
    /// The worker stopped the attempt at its `timeout_ms` deadline (what the `timeout`
    /// attempt outcome of the metrics counts); absent when it did not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
}

/// Relative urgency of a job within its queue.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Runs after everything else.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Runs before normal and low jobs.
    High,
}

impl Priority {
    /// The wire/SQL name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }

    /// Parses the wire/SQL name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "low" => Some(Priority::Low),
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            _ => None,
        }
    }
}

/// Everything needed to run and to project a job; carried by the `queued` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Stable name of the job kind (e.g. `echo`), never a Rust type name.
    pub kind: String,
    /// Queue the job runs on.
    pub queue: QueueName,
    /// Subject (`sub` claim) of the user who submitted the job.
    pub owner: String,
    /// Input of the handler.
    pub payload: Value,
    /// Priority within the queue.
    #[serde(default)]
    pub priority: Priority,
    /// Attempts before the job is failed for good.
    pub max_attempts: u32,
    /// Deadline of one attempt, in milliseconds.
    pub timeout_ms: u64,
    /// Earliest time to run the job; `None` runs it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// Client-chosen key: the same key from the same owner yields the same job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// How long a finished job's result is kept, in milliseconds; `None` uses the projector's TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_ttl_ms: Option<u64>,
    /// Back-off between attempts (the kind's default, unless the submission chose one);
    /// `None` (events written before it existed) uses the worker's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<RetryBackoff>,
}

/// Exponential back-off between attempts: `base_ms·2^(attempt-1)`, capped at `max_ms`, with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryBackoff {
    /// Delay after the first failed attempt, in milliseconds.
    pub base_ms: u64,
    /// Longest delay, in milliseconds.
    pub max_ms: u64,
}

/// What happened to a job. A closed set: consumers match it exhaustively.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Event {
    /// The job was accepted and waits for a worker.
    #[serde(rename = "queued")]
    Queued(JobSpec),
    /// A worker began an attempt.
    #[serde(rename = "started")]
    Started {
        /// Id of the worker running the attempt.
        worker: String,
    },
    /// The handler reported progress.
    #[serde(rename = "progress")]
    Progress {
        /// Percentage done, 0..=100.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        percent: Option<u8>,
        /// Free-form progress message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// The attempt failed and the job will be tried again after a delay.
    #[serde(rename = "retrying")]
    Retrying {
        /// Why the attempt failed.
        error: String,
        /// Delay before the next attempt, in milliseconds.
        retry_in_ms: u64,
    },
    /// The job finished with a result.
    #[serde(rename = "succeeded")]
    Succeeded {
        /// The handler's result.
        result: Value,
    },
    /// The job failed for good (attempts exhausted or a fatal error).
    #[serde(rename = "failed")]
    Failed {
        /// Why the last attempt failed.
        error: String,
    },
    /// The job was cancelled and will not run (further).
    #[serde(rename = "cancelled")]
    Cancelled {
        /// Why, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The job was accepted to run later (at `run_at`): a JetStream message schedule
    /// produces its `queued` event then.
    #[serde(rename = "scheduled")]
    Scheduled(JobSpec),
    /// A client asked to cancel the job. A job that is not running is cancelled by
    /// this event alone; a running one keeps running until its worker stops the
    /// handler and appends `cancelled`.
    #[serde(rename = "cancel_requested")]
    CancelRequested {
        /// Why, when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Who asked (`sub` of the caller).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// A client asked to run a failed or cancelled job again, with a fresh set of
    /// attempts. Published on the job's priority lane, so workers pick it up like a
    /// `queued` event (the spec is read from the job's `queued` event).
    #[serde(rename = "retry_requested")]
    RetryRequested {
        /// The job's priority (chooses the lane subject).
        #[serde(default)]
        priority: Priority,
        /// Who asked (`sub` of the caller).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
}

/// The `type` of an event, also the last token of its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// See [`Event::Queued`].
    Queued,
    /// See [`Event::Started`].
    Started,
    /// See [`Event::Progress`].
    Progress,
    /// See [`Event::Retrying`].
    Retrying,
    /// See [`Event::Succeeded`].
    Succeeded,
    /// See [`Event::Failed`].
    Failed,
    /// See [`Event::Cancelled`].
    Cancelled,
    /// See [`Event::Scheduled`].
    Scheduled,
    /// See [`Event::CancelRequested`].
    CancelRequested,
    /// See [`Event::RetryRequested`].
    RetryRequested,
}

impl EventType {
    /// Every event type, in lifecycle order.
    pub const ALL: [EventType; 10] = [
        EventType::Queued,
        EventType::Started,
        EventType::Progress,
        EventType::Retrying,
        EventType::Succeeded,
        EventType::Failed,
        EventType::Cancelled,
        EventType::Scheduled,
        EventType::CancelRequested,
        EventType::RetryRequested,
    ];

    /// The wire name (the `type` tag and the subject's last token).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Queued => "queued",
            EventType::Started => "started",
            EventType::Progress => "progress",
            EventType::Retrying => "retrying",
            EventType::Succeeded => "succeeded",
            EventType::Failed => "failed",
            EventType::Cancelled => "cancelled",
            EventType::Scheduled => "scheduled",
            EventType::CancelRequested => "cancel_requested",
            EventType::RetryRequested => "retry_requested",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether this event ends the job.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            EventType::Succeeded | EventType::Failed | EventType::Cancelled
        )
    }
}

impl Event {
    /// The event's `type`.
    pub fn event_type(&self) -> EventType {
        match self {
            Event::Queued(_) => EventType::Queued,
            Event::Started { .. } => EventType::Started,
            Event::Progress { .. } => EventType::Progress,
            Event::Retrying { .. } => EventType::Retrying,
            Event::Succeeded { .. } => EventType::Succeeded,
            Event::Failed { .. } => EventType::Failed,
            Event::Cancelled { .. } => EventType::Cancelled,
            Event::Scheduled(_) => EventType::Scheduled,
            Event::CancelRequested { .. } => EventType::CancelRequested,
            Event::RetryRequested { .. } => EventType::RetryRequested,
        }
    }

    /// The priority lane of an event that makes a job runnable (`queued`,
    /// `retry_requested`); `None` for every other event.
    pub fn lane(&self) -> Option<Priority> {
        match self {
            Event::Queued(spec) => Some(spec.priority),
            Event::RetryRequested { priority, .. } => Some(*priority),
            _ => None,
        }
    }
}

/// Why bytes could not be read as an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON of the envelope's shape.
    #[error("malformed event: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Written by a newer schema than this build understands.
    #[error("event schema version {0} is newer than supported version {SCHEMA_VERSION}")]
    UnsupportedVersion(u16),
    /// A stored message that is not a job event (a schedule, a timer, an idempotency record).
    #[error("not a job event: {0}")]
    NotAJobEvent(String),
}

impl Envelope {
    /// A new event of `job_id`, stamped now with a fresh UUIDv7.
    pub fn new(job_id: Uuid, attempt: u32, event: Event) -> Self {
        Envelope {
            v: SCHEMA_VERSION,
            event_id: Uuid::now_v7(),
            job_id,
            at: now(),
            attempt,
            run: None,
            event,
        }
    }

    /// The same event, saying which attempt run it ends (see [`AttemptRun`]).
    pub fn with_run(mut self, run: AttemptRun) -> Self {
        self.run = Some(run);
        self
    }

    /// The event's `type`.
    pub fn event_type(&self) -> EventType {
        self.event.event_type()
    }

    /// JSON bytes for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing a tree of owned strings, numbers and JSON values cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads an event from the wire, refusing unknown schema versions.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let env: Envelope = serde_json::from_slice(bytes)?;
        if env.v > SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedVersion(env.v));
        }
        Ok(env)
    }
}

/// The current time at the precision every store keeps (microseconds).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_has_type_tag_and_version() {
        let env = Envelope::new(
            Uuid::now_v7(),
            1,
            Event::Succeeded {
                result: serde_json::json!({"a": 1}),
            },
        );
        let v: Value = serde_json::from_slice(&env.to_bytes()).unwrap();
        assert_eq!(v["type"], "succeeded");
        assert_eq!(v["v"], 1);
        assert_eq!(v["result"]["a"], 1);
        assert_eq!(Envelope::decode(&env.to_bytes()).unwrap(), env);
    }

    #[test]
    fn unknown_types_and_future_versions_are_refused() {
        let id = Uuid::now_v7();
        let bad = format!(
            r#"{{"v":1,"event_id":"{id}","job_id":"{id}","at":"2026-01-01T00:00:00Z","attempt":0,"type":"Exploded"}}"#
        );
        assert!(Envelope::decode(bad.as_bytes()).is_err());
        let future = format!(
            r#"{{"v":9,"event_id":"{id}","job_id":"{id}","at":"2026-01-01T00:00:00Z","attempt":0,"type":"failed","error":"x"}}"#
        );
        assert!(matches!(
            Envelope::decode(future.as_bytes()),
            Err(DecodeError::UnsupportedVersion(9))
        ));
    }

    #[test]
    fn event_type_names_match_serde_tags() {
        for t in EventType::ALL {
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
    }
}
