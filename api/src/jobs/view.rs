//! Jobs as clients see them: the JSON shapes of the REST API (the console renders the same).

use chrono::{DateTime, Utc};
use jobstream_core::JobState;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::StoredEvent;

/// A job as clients see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// Job id (UUIDv7).
    pub id: Uuid,
    /// Kind.
    pub kind: String,
    /// Queue.
    pub queue: String,
    /// Owner (`sub` of the submitter).
    pub owner: String,
    /// `scheduled`, `queued`, `running`, `retrying`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// Priority.
    pub priority: String,
    /// Input.
    pub payload: Value,
    /// Result, once succeeded.
    pub result: Option<Value>,
    /// Latest error.
    pub error: Option<String>,
    /// Latest attempt number (0 before the first).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Per-attempt deadline, ms.
    pub timeout_ms: u64,
    /// Latest progress, percent.
    pub progress: Option<u8>,
    /// Latest progress message.
    pub progress_message: Option<String>,
    /// Queued at.
    pub created_at: DateTime<Utc>,
    /// Latest attempt started at.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Latest change at.
    pub updated_at: DateTime<Utc>,
    /// Earliest run time of a delayed job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// The idempotency key it was submitted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Every failed attempt's error, oldest first (kept across retries).
    pub errors: Vec<AttemptErrorView>,
    /// When a cancellation was requested while the job ran (it ends `cancelled` once its handler stops).
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// W3C trace id (32 hex digits) shared by every event and log line of the job: the
    /// `traceparent` it was submitted with, or one the job started. `null` only for a job
    /// read before the projection has it.
    pub trace_id: Option<String>,
    /// The workflow this job is a step of (see `GET /v1/workflows/{id}`); absent for a job submitted on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<Uuid>,
    /// Its step id in that workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
}

impl JobView {
    /// The view, saying which workflow step the job is (from
    /// [`crate::workflows::WorkflowService::steps_of_jobs`]), if any.
    pub fn with_step(mut self, step: Option<&(Uuid, String)>) -> Self {
        if let Some((workflow_id, step_id)) = step {
            self.workflow_id = Some(*workflow_id);
            self.step_id = Some(step_id.clone());
        }
        self
    }
}

/// The error of one failed attempt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttemptErrorView {
    /// Attempt number.
    pub attempt: u32,
    /// What went wrong.
    pub error: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl From<&JobState> for JobView {
    fn from(s: &JobState) -> Self {
        JobView {
            id: s.id,
            kind: s.spec.kind.clone(),
            queue: s.spec.queue.to_string(),
            owner: s.spec.owner.clone(),
            status: s.status.as_str().to_owned(),
            priority: s.spec.priority.as_str().to_owned(),
            payload: s.spec.payload.clone(),
            result: s.result.clone(),
            error: s.error.clone(),
            attempt: s.attempt,
            max_attempts: s.spec.max_attempts,
            timeout_ms: s.spec.timeout_ms,
            progress: s.progress,
            progress_message: s.progress_message.clone(),
            created_at: s.created_at,
            started_at: s.started_at,
            finished_at: s.finished_at,
            updated_at: s.updated_at,
            run_at: s.spec.run_at,
            idempotency_key: s.spec.idempotency_key.clone(),
            errors: s
                .errors
                .iter()
                .map(|e| AttemptErrorView {
                    attempt: e.attempt,
                    error: e.error.clone(),
                    at: e.at,
                })
                .collect(),
            cancel_requested_at: s.cancel_requested_at,
            workflow_id: None,
            step_id: None,
            trace_id: s.trace_id.clone(),
        }
    }
}

/// One stored event of a job.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryEvent {
    /// Stream sequence.
    pub seq: u64,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Attempt it belongs to.
    pub attempt: u32,
    /// Event id.
    pub event_id: Uuid,
    /// The event's own fields.
    pub data: Value,
    /// On an outcome of an attempt that stored no `started` (the fast path): the worker
    /// that ran it and when it began, `{"worker", "started_at"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub run: Option<Value>,
}

/// A job's history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobHistory {
    /// The job.
    pub job_id: Uuid,
    /// Its events, in stream order.
    pub events: Vec<HistoryEvent>,
}

impl From<&StoredEvent> for HistoryEvent {
    fn from(e: &StoredEvent) -> Self {
        let env = &e.envelope;
        let mut data = serde_json::to_value(&env.event).unwrap_or(Value::Null);
        if let Value::Object(o) = &mut data {
            o.remove("type");
        }
        HistoryEvent {
            seq: e.seq,
            event_type: env.event_type().as_str().to_owned(),
            at: env.at,
            attempt: env.attempt,
            event_id: env.event_id,
            data,
            run: env.run.as_ref().and_then(|r| serde_json::to_value(r).ok()),
        }
    }
}

/// The stored batch.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchAccepted {
    /// Ids of the jobs, in the order they were given.
    pub ids: Vec<Uuid>,
}
