//! Cancelling running jobs: the registry of running jobs' tokens, the listener
//! on the queues' `cancel_requested` subjects, and a stream fallback for a
//! missed notification.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jobstream_core::broker::Broker;
use jobstream_core::event::{Envelope, Event};
use jobstream_core::subject::{self, QueueName};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::run::Shared;

/// Cancellation handles of the jobs this worker runs, by job id.
pub(crate) type Running = Mutex<HashMap<Uuid, CancellationToken>>;

/// Cancels the token of a running job when its `cancel_requested` event is stored.
/// (A job that is not running is cancelled by the event itself: no worker starts it.)
pub(crate) async fn listen_for_cancellations(shared: Arc<Shared>, queues: Vec<QueueName>) {
    let mut subs = Vec::new();
    for queue in &queues {
        match shared
            .broker
            .client()
            .subscribe(subject::cancel_requests_in(queue))
            .await
        {
            Ok(s) => subs.push(s),
            Err(e) => tracing::error!(%queue, error = %e, "cannot listen for cancel requests"),
        }
    }
    let mut requests = futures::stream::select_all(subs);
    while let Some(msg) = requests.next().await {
        let Ok(env) = Envelope::decode(&msg.payload) else {
            continue;
        };
        let token = shared
            .running
            .lock()
            .ok()
            .and_then(|r| r.get(&env.job_id).cloned());
        if let Some(token) = token {
            tracing::info!(job_id = %env.job_id, "cancel requested: stopping the handler");
            token.cancel();
        }
    }
}

/// Completes once a `cancel_requested` of the job is stored after `since`: a
/// fallback for a cancel request whose core NATS notification this worker missed
/// (say, while reconnecting). Looks every `every`.
pub(crate) async fn cancel_stored_after(
    broker: &Broker,
    queue: &QueueName,
    job_id: Uuid,
    since: u64,
    every: Duration,
) {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let subject = subject::for_event(
        queue,
        job_id,
        &Event::CancelRequested {
            reason: None,
            by: None,
        },
    );
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        let Ok(stream) = broker.stream().await else {
            continue;
        };
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) if m.sequence > since => return,
            Ok(_) => {}
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {}
            Err(e) => tracing::debug!(error = %e, "cannot look for a cancel request"),
        }
    }
}

/// Removes a job from the running map when its attempt ends, however it ends.
pub(crate) struct RunningGuard<'a> {
    /// The registry.
    pub(crate) running: &'a Running,
    /// The job.
    pub(crate) job_id: Uuid,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut r) = self.running.lock() {
            r.remove(&self.job_id);
        }
    }
}
