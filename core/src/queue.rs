//! Queue control (pause / resume) and the workers registry: what operators change
//! about a queue, and what workers say about themselves.
//!
//! ## Pausing is a record in the stream
//! A queue's pause state lives in the `JOBS` stream as ONE message on
//! `queues.<queue>` ([`crate::subject::queue_control`]), a [`QueueRecord`]. Why a
//! subject family of its own, not a job event: pausing belongs to no job, and a
//! worker must learn the state of its queue at start with one direct get of the last
//! message on one subject, then follow it live on that subject alone. Each record is
//! published with `Nats-Rollup: sub`, so the subject holds only the current state
//! (bounded, whatever the number of toggles), and `Nats-TTL: never`, so the stream's
//! `max_age` never silently resumes a paused queue. Being in the stream, the state
//! survives restarts, and the projector folds it into the `queue_states` table in the
//! same transaction as the job rows (a replay rebuilds it).
//!
//! ## Workers registry: a KV bucket with a TTL
//! Every worker puts a [`WorkerRecord`] under its id in the KV bucket
//! [`crate::subject::workers_bucket`] every heartbeat. Why a KV bucket and not
//! heartbeat events in the stream: heartbeats are not history (nothing to replay or
//! project), they would swamp the job log, and the bucket's `max_age` makes a dead
//! worker's entry expire by itself, with no sweeper and no process that must survive.
//! A worker whose last heartbeat is older than [`WorkerRecord::stale_after`] is
//! shown as stale until its entry expires ([`WORKERS_TTL`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{DecodeError, SCHEMA_VERSION};
use crate::subject::QueueName;

/// Subject prefix of queue control records.
pub use crate::subject::QUEUES_PREFIX as PREFIX;

/// What happened to a queue. A closed set with explicit `type` tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum QueueEvent {
    /// Workers take no new jobs from the queue (running ones finish).
    #[serde(rename = "queue_paused")]
    Paused {
        /// `sub` of the admin who paused it.
        by: String,
    },
    /// Workers take jobs from the queue again.
    #[serde(rename = "queue_resumed")]
    Resumed {
        /// `sub` of the admin who resumed it.
        by: String,
    },
}

impl QueueEvent {
    /// Whether the queue is paused after this event.
    pub fn paused(&self) -> bool {
        matches!(self, QueueEvent::Paused { .. })
    }

    /// Who made the change.
    pub fn by(&self) -> &str {
        match self {
            QueueEvent::Paused { by } | QueueEvent::Resumed { by } => by,
        }
    }
}

/// A queue control event with what every record shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRecord {
    /// Schema version.
    pub v: u16,
    /// Unique id of the record (UUIDv7, also its `Nats-Msg-Id`).
    pub event_id: Uuid,
    /// The queue.
    pub queue: QueueName,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The event, tagged by `type`.
    #[serde(flatten)]
    pub event: QueueEvent,
}

impl QueueRecord {
    /// A new record stamped now.
    pub fn new(queue: QueueName, event: QueueEvent) -> Self {
        QueueRecord {
            v: SCHEMA_VERSION,
            event_id: Uuid::now_v7(),
            queue,
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
        let rec: QueueRecord = serde_json::from_slice(bytes)?;
        if rec.v > SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedVersion(rec.v));
        }
        Ok(rec)
    }
}

/// How long a worker's registry entry outlives its last heartbeat (the bucket's `max_age`).
pub const WORKERS_TTL: Duration = Duration::from_secs(600);
/// Heartbeats a worker may miss before it is shown as stale.
pub const MISSED_HEARTBEATS: u32 = 3;

/// What a worker says about itself in the registry, every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerRecord {
    /// The worker's id (also its key in the bucket).
    pub id: String,
    /// Host name of its machine.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The queues it takes jobs from.
    pub queues: Vec<String>,
    /// Jobs it runs at once.
    pub concurrency: usize,
    /// Jobs running now.
    pub in_flight: usize,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it wrote this record.
    pub heartbeat_at: DateTime<Utc>,
    /// Its heartbeat interval, in milliseconds (readers derive staleness from it).
    pub heartbeat_ms: u64,
}

impl WorkerRecord {
    /// How old its last heartbeat may be before the worker counts as stale.
    pub fn stale_after(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.max(1)) * MISSED_HEARTBEATS
    }

    /// Whether, at `now`, the worker missed [`MISSED_HEARTBEATS`] heartbeats.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        let age = (now - self.heartbeat_at).to_std().unwrap_or_default();
        age > self.stale_after()
    }

    /// A registry key for a worker id: KV keys refuse some characters ids may have.
    pub fn key(id: &str) -> String {
        id.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_records_round_trip_with_explicit_tags() {
        let q = QueueName::parse("mail").unwrap();
        let rec = QueueRecord::new(q, QueueEvent::Paused { by: "ops".into() });
        let json: serde_json::Value = serde_json::from_slice(&rec.to_bytes()).unwrap();
        assert_eq!(json["type"], "queue_paused");
        assert_eq!(json["queue"], "mail");
        assert_eq!(QueueRecord::decode(&rec.to_bytes()).unwrap(), rec);
        assert!(rec.event.paused());
        assert!(!QueueEvent::Resumed { by: "x".into() }.paused());
    }

    #[test]
    fn a_worker_is_stale_after_missed_heartbeats() {
        let now = crate::event::now();
        let mut w = WorkerRecord {
            id: "w".into(),
            host: "h".into(),
            pid: 1,
            queues: vec!["default".into()],
            concurrency: 4,
            in_flight: 0,
            started_at: now,
            heartbeat_at: now,
            heartbeat_ms: 1000,
        };
        assert!(!w.is_stale(now + chrono::Duration::milliseconds(2500)));
        assert!(w.is_stale(now + chrono::Duration::milliseconds(3500)));
        w.heartbeat_ms = 10_000;
        assert!(!w.is_stale(now + chrono::Duration::milliseconds(3500)));
        assert_eq!(WorkerRecord::key("worker 1.host"), "worker_1_host");
    }
}
