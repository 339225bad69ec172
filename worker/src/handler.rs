//! What a job author writes: a [`Handler`] per kind, registered in a [`Registry`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

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
#[derive(Debug, Clone)]
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
    /// Cancelled when the worker shuts down past its grace period; handlers should stop promptly.
    pub cancel: CancellationToken,
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
