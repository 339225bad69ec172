//! `queued_jobs`: one row per job, its current state.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One job's current state.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "queued_jobs")]
pub struct Model {
    /// Job id (UUIDv7, text).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Queue.
    pub queue: String,
    /// Kind name.
    pub kind: String,
    /// Owner's subject.
    pub owner: String,
    /// Status name (see `JobStatus`).
    pub status: String,
    /// Priority name.
    pub priority: String,
    /// Input.
    pub payload: Json,
    /// Result when succeeded.
    pub result: Option<Json>,
    /// Latest error.
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    /// Latest attempt number.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Per-attempt deadline, ms.
    pub timeout_ms: i64,
    /// Earliest run time.
    pub run_at: Option<DateTimeUtc>,
    /// Client idempotency key.
    pub idempotency_key: Option<String>,
    /// Result retention, ms.
    pub result_ttl_ms: Option<i64>,
    /// Latest progress percentage.
    pub progress: Option<i16>,
    /// Latest progress message.
    #[sea_orm(column_type = "Text", nullable)]
    pub progress_message: Option<String>,
    /// Queued at.
    pub created_at: DateTimeUtc,
    /// Latest attempt started at.
    pub started_at: Option<DateTimeUtc>,
    /// Finished at.
    pub finished_at: Option<DateTimeUtc>,
    /// Latest event at.
    pub updated_at: DateTimeUtc,
    /// Stream sequence of the latest applied event.
    pub last_seq: i64,
    /// Every failed attempt's error, oldest first (a JSON array of `{attempt, error, at}`).
    pub errors: Option<Json>,
    /// When a client asked to cancel the job while it ran.
    pub cancel_requested_at: Option<DateTimeUtc>,
    /// The job's trace id (32 hex digits), from its first event's `traceparent` header.
    pub trace_id: Option<String>,
}

/// No relations yet.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// A row that does not hold a valid job state (hand-edited or corrupt).
#[derive(Debug, thiserror::Error)]
#[error("row {id}: invalid {field}")]
pub struct InvalidRow {
    /// Row id.
    pub id: String,
    /// Offending column.
    pub field: &'static str,
}

impl From<&jobstream_core::JobState> for Model {
    fn from(s: &jobstream_core::JobState) -> Self {
        Model {
            id: s.id.to_string(),
            queue: s.spec.queue.to_string(),
            kind: s.spec.kind.clone(),
            owner: s.spec.owner.clone(),
            status: s.status.as_str().to_owned(),
            priority: s.spec.priority.as_str().to_owned(),
            payload: s.spec.payload.clone(),
            result: s.result.clone(),
            error: s.error.clone(),
            attempt: i32::try_from(s.attempt).unwrap_or(i32::MAX),
            max_attempts: i32::try_from(s.spec.max_attempts).unwrap_or(i32::MAX),
            timeout_ms: i64::try_from(s.spec.timeout_ms).unwrap_or(i64::MAX),
            run_at: s.spec.run_at,
            idempotency_key: s.spec.idempotency_key.clone(),
            result_ttl_ms: s
                .spec
                .result_ttl_ms
                .map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
            progress: s.progress.map(i16::from),
            progress_message: s.progress_message.clone(),
            created_at: s.created_at,
            started_at: s.started_at,
            finished_at: s.finished_at,
            updated_at: s.updated_at,
            last_seq: i64::try_from(s.last_seq).unwrap_or(i64::MAX),
            errors: (!s.errors.is_empty())
                .then(|| serde_json::to_value(&s.errors).unwrap_or_default()),
            cancel_requested_at: s.cancel_requested_at,
            trace_id: s.trace_id.clone(),
        }
    }
}

impl TryFrom<Model> for jobstream_core::JobState {
    type Error = InvalidRow;

    fn try_from(m: Model) -> Result<Self, InvalidRow> {
        use jobstream_core::event::{JobSpec, Priority};
        use jobstream_core::subject::QueueName;
        let bad = |field| InvalidRow {
            id: m.id.clone(),
            field,
        };
        Ok(jobstream_core::JobState {
            id: uuid::Uuid::parse_str(&m.id).map_err(|_| bad("id"))?,
            spec: JobSpec {
                kind: m.kind,
                queue: QueueName::parse(&m.queue).map_err(|_| bad("queue"))?,
                owner: m.owner,
                payload: m.payload,
                priority: Priority::parse(&m.priority).ok_or_else(|| bad("priority"))?,
                max_attempts: u32::try_from(m.max_attempts).map_err(|_| bad("max_attempts"))?,
                timeout_ms: u64::try_from(m.timeout_ms).map_err(|_| bad("timeout_ms"))?,
                run_at: m.run_at,
                idempotency_key: m.idempotency_key,
                result_ttl_ms: m.result_ttl_ms.map(|v| u64::try_from(v).unwrap_or(0)),
                // Only the worker needs it; it reads the job's `queued` event.
                backoff: None,
            },
            status: jobstream_core::JobStatus::parse(&m.status).ok_or_else(|| bad("status"))?,
            attempt: u32::try_from(m.attempt).map_err(|_| bad("attempt"))?,
            result: m.result,
            error: m.error,
            progress: m.progress.and_then(|p| u8::try_from(p).ok()),
            progress_message: m.progress_message,
            created_at: m.created_at,
            started_at: m.started_at,
            finished_at: m.finished_at,
            updated_at: m.updated_at,
            last_seq: u64::try_from(m.last_seq).map_err(|_| bad("last_seq"))?,
            errors: match m.errors {
                Some(v) => serde_json::from_value(v).map_err(|_| bad("errors"))?,
                None => Vec::new(),
            },
            cancel_requested_at: m.cancel_requested_at,
            trace_id: m.trace_id,
        })
    }
}
