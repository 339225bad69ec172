//! Replay control, shared by whoever asks for a replay (the API, the CLI) and the
//! projector that runs it.
//!
//! A replay is asked for with a NATS request on [`subject::replay_commands`]; the
//! projector serving that subject runs it (one at a time) and publishes its progress
//! into the key-value bucket [`BUCKET`], one entry per stream and projector
//! ([`progress_key`]). Anyone reads the progress from there, so every API instance
//! reports the same replay. The entry is also the lock: a replay starts only by
//! creating it, or by replacing (compare-and-set on its revision) one that is finished
//! or abandoned (not updated for [`ABANDONED_AFTER`]).

use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::broker::{Broker, BrokerError};
use crate::subject;

/// How long finished jobs stay in the tables when no one says (the seeds' `MAX_JOB_TTL`):
/// the projector's sweep, and what a replay or verify treats as swept.
pub const DEFAULT_JOB_TTL: Duration = Duration::from_secs(24 * 3600);
/// Key-value bucket of replay progress (and the one-replay-at-a-time lock).
pub const BUCKET: &str = "jobstream_replay";
/// Name (durable consumer and checkpoint) of the projector when none is given.
pub const DEFAULT_PROJECTOR: &str = "projector";
/// Queue group of the projectors serving replay commands (one instance answers each).
pub const REPLAY_QUEUE_GROUP: &str = "projector";
/// How often a running replay publishes its progress.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(500);
/// A replay whose progress has not moved for this long is abandoned (its process died):
/// another may start.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(30);
/// How long a requester waits for the projector's answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", content = "at", rename_all = "snake_case")]
pub enum ReplayStart {
    /// The stream's first stored event.
    Beginning,
    /// This stream sequence (events before it are ignored).
    Seq(u64),
    /// The first event stored at or after this time.
    Since(DateTime<Utc>),
}

/// A request to replay the stream into the live projection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayCommand {
    /// Where to start.
    pub start: ReplayStart,
    /// Finished jobs older than this many seconds are swept from the result.
    pub job_ttl_secs: u64,
    /// Discard an interrupted replay's shadow instead of resuming it.
    pub fresh: bool,
}

/// The projector's answer to a [`ReplayCommand`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReplayReply {
    /// The replay started; its first progress.
    Started(ProgressSnapshot),
    /// Another replay is running; its progress.
    Busy(ProgressSnapshot),
    /// The replay could not start (the progress bucket cannot be written …).
    Failed {
        /// Why.
        error: String,
    },
}

/// A point-in-time view of a replay's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgressSnapshot {
    /// `starting`, `folding`, `sweeping`, `swapping`, `done`, `interrupted` or `failed`.
    pub phase: String,
    /// Last stream sequence folded.
    pub position: u64,
    /// Sequence the replay folds up to.
    pub target: u64,
    /// Events read so far.
    pub events: u64,
    /// Events per second since the start.
    pub events_per_sec: f64,
    /// Estimated seconds left.
    pub eta_secs: Option<f64>,
    /// Whether the replay has ended (done, interrupted or failed).
    pub finished: bool,
    /// Why it failed.
    pub error: Option<String>,
    /// What it did, once done or interrupted.
    pub summary: Option<ReplaySummary>,
    /// When this snapshot was published (absent on a snapshot that was not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl ProgressSnapshot {
    /// Whether a new replay may take this one's place: it ended, or its process stopped
    /// publishing (died) [`ABANDONED_AFTER`] ago.
    pub fn is_over(&self, now: DateTime<Utc>) -> bool {
        self.finished
            || self.updated_at.is_none_or(|t| {
                now.signed_duration_since(t).to_std().unwrap_or_default() > ABANDONED_AFTER
            })
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplaySummary {
    /// First sequence folded in this run.
    pub from_seq: u64,
    /// Checkpoint of the result.
    pub checkpoint: u64,
    /// Events read from the stream in this run.
    pub events: u64,
    /// Events applied to a job.
    pub applied: u64,
    /// Events the state machine refused or that belong to unknown (expired) jobs.
    pub ignored: u64,
    /// Messages that did not decode.
    pub undecodable: u64,
    /// Events the database refused, recorded in `rejected_events`.
    pub rejected: u64,
    /// Finished jobs past the TTL removed before the swap.
    pub swept: u64,
    /// Jobs in the result.
    pub jobs: u64,
    /// Whether an interrupted replay was resumed.
    pub resumed: bool,
    /// Whether this run was interrupted (run again to resume).
    pub interrupted: bool,
    /// Seconds taken.
    pub elapsed_secs: f64,
}

/// The progress entry of the replays of `projector` over `stream`.
pub fn progress_key(stream: &str, projector: &str) -> String {
    format!("{stream}.{projector}")
}

/// Opens the progress bucket, creating it (file storage, the stream's replicas) if needed.
pub async fn open_bucket(broker: &Broker) -> Result<kv::Store, BrokerError> {
    let js = broker.jetstream();
    if let Ok(store) = js.get_key_value(BUCKET).await {
        return Ok(store);
    }
    let replicas = broker
        .stream()
        .await?
        .get_info()
        .await
        .map_err(|e| BrokerError::Read(e.to_string()))?
        .config
        .num_replicas
        .max(1);
    js.create_key_value(kv::Config {
        bucket: BUCKET.to_owned(),
        description: "jobstream: progress of replays (one entry per stream and projector)"
            .to_owned(),
        history: 1,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| BrokerError::Read(format!("replay bucket: {e}")))
}

/// The progress of the last (or running) replay of `projector`; `None` when none has run.
pub async fn read_progress(
    broker: &Broker,
    projector: &str,
) -> Result<Option<ProgressSnapshot>, BrokerError> {
    let store = open_bucket(broker).await?;
    let entry = store
        .get(progress_key(broker.stream_name(), projector))
        .await
        .map_err(|e| BrokerError::Read(format!("replay progress: {e}")))?;
    entry
        .map(|v| {
            serde_json::from_slice(&v)
                .map_err(|e| BrokerError::Read(format!("replay progress does not decode: {e}")))
        })
        .transpose()
}

/// Why a replay (or verify) request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No projector serves these commands for this stream.
    #[error("no projector is running to execute it")]
    NoProjector,
    /// The projector did not answer in time, or NATS failed.
    #[error("the projector did not answer: {0}")]
    Unanswered(String),
}

/// Asks the projector `projector` to run `command`.
pub async fn request(
    broker: &Broker,
    projector: &str,
    command: &ReplayCommand,
) -> Result<ReplayReply, RequestError> {
    let subject = subject::replay_commands(broker.stream_name(), projector);
    command_request(broker, subject, command).await
}

/// Sends a projector command (JSON) on `subject` and decodes its JSON reply: the
/// request both replay and verify commands make.
pub(crate) async fn command_request<C: Serialize, R: serde::de::DeserializeOwned>(
    broker: &Broker,
    subject: String,
    command: &C,
) -> Result<R, RequestError> {
    use async_nats::RequestErrorKind;
    let body = serde_json::to_vec(command).unwrap_or_default();
    let asked = broker.client().request(subject, body.into());
    let msg = match tokio::time::timeout(REQUEST_TIMEOUT, asked).await {
        Err(_) => return Err(RequestError::Unanswered("timed out".into())),
        Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => {
            return Err(RequestError::NoProjector);
        }
        Ok(Err(e)) => return Err(RequestError::Unanswered(e.to_string())),
        Ok(Ok(m)) => m,
    };
    serde_json::from_slice(&msg.payload).map_err(|e| RequestError::Unanswered(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_is_over_when_finished_or_abandoned() {
        let now = Utc::now();
        let running = ProgressSnapshot {
            updated_at: Some(now),
            ..Default::default()
        };
        assert!(!running.is_over(now));
        let finished = ProgressSnapshot {
            finished: true,
            ..running.clone()
        };
        assert!(finished.is_over(now));
        let later = now + chrono::Duration::from_std(ABANDONED_AFTER * 2).unwrap();
        assert!(running.is_over(later));
    }

    #[test]
    fn commands_and_replies_keep_their_shape_on_the_wire() {
        let c = ReplayCommand {
            start: ReplayStart::Seq(7),
            job_ttl_secs: 60,
            fresh: true,
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["start"], serde_json::json!({"from": "seq", "at": 7}));
        let r: ReplayReply = serde_json::from_value(
            serde_json::to_value(ReplayReply::Busy(ProgressSnapshot::default())).unwrap(),
        )
        .unwrap();
        assert!(matches!(r, ReplayReply::Busy(_)));
    }
}
