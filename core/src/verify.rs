//! Verify control, shared by whoever asks for a verify (the API) and the projector that
//! runs it: the sibling of [`replay`].
//!
//! A verify is asked for with a NATS request on [`subject::verify_commands`]; the projector
//! serving that subject folds the stream afresh in memory, compares the result with its
//! live projection, and publishes the state (`running`, then the result or the error) into
//! the replay bucket ([`replay::BUCKET`]) under [`state_key`], beside the replay progress.
//! Like a replay's progress, the entry is the lock: one verify per projector at a time,
//! whichever instance runs it. A running verify republishes its state every
//! [`replay::PUBLISH_EVERY`], so one whose process died is abandoned after
//! [`replay::ABANDONED_AFTER`].
//!
//! A verify is refused while a replay of the same projector runs: it would compare a
//! projection that is about to be replaced, and both would compete for the same stream
//! reads.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::broker::{Broker, BrokerError};
use crate::replay::{self, ABANDONED_AFTER, ProgressSnapshot, RequestError};
use crate::subject;

/// Most differences (and, separately, rejected events) a published result lists; the
/// counts are always complete.
pub const MAX_LISTED: usize = 50;

/// A request to verify the live projection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerifyCommand {
    /// Finished jobs older than this many seconds count as rightly swept; absent: the
    /// projector's own job TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_ttl_secs: Option<u64>,
}

/// The projector's answer to a [`VerifyCommand`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum VerifyReply {
    /// The verify started; its first state.
    Started(VerifyState),
    /// Another verify is running; its state.
    Busy(VerifyState),
    /// A replay of this projector is running; its progress.
    ReplayRunning(ProgressSnapshot),
    /// The verify could not start (the bucket cannot be written …).
    Failed {
        /// Why.
        error: String,
    },
}

/// Where a verify is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerifyStatus {
    /// Folding and comparing.
    #[default]
    Running,
    /// Finished: see the result.
    Done,
    /// Stopped on an error (see `error`).
    Failed,
}

/// A verify's state as published: running, or its result, or why it failed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VerifyState {
    /// `running`, `done` or `failed`.
    pub status: VerifyStatus,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended (done or failed).
    pub finished_at: Option<DateTime<Utc>>,
    /// What it found, once done.
    pub result: Option<VerifyResult>,
    /// Why it failed.
    pub error: Option<String>,
    /// When this state was published (absent on a state that was not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl VerifyState {
    /// A verify starting at `now`.
    pub fn running(now: DateTime<Utc>) -> Self {
        VerifyState {
            started_at: now,
            ..Default::default()
        }
    }

    /// Whether a new verify may take this one's place: it ended, or its process stopped
    /// publishing (died) [`ABANDONED_AFTER`] ago.
    pub fn is_over(&self, now: DateTime<Utc>) -> bool {
        self.status != VerifyStatus::Running
            || self.updated_at.is_none_or(|t| {
                now.signed_duration_since(t).to_std().unwrap_or_default() > ABANDONED_AFTER
            })
    }
}

/// What a finished verify found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VerifyResult {
    /// Checkpoint of the projection compared (the fold went exactly this far).
    pub checkpoint: u64,
    /// Whether the projection equals a fresh fold of the stream.
    pub clean: bool,
    /// Rows in the projection.
    pub projected: u64,
    /// Jobs in the fresh fold.
    pub folded: u64,
    /// Finished jobs past the TTL that the projection has (rightly) swept.
    pub swept: u64,
    /// Rows whose events have all expired from the stream: not comparable.
    pub beyond_retention: u64,
    /// How many jobs (or workflow rows) differ.
    pub difference_count: u64,
    /// The first [`MAX_LISTED`] of them.
    pub differences: Vec<Difference>,
    /// How many events the projection recorded as rejected, up to its checkpoint.
    pub rejected_count: u64,
    /// The first [`MAX_LISTED`] of them.
    pub rejected: Vec<RejectedEvent>,
    /// Jobs not compared because one of their events was rejected.
    pub rejected_jobs: u64,
}

/// One job (or workflow, or workflow step) whose projected row differs from a fresh fold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Difference {
    /// Job id (`workflow <id>` / `workflow <id> step <step>` for workflow rows).
    pub job_id: String,
    /// What differs: column names, or `missing from the projection` / `not in a fresh fold`.
    pub fields: Vec<String>,
}

/// An event the projection could not hold (a dead letter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RejectedEvent {
    /// Stream sequence.
    pub seq: u64,
    /// Subject it was stored under.
    pub subject: String,
    /// Job (or schedule key, or user id), when it decoded.
    pub job_id: Option<String>,
    /// Event type, when it decoded.
    pub event_type: Option<String>,
    /// Why the database refused it.
    pub error: String,
    /// When it was rejected.
    pub rejected_at: DateTime<Utc>,
}

/// The verify entry of `projector` over `stream` in the replay bucket (beside the replay
/// progress, [`replay::progress_key`]).
pub fn state_key(stream: &str, projector: &str) -> String {
    format!("{stream}.{projector}.verify")
}

/// The state of the last (or running) verify of `projector`; `None` when none has run.
pub async fn read_state(
    broker: &Broker,
    projector: &str,
) -> Result<Option<VerifyState>, BrokerError> {
    let store = replay::open_bucket(broker).await?;
    let entry = store
        .get(state_key(broker.stream_name(), projector))
        .await
        .map_err(|e| BrokerError::Read(format!("verify state: {e}")))?;
    entry
        .map(|v| {
            serde_json::from_slice(&v)
                .map_err(|e| BrokerError::Read(format!("verify state does not decode: {e}")))
        })
        .transpose()
}

/// Asks the projector `projector` to run `command`.
pub async fn request(
    broker: &Broker,
    projector: &str,
    command: &VerifyCommand,
) -> Result<VerifyReply, RequestError> {
    let subject = subject::verify_commands(broker.stream_name(), projector);
    replay::command_request(broker, subject, command).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verify_is_over_when_ended_or_abandoned() {
        let now = Utc::now();
        let running = VerifyState {
            updated_at: Some(now),
            ..VerifyState::running(now)
        };
        assert!(!running.is_over(now));
        let failed = VerifyState {
            status: VerifyStatus::Failed,
            ..running.clone()
        };
        assert!(failed.is_over(now));
        let later = now + chrono::Duration::from_std(ABANDONED_AFTER * 2).unwrap();
        assert!(running.is_over(later));
    }

    #[test]
    fn states_and_replies_keep_their_shape_on_the_wire() {
        let now = Utc::now();
        let v = serde_json::to_value(VerifyState::running(now)).unwrap();
        assert_eq!(v["status"], "running");
        assert!(v["result"].is_null());
        let r: VerifyReply = serde_json::from_value(
            serde_json::to_value(VerifyReply::ReplayRunning(ProgressSnapshot::default())).unwrap(),
        )
        .unwrap();
        assert!(matches!(r, VerifyReply::ReplayRunning(_)));
        let c: VerifyCommand = serde_json::from_str("{}").unwrap();
        assert_eq!(c.job_ttl_secs, None);
        assert_ne!(
            state_key("JOBS", "projector"),
            replay::progress_key("JOBS", "projector")
        );
    }
}
