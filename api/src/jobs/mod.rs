//! The jobs service: every operation on jobs, between the callers (REST routes, the
//! console, and later the CLI) and the stream.
//!
//! Operations take typed inputs and the [`Caller`](crate::auth::Caller), and return domain results
//! ([`JobState`]) or a [`JobsError`]; they know nothing of HTTP. The REST glue is in
//! `routes/` (`jobs.rs`, `batch.rs`, `job_actions.rs`, `job_events.rs`).
//!
//! | operation | what it does |
//! |---|---|
//! | [`JobService::submit`] | validates a [`SubmitJob`] into a `JobSpec` and stores its first event |
//! | [`JobService::submit_batch`] | up to [`MAX_BATCH`] jobs in one atomic batch |
//! | [`JobService::get`] | one job: the projection, or the stream before the projector caught up |
//! | [`JobService::list`] | a page of jobs from the projection |
//! | [`JobService::cancel`] / [`JobService::retry`] | append a request after folding the job's events |
//! | [`JobService::history`] | the job's events, read from the stream |
//! | [`JobService::wait`] | until the job finishes or a timeout passes |
//! | [`JobService::bulk`] / [`JobService::matching_ids`] | retry or cancel many jobs, or all matching a filter |
//! | [`JobService::overview`] | per-queue counts, last hour's throughput and failures |
//!
//! Layout: [`input`] (request bodies and their validation), [`store`] (the messages
//! that store a submission: delayed jobs, idempotency records), `read.rs` (get, list,
//! history, wait), `actions.rs` (cancel, retry), [`view`] (jobs as clients see them),
//! [`admission`] (refusing submissions a queue cannot finish in bounded time), [`bulk`]
//! (actions over many jobs), [`stats`] (the console's overview figures).

mod actions;
pub mod admission;
pub mod bulk;
pub mod input;
mod read;
pub mod stats;
pub mod store;
pub mod view;

use jobstream_core::JobState;
use jobstream_core::broker::BrokerError;
use jobstream_core::catalogue::FieldError;
use uuid::Uuid;

pub use input::{
    CancelJob, MAX_ATTEMPTS_LIMIT, MAX_BACKOFF_MS, MAX_BATCH, MAX_DELAY_MS, MAX_KEY_LEN,
    MAX_REASON_LEN, MAX_TIMEOUT_MS, SubmitBatch, SubmitJob,
};
pub use read::{
    DEFAULT_WAIT, FilterParams, JobFilter, MAX_FILTER_TEXT, MAX_WAIT, StoredEvent, wait_timeout,
};
pub use view::{AttemptErrorView, BatchAccepted, HistoryEvent, JobHistory, JobView};

use crate::error::ApiError;
use crate::state::AppState;

/// Why a job operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// The input is invalid; every bad field is named.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// No such job, or not the caller's.
    #[error("{0}")]
    NotFound(String),
    /// The job's state does not allow the operation (cancelling a finished job).
    #[error("{0}")]
    Conflict(String),
    /// The job kept changing while the operation decided; the caller may retry.
    #[error("{0}")]
    Busy(String),
    /// A queue's backlog is over its bound: nothing was stored; retry after the delay.
    #[error("{reason}")]
    Overloaded {
        /// Which bound, and by how much.
        reason: String,
        /// When a retry has a fair chance.
        retry_after: std::time::Duration,
    },
    /// The stream refused or did not answer.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The projection could not be read.
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
    /// A bug or an unexpected failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl JobsError {
    /// An invalid input, naming one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        JobsError::Invalid(vec![FieldError::new(field, message)])
    }

    fn no_job(id: impl std::fmt::Display) -> Self {
        JobsError::NotFound(format!("no job {id}"))
    }
}

impl From<admission::Shed> for JobsError {
    fn from(s: admission::Shed) -> Self {
        JobsError::Overloaded {
            reason: s.reason,
            retry_after: s.retry_after,
        }
    }
}

impl From<JobsError> for ApiError {
    fn from(e: JobsError) -> Self {
        match e {
            JobsError::Invalid(errors) => ApiError::Unprocessable(errors),
            JobsError::NotFound(m) => ApiError::NotFound(m),
            JobsError::Conflict(m) => ApiError::Conflict(m),
            JobsError::Busy(m) => ApiError::Unavailable(m),
            JobsError::Overloaded {
                reason,
                retry_after,
            } => ApiError::TooManyRequests {
                detail: reason,
                retry_after,
            },
            JobsError::Broker(e) => e.into(),
            JobsError::Database(e) => e.into(),
            JobsError::Unexpected(e) => ApiError::Unexpected(e),
        }
    }
}

/// A job id as a caller gives it: anything that is not a UUID names no job.
pub fn parse_id(id: &str) -> Result<Uuid, JobsError> {
    Uuid::parse_str(id).map_err(|_| JobsError::no_job(id))
}

/// What [`JobService::submit`] stored.
#[derive(Debug)]
pub enum Submitted {
    /// A new job, in its first state (`queued`, or `scheduled` until its `run_at`).
    New(Box<JobState>),
    /// The idempotency key was used before: that job, as it is now.
    Existing(Box<JobState>),
}

/// What [`JobService::submit_batch`] stored.
#[derive(Debug)]
pub struct BatchStored {
    /// Ids of the jobs, in the order given.
    pub ids: Vec<Uuid>,
    /// Whether the idempotency key was used before (the ids are that batch's).
    pub existing: bool,
}

/// The jobs service: cheap to clone, built from the API's state.
#[derive(Clone)]
pub struct JobService {
    /// The API's state: one `Arc`, so building the service per request costs one clone.
    state: AppState,
}

impl JobService {
    /// The service over the API's broker, projection, kinds catalogue and live tail.
    pub fn new(state: &AppState) -> Self {
        JobService {
            state: state.clone(),
        }
    }
}
