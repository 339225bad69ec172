//! The worker process: pull, run, report, ack.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self, AckKind,
    consumer::{self, AckPolicy, DeliverPolicy, pull},
};
use futures::StreamExt;
use jobstream_core::broker::{Broker, BrokerError};
use jobstream_core::event::{Envelope, Event, JobSpec, REQUEST_ID_HEADER};
use jobstream_core::subject::{self, QueueName};
use rand::Rng;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::handler::{JobContext, JobError, Registry};

/// Exponential back-off with jitter between attempts.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay before the second attempt.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// Delay after failed attempt `attempt` (1-based): `base·2^(attempt-1)`, capped, ±20 % jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.max);
        let jitter = rand::rng().random_range(0.8..=1.2);
        capped.mul_f64(jitter)
    }
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Identity reported in `started` events and logs.
    pub id: String,
    /// Queues to take jobs from.
    pub queues: Vec<QueueName>,
    /// Jobs this process runs at once (across its queues).
    pub concurrency: usize,
    /// Time the server waits for an ack (or progress) before redelivering.
    pub ack_wait: Duration,
    /// Jobs running at once per queue across all workers (the consumer's `max_ack_pending`).
    pub queue_max_in_flight: i64,
    /// Back-off between attempts.
    pub backoff: Backoff,
    /// On shutdown: how long running jobs may finish before they are cancelled.
    pub shutdown_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: format!("worker-{}", std::process::id()),
            queues: vec![QueueName::default_queue()],
            concurrency: 32,
            ack_wait: Duration::from_secs(30),
            queue_max_in_flight: 10_000,
            backoff: Backoff::default(),
            shutdown_grace: Duration::from_secs(25),
        }
    }
}

/// Errors that stop the worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A consumer could not be created.
    #[error("consumer for queue {queue}: {reason}")]
    Consumer {
        /// The queue.
        queue: String,
        /// Why.
        reason: String,
    },
}

/// Durable consumer name of a queue, shared by all workers of that queue.
pub fn consumer_name(queue: &QueueName) -> String {
    format!("worker-{queue}")
}

struct Shared {
    broker: Broker,
    registry: Registry,
    config: WorkerConfig,
    /// Cancelled when the grace period is over: running handlers must stop.
    hard_stop: CancellationToken,
}

/// A worker bound to its queues' consumers.
pub struct Worker {
    shared: Arc<Shared>,
    consumers: Vec<(QueueName, consumer::Consumer<pull::Config>)>,
}

impl Worker {
    /// Creates (or reuses) one durable consumer per queue.
    pub async fn build(
        broker: Broker,
        registry: Registry,
        config: WorkerConfig,
    ) -> Result<Self, WorkerError> {
        let stream = broker.stream().await.map_err(|e| WorkerError::Consumer {
            queue: "*".into(),
            reason: e.to_string(),
        })?;
        let mut consumers = Vec::new();
        for queue in &config.queues {
            let name = consumer_name(queue);
            let c = stream
                .get_or_create_consumer(
                    &name,
                    pull::Config {
                        durable_name: Some(name.clone()),
                        description: Some(format!("jobstream workers of queue {queue}")),
                        filter_subject: subject::queued_in(queue),
                        deliver_policy: DeliverPolicy::All,
                        ack_policy: AckPolicy::Explicit,
                        ack_wait: config.ack_wait,
                        // Attempts are counted by the worker against each job's own max_attempts.
                        max_deliver: -1,
                        max_ack_pending: config.queue_max_in_flight,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| WorkerError::Consumer {
                    queue: queue.to_string(),
                    reason: e.to_string(),
                })?;
            consumers.push((queue.clone(), c));
        }
        Ok(Worker {
            shared: Arc::new(Shared {
                broker,
                registry,
                config,
                hard_stop: CancellationToken::new(),
            }),
            consumers,
        })
    }

    /// Runs until `shutdown`; then stops pulling, lets running jobs finish within the
    /// grace period, cancels the rest (their messages are redelivered to other workers).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let permits = Arc::new(Semaphore::new(self.shared.config.concurrency));
        let mut jobs: JoinSet<()> = JoinSet::new();
        let mut pullers = JoinSet::new();
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<(jetstream::Message, OwnedSemaphorePermit)>(1);
        for (queue, consumer) in self.consumers {
            pullers.spawn(pull_loop(
                queue,
                consumer,
                permits.clone(),
                tx.clone(),
                shutdown.clone(),
            ));
        }
        drop(tx);
        tracing::info!(worker = %self.shared.config.id, queues = ?self.shared.config.queues, concurrency = self.shared.config.concurrency, "worker started");
        loop {
            tokio::select! {
                received = rx.recv() => match received {
                    Some((msg, permit)) => {
                        let shared = self.shared.clone();
                        jobs.spawn(async move {
                            process(&shared, msg).await;
                            drop(permit);
                        });
                    }
                    None => break,
                },
                Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
            }
        }
        while pullers.join_next().await.is_some() {}
        let grace = self.shared.config.shutdown_grace;
        tracing::info!(
            running = jobs.len(),
            grace_ms = grace.as_millis() as u64,
            "worker stopping: waiting for running jobs"
        );
        if tokio::time::timeout(grace, async { while jobs.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!(
                running = jobs.len(),
                "grace period over: cancelling running jobs"
            );
            self.shared.hard_stop.cancel();
            if tokio::time::timeout(Duration::from_secs(5), async {
                while jobs.join_next().await.is_some() {}
            })
            .await
            .is_err()
            {
                jobs.abort_all();
            }
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// Pulls batches sized to the free local permits, so no message waits in a buffer
/// while its ack timer runs.
async fn pull_loop(
    queue: QueueName,
    consumer: consumer::Consumer<pull::Config>,
    permits: Arc<Semaphore>,
    tx: tokio::sync::mpsc::Sender<(jetstream::Message, OwnedSemaphorePermit)>,
    shutdown: CancellationToken,
) {
    const MAX_BATCH: usize = 256;
    'outer: loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let mut held = vec![first];
        while held.len() < MAX_BATCH {
            match permits.clone().try_acquire_owned() {
                Ok(p) => held.push(p),
                Err(_) => break,
            }
        }
        let batch = consumer
            .batch()
            .max_messages(held.len())
            .expires(Duration::from_secs(5))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(%queue, error = %e, "pull request failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break 'outer,
                next = batch.next() => match next {
                    Some(Ok(msg)) => {
                        let Some(permit) = held.pop() else { break };
                        if tx.send((msg, permit)).await.is_err() { break 'outer; }
                    }
                    Some(Err(e)) => tracing::debug!(%queue, error = %e, "pull batch ended"),
                    None => break,
                }
            }
        }
    }
}

/// What to do with the `queued` message once the attempt is over.
enum Disposition {
    Ack,
    Nak(Option<Duration>),
    Term,
}

/// Processes one delivery of a `queued` message, end to end.
async fn process(shared: &Shared, msg: jetstream::Message) {
    let (delivered, seq) = match msg.info() {
        Ok(i) => (
            u32::try_from(i.delivered).unwrap_or(u32::MAX),
            i.stream_sequence,
        ),
        Err(e) => {
            tracing::error!(error = %e, "message without JetStream metadata");
            return;
        }
    };
    // The one decoder: fired delayed and periodic jobs need the stored message, not just its payload.
    let decoded = jobstream_core::stored::StoredMessage::from_delivered(&msg)
        .and_then(|stored| Envelope::from_stored(&stored));
    let env = match decoded {
        Ok(env) => env,
        Err(e) => {
            // A message no worker can ever read: terminate it instead of redelivering forever.
            tracing::error!(stream_seq = seq, subject = %msg.subject, error = %e, "undecodable queued message terminated");
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
    };
    let Event::Queued(spec) = &env.event else {
        tracing::error!(stream_seq = seq, subject = %msg.subject, "non-queued event on a queue subject terminated");
        let _ = msg.ack_with(AckKind::Term).await;
        return;
    };
    let request_id = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(REQUEST_ID_HEADER))
        .map(|v| v.as_str().to_owned());
    let span = tracing::info_span!(
        "job",
        job_id = %env.job_id,
        kind = %spec.kind,
        queue = %spec.queue,
        attempt = delivered,
        stream_seq = seq,
        request_id = request_id.as_deref().unwrap_or(""),
    );
    let disposition = run_attempt(shared, &msg, &env, spec, delivered, request_id.as_deref())
        .instrument(span.clone())
        .await;
    let acked = match disposition {
        Disposition::Ack => msg.double_ack().await,
        Disposition::Nak(d) => msg.ack_with(AckKind::Nak(d)).await,
        Disposition::Term => msg.ack_with(AckKind::Term).await,
    };
    if let Err(e) = acked {
        span.in_scope(|| tracing::warn!(error = %e, "ack failed; the message will be redelivered and recognised as done"));
    }
}

async fn run_attempt(
    shared: &Shared,
    msg: &jetstream::Message,
    queued: &Envelope,
    spec: &JobSpec,
    attempt: u32,
    request_id: Option<&str>,
) -> Disposition {
    let broker = &shared.broker;
    let job_id = queued.job_id;
    let publish = |event: Event| {
        let env = Envelope::new(job_id, attempt, event);
        async move { broker.publish(&env, &spec.queue, request_id).await }
    };
    // A redelivery after the outcome was stored but its ack was lost: nothing to run.
    if attempt > 1 {
        match broker.has_terminal_event(&spec.queue, job_id).await {
            Ok(true) => {
                tracing::info!("job already finished; acking the redelivery");
                return Disposition::Ack;
            }
            Ok(false) => {}
            Err(e) => return retry_soon(&e),
        }
    }
    if attempt > spec.max_attempts {
        let error = format!(
            "gave up after {} deliveries (the worker running it stopped or timed out)",
            attempt - 1
        );
        return match publish(Event::Failed { error }).await {
            Ok(_) => Disposition::Term,
            Err(e) => retry_soon(&e),
        };
    }
    let Some(handler) = shared.registry.get(&spec.kind) else {
        let error = format!(
            "no handler registered for kind {:?} on worker {}",
            spec.kind, shared.config.id
        );
        tracing::error!(%error);
        return match publish(Event::Failed { error }).await {
            Ok(_) => Disposition::Term,
            Err(e) => retry_soon(&e),
        };
    };
    if let Err(e) = publish(Event::Started {
        worker: shared.config.id.clone(),
    })
    .await
    {
        return retry_soon(&e);
    }
    tracing::info!("job started");

    let ctx = JobContext {
        job_id,
        kind: spec.kind.clone(),
        owner: spec.owner.clone(),
        payload: spec.payload.clone(),
        attempt,
        max_attempts: spec.max_attempts,
        cancel: shared.hard_stop.child_token(),
    };
    let timeout = Duration::from_millis(spec.timeout_ms);
    let outcome = with_heartbeat(msg, shared.config.ack_wait, async {
        match tokio::time::timeout(timeout, handler.run(ctx)).await {
            Ok(r) => r,
            Err(_) => Err(JobError::Failed(format!(
                "timed out after {} ms",
                spec.timeout_ms
            ))),
        }
    })
    .await;

    if shared.hard_stop.is_cancelled() && outcome.is_err() {
        // Interrupted by shutdown, not failed: hand it to another worker now.
        tracing::warn!("job interrupted by shutdown; redelivering");
        return Disposition::Nak(None);
    }
    let (event, disposition) =
        outcome_event(outcome, attempt, spec.max_attempts, &shared.config.backoff);
    let name = event.event_type().as_str();
    match publish(event).await {
        Ok(_) => {
            tracing::info!(outcome = name, "job attempt finished");
            disposition
        }
        Err(e) => retry_soon(&e),
    }
}

/// Maps an attempt's outcome to its event and what to do with the message.
fn outcome_event(
    outcome: Result<Value, JobError>,
    attempt: u32,
    max_attempts: u32,
    backoff: &Backoff,
) -> (Event, Disposition) {
    match outcome {
        Ok(result) => (Event::Succeeded { result }, Disposition::Ack),
        Err(JobError::Fatal(error)) => (Event::Failed { error }, Disposition::Term),
        Err(e) if attempt >= max_attempts => (
            Event::Failed {
                error: e.to_string(),
            },
            Disposition::Term,
        ),
        Err(JobError::RetryAfter { error, after }) => (
            Event::Retrying {
                error,
                retry_in_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
            },
            Disposition::Nak(Some(after)),
        ),
        Err(JobError::Failed(error)) => {
            let after = backoff.delay(attempt);
            (
                Event::Retrying {
                    error,
                    retry_in_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
                },
                Disposition::Nak(Some(after)),
            )
        }
    }
}

/// The outcome could not be stored: redeliver soon rather than lose the job.
fn retry_soon(e: &BrokerError) -> Disposition {
    tracing::warn!(error = %e, "could not store the job's event; redelivering");
    Disposition::Nak(Some(Duration::from_secs(1)))
}

/// Runs `work` while telling the server, every third of `ack_wait`, that the message is in progress.
async fn with_heartbeat<T>(
    msg: &jetstream::Message,
    ack_wait: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    let every = (ack_wait / 3).max(Duration::from_millis(100));
    let beat = async {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            if let Err(e) = msg.ack_with(AckKind::Progress).await {
                tracing::warn!(error = %e, "in-progress ack failed");
            }
        }
    };
    tokio::select! {
        out = work => out,
        () = beat => unreachable!("the heartbeat loop never ends"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let d1 = b.delay(1);
        assert!(
            d1 >= Duration::from_millis(80) && d1 <= Duration::from_millis(120),
            "{d1:?}"
        );
        let d3 = b.delay(3);
        assert!(
            d3 >= Duration::from_millis(320) && d3 <= Duration::from_millis(480),
            "{d3:?}"
        );
        assert!(b.delay(30) <= Duration::from_millis(1200));
    }

    #[test]
    fn last_attempt_fails_for_good() {
        let b = Backoff::default();
        let (e, d) = outcome_event(Err(JobError::Failed("x".into())), 3, 3, &b);
        assert!(matches!(e, Event::Failed { .. }) && matches!(d, Disposition::Term));
        let (e, d) = outcome_event(Err(JobError::Failed("x".into())), 1, 3, &b);
        assert!(matches!(e, Event::Retrying { .. }) && matches!(d, Disposition::Nak(Some(_))));
        let (e, _) = outcome_event(Err(JobError::Fatal("x".into())), 1, 3, &b);
        assert!(matches!(e, Event::Failed { .. }));
    }
}
