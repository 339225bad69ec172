//! The queues service: pausing and resuming queues, the queues overview, and the
//! workers registry, between the callers (REST routes, the console, the CLI) and
//! NATS / the projection.
//!
//! Operations take the [`Caller`] and return domain views or a [`QueuesError`]; they
//! know nothing of HTTP. The REST glue is in `routes/queues.rs`.
//!
//! | operation | what it does |
//! |---|---|
//! | [`QueueService::set_paused`] ([`pause`](QueueService::pause), [`resume`](QueueService::resume)) | store the queue's control record (admins) |
//! | [`QueueService::list`] | every known queue: depth, oldest waiting, paused, consumer counts, limit |
//! | [`QueueService::job_counts`] | per queue, jobs by status and oldest waiting, over the caller's jobs (any caller) |
//! | [`QueueService::workers`] | every worker in the registry, stale ones marked |
//!
//! The design of both records (why a stream subject for pausing, a KV bucket for
//! heartbeats) is in [`jobstream_core::queue`].

mod overview;
mod workers;

use chrono::{DateTime, Utc};
use jobstream_core::atomic::{Outgoing, ROLLUP_HEADER, TTL_HEADER};
use jobstream_core::broker::{Broker, BrokerError};
use jobstream_core::catalogue::FieldError;
use jobstream_core::event::REQUEST_ID_HEADER;
use jobstream_core::queue::{QueueEvent, QueueRecord};
use jobstream_core::subject::{self, QueueName};
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use overview::{ConsumerCounts, QueueCounts, QueueView};
pub use workers::WorkerView;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueuesError {
    /// The input is invalid; every bad field is named.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// The caller may not do this (not an admin).
    #[error("{0}")]
    Forbidden(String),
    /// The stream or the registry refused or did not answer.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The projection could not be read.
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
}

impl From<QueuesError> for ApiError {
    fn from(e: QueuesError) -> Self {
        match e {
            QueuesError::Invalid(errors) => ApiError::Unprocessable(errors),
            QueuesError::Forbidden(m) => ApiError::Forbidden(m),
            QueuesError::Broker(e) => e.into(),
            QueuesError::Database(e) => e.into(),
        }
    }
}

/// `Forbidden` unless the caller is an admin: queues and workers are operators' business.
fn require_admin(caller: &Caller) -> Result<(), QueuesError> {
    if caller.is_admin {
        Ok(())
    } else {
        Err(QueuesError::Forbidden(
            "queues and workers need the admin role".into(),
        ))
    }
}

/// A queue name as a caller gives it.
pub fn parse_queue(name: &str) -> Result<QueueName, QueuesError> {
    QueueName::parse(name)
        .map_err(|e| QueuesError::Invalid(vec![FieldError::new("name", e.to_string())]))
}

/// A queue's control state after a pause or resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueControlView {
    /// The queue.
    pub queue: String,
    /// Whether its workers take no new jobs.
    pub paused: bool,
    /// `sub` of the admin who made the change.
    pub changed_by: String,
    /// When.
    pub changed_at: DateTime<Utc>,
    /// Stream sequence of the stored record.
    pub stream_seq: u64,
}

/// The queues service: cheap to clone, built from the API's state.
#[derive(Clone)]
pub struct QueueService {
    broker: Broker,
    db: DatabaseConnection,
}

impl QueueService {
    /// The service over the API's broker and projection.
    pub fn new(state: &AppState) -> Self {
        QueueService {
            broker: state.broker.clone(),
            db: state.db.clone(),
        }
    }

    /// Pauses a queue (admins): its workers take no new jobs, running ones finish.
    pub async fn pause(
        &self,
        caller: &Caller,
        queue: &str,
        request_id: Option<&str>,
    ) -> Result<QueueControlView, QueuesError> {
        self.set_paused(caller, queue, true, request_id).await
    }

    /// Resumes a queue (admins): its workers take jobs again.
    pub async fn resume(
        &self,
        caller: &Caller,
        queue: &str,
        request_id: Option<&str>,
    ) -> Result<QueueControlView, QueuesError> {
        self.set_paused(caller, queue, false, request_id).await
    }

    /// Pauses or resumes a queue (admins): stores its control record as the only message
    /// of its subject before it returns. Storing the state it already has is harmless.
    pub async fn set_paused(
        &self,
        caller: &Caller,
        queue: &str,
        paused: bool,
        request_id: Option<&str>,
    ) -> Result<QueueControlView, QueuesError> {
        require_admin(caller)?;
        let queue = parse_queue(queue)?;
        let by = caller.sub.clone();
        let event = if paused {
            QueueEvent::Paused { by }
        } else {
            QueueEvent::Resumed { by }
        };
        let rec = QueueRecord::new(queue.clone(), event);
        let mut msg = Outgoing::new(subject::queue_control(&queue), rec.to_bytes())
            .with_header("Nats-Msg-Id", &rec.event_id.to_string())
            // Only the current state stays on the subject, and max_age never drops it.
            .with_header(ROLLUP_HEADER, "sub")
            .with_header(TTL_HEADER, "never");
        if let Some(id) = request_id {
            msg = msg.with_header(REQUEST_ID_HEADER, id);
        }
        let ack = self.broker.publish_atomic(vec![msg]).await?;
        tracing::info!(%queue, paused = rec.event.paused(), stream_seq = ack.last_seq, "queue control stored");
        Ok(QueueControlView {
            queue: queue.to_string(),
            paused: rec.event.paused(),
            changed_by: rec.event.by().to_owned(),
            changed_at: rec.at,
            stream_seq: ack.last_seq,
        })
    }
}
