//! What a job author writes: a [`Handler`] per kind, registered in a [`Registry`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jobstream_core::broker::Broker;
use jobstream_core::event::{Envelope, Event};
use jobstream_core::subject::QueueName;
use jobstream_core::trace::{Correlation, TraceParent};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::start::StartGate;

/// Why an attempt did not succeed; decides what happens next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The attempt failed; the retry policy decides (back-off, then `failed` when attempts run out).
    #[error("{0}")]
    Failed(String),
    /// The attempt failed; try again after this delay (still bounded by `max_attempts`).
    #[error("{error} (retry after {after:?})")]
    RetryAfter {
        /// What went wrong.
        error: String,
        /// When to try again.
        after: Duration,
    },
    /// The job can never succeed: fail it now, no retry.
    #[error("fatal: {0}")]
    Fatal(String),
}

/// Everything a handler gets for one attempt.
#[derive(Debug, Clone, Default)]
pub struct JobContext {
    /// The job id.
    pub job_id: Uuid,
    /// The job kind.
    pub kind: String,
    /// Who submitted the job (`sub`); handlers that touch user data check it.
    pub owner: String,
    /// The job's input.
    pub payload: Value,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Cancelled when the job is cancelled (`POST /v1/jobs/{id}/cancel`), when its
    /// attempt times out, or when the worker shuts down past its grace period:
    /// handlers should stop promptly (a cancelled job's handler gets the worker's
    /// cancel grace period to return).
    pub cancel: CancellationToken,
    /// Where [`JobContext::progress`] reports go (nowhere in a context built by hand).
    pub progress: ProgressReporter,
}

impl JobContext {
    /// Reports progress (percent, clamped to 100, and a message) as a `progress` event,
    /// visible on `GET /v1/jobs/{id}`. Waits until the event is stored; a failure to
    /// store it is logged, never fails the job. Each call appends one event to the
    /// log: report on meaningful steps (a few per second at most), not per item.
    pub async fn progress(&self, percent: u8, message: impl Into<String>) {
        self.progress
            .report(Some(percent.min(100)), Some(message.into()))
            .await;
    }
}

/// Appends `progress` events of one attempt.
#[derive(Clone, Default)]
pub struct ProgressReporter {
    target: Option<Arc<ProgressTarget>>,
}

struct ProgressTarget {
    broker: Broker,
    queue: QueueName,
    job_id: Uuid,
    attempt: u32,
    correlation: Correlation,
    /// The attempt's `started`, stored before its first progress (a `progress` needs a running job).
    start: Option<Arc<StartGate>>,
}

impl std::fmt::Debug for ProgressReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressReporter")
            .field("job_id", &self.target.as_ref().map(|t| t.job_id))
            .finish()
    }
}

impl ProgressReporter {
    /// Reports to the job's stream subjects.
    pub fn new(
        broker: Broker,
        queue: QueueName,
        job_id: Uuid,
        attempt: u32,
        request_id: Option<String>,
    ) -> Self {
        ProgressReporter {
            target: Some(Arc::new(ProgressTarget {
                broker,
                queue,
                job_id,
                attempt,
                correlation: Correlation {
                    request_id,
                    trace: TraceParent::for_job(job_id),
                },
                start: None,
            })),
        }
    }

    /// Reports to the job's stream subjects, storing the attempt's `started` first.
    pub(crate) fn for_attempt(
        broker: Broker,
        queue: QueueName,
        (job_id, attempt): (Uuid, u32),
        correlation: Correlation,
        start: Arc<StartGate>,
    ) -> Self {
        ProgressReporter {
            target: Some(Arc::new(ProgressTarget {
                broker,
                queue,
                job_id,
                attempt,
                correlation,
                start: Some(start),
            })),
        }
    }

    /// Appends one `progress` event (a no-op without a target).
    pub async fn report(&self, percent: Option<u8>, message: Option<String>) {
        let Some(t) = &self.target else { return };
        if let Some(start) = &t.start
            && !start.ensure_started().await
        {
            tracing::warn!(job_id = %t.job_id, "progress not stored: the job's start could not be stored");
            return;
        }
        let env = Envelope::new(t.job_id, t.attempt, Event::Progress { percent, message });
        if let Err(e) = t
            .broker
            .publish_correlated(&env, &t.queue, &t.correlation)
            .await
        {
            tracing::warn!(job_id = %t.job_id, error = %e, "progress not stored");
        }
    }
}

/// Runs jobs of one kind.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt; the `Ok` value becomes the job's result.
    async fn run(&self, ctx: JobContext) -> Result<Value, JobError>;
}

#[async_trait]
impl<F, Fut> Handler for F
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, JobError>> + Send + 'static,
{
    async fn run(&self, ctx: JobContext) -> Result<Value, JobError> {
        (self)(ctx).await
    }
}

/// Handlers by kind name.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.kinds())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with the built-in kinds (`echo`, `sleep`, `fail`).
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        crate::builtin::register(&mut r);
        r
    }

    /// Registers (or replaces) the handler of `kind`.
    pub fn register(&mut self, kind: impl Into<String>, handler: impl Handler) -> &mut Self {
        self.handlers.insert(kind.into(), Arc::new(handler));
        self
    }

    /// The handler of `kind`.
    pub fn get(&self, kind: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(kind).cloned()
    }

    /// Registered kinds, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }
}
