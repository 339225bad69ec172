//! The worker process: build the consumers, run jobs, report outcomes, ack.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use jobstream_core::broker::{Broker, BrokerError};
use jobstream_core::event::{AttemptRun, Envelope, Event, JobSpec, Priority, RetryBackoff};
use jobstream_core::subject::{self, QueueName};
use jobstream_core::trace::{Correlation, TraceParent};
use rand::Rng;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::cancel::{Running, RunningGuard, cancel_stored_after, listen_for_cancellations};
use crate::decide::{Plan, is_latest_event, plan};
use crate::defaults;
use crate::handler::{Handler, JobContext, JobError, ProgressReporter, Registry};
use crate::idle::REDELIVERY_SLACK;
use crate::lanes::{QueueLanes, ensure_lane_consumer};
use crate::limit::{self, Slots};
use crate::pause::PauseGate;
use crate::pull::{Delivery, pull_loop};
use crate::start::{Appends, STARTED_AFTER, StartGate};

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
            base: defaults::BACKOFF_BASE,
            max: defaults::BACKOFF_MAX,
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
    /// `max_ack_pending` of a lane consumer this worker creates for a queue without a limit.
    pub queue_max_in_flight: i64,
    /// Global limits: jobs of a queue running at once across all workers, enforced by
    /// the server (tokens of the queue's slots consumer, see [`crate::limit`]).
    /// Applied to existing consumers at start; a queue not listed keeps what it has.
    pub queue_limits: HashMap<QueueName, i64>,
    /// Back-off between attempts for jobs whose `queued` event names none.
    pub backoff: Backoff,
    /// On shutdown: how long running jobs may finish before they are cancelled.
    pub shutdown_grace: Duration,
    /// How long a cancelled job's handler may take to return after its token is cancelled.
    pub cancel_grace: Duration,
    /// How often the worker writes its record into the workers registry.
    pub heartbeat: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: format!("worker-{}", std::process::id()),
            queues: vec![QueueName::default_queue()],
            concurrency: defaults::CONCURRENCY,
            ack_wait: defaults::ACK_WAIT,
            queue_max_in_flight: defaults::QUEUE_MAX_IN_FLIGHT,
            queue_limits: HashMap::new(),
            backoff: Backoff::default(),
            shutdown_grace: defaults::SHUTDOWN_GRACE,
            cancel_grace: defaults::CANCEL_GRACE,
            heartbeat: defaults::HEARTBEAT,
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

/// Durable consumer name of a queue's normal lane, shared by all workers of that queue.
pub fn consumer_name(queue: &QueueName) -> String {
    subject::lane_consumer(queue, Priority::Normal)
}

/// Durable consumer name of one priority lane of a queue ([`subject::lane_consumer`]).
pub fn lane_consumer_name(queue: &QueueName, lane: Priority) -> String {
    subject::lane_consumer(queue, lane)
}

/// What every job task of a worker shares.
pub(crate) struct Shared {
    /// The NATS connection.
    pub(crate) broker: Broker,
    /// Handlers by kind.
    pub(crate) registry: Registry,
    /// Settings.
    pub(crate) config: WorkerConfig,
    /// Cancelled when shutdown begins: a delivery that has not run its handler yet is
    /// handed back instead of waiting for the store.
    pub(crate) stopping: CancellationToken,
    /// Cancelled when the grace period is over: running handlers must stop.
    pub(crate) hard_stop: CancellationToken,
    /// Jobs running here; a cancel request for one of them cancels its token.
    pub(crate) running: Running,
    /// The shortest `ack_wait` of this worker's consumers: in-progress acks go out every third of it.
    pub(crate) heartbeat_wait: Duration,
}

/// A worker bound to its queues' consumers.
pub struct Worker {
    shared: Arc<Shared>,
    queues: Vec<QueueLanes>,
}

impl Worker {
    /// Creates (or updates) one durable consumer per queue and priority lane.
    pub async fn build(
        broker: Broker,
        registry: Registry,
        config: WorkerConfig,
    ) -> Result<Self, WorkerError> {
        let stream = broker.stream().await.map_err(|e| WorkerError::Consumer {
            queue: "*".into(),
            reason: e.to_string(),
        })?;
        let mut queues = Vec::new();
        // Existing consumers keep the ack_wait they were created with: heartbeat for the shortest.
        let mut heartbeat_wait = config.ack_wait;
        for queue in &config.queues {
            let mut lanes = Vec::new();
            for lane in subject::LANES {
                let c = ensure_lane_consumer(&stream, &config, queue, lane)
                    .await
                    .map_err(|reason| WorkerError::Consumer {
                        queue: queue.to_string(),
                        reason,
                    })?;
                heartbeat_wait = heartbeat_wait.min(c.cached_info().config.ack_wait);
                lanes.push((lane, c));
            }
            let slots = match config.queue_limits.get(queue) {
                Some(limit) => Slots::ensure(&broker, queue, *limit, config.ack_wait)
                    .await
                    .map(Some),
                None => Slots::find(&broker, queue).await,
            }
            .map_err(|reason| WorkerError::Consumer {
                queue: queue.to_string(),
                reason: format!("concurrency slots: {reason}"),
            })?;
            if let Some(slots) = &slots {
                heartbeat_wait = heartbeat_wait.min(slots.ack_wait());
            }
            let pause = PauseGate::follow(&broker, queue).await.map_err(|reason| {
                WorkerError::Consumer {
                    queue: queue.to_string(),
                    reason: format!("pause state: {reason}"),
                }
            })?;
            queues.push(QueueLanes {
                pause,
                queue: queue.clone(),
                stream: stream.clone(),
                lanes,
                slots,
            });
        }
        Ok(Worker {
            shared: Arc::new(Shared {
                broker,
                registry,
                config,
                stopping: CancellationToken::new(),
                hard_stop: CancellationToken::new(),
                running: Mutex::new(HashMap::new()),
                heartbeat_wait,
            }),
            queues,
        })
    }

    /// Runs until `shutdown`; then stops pulling, lets running jobs finish within the
    /// grace period, cancels the rest and hands their messages back (or, when the
    /// server cannot be reached, leaves them to be redelivered after `ack_wait`).
    /// Returns within the grace period (plus a flush of at most 200 ms) of `shutdown`,
    /// whatever state the NATS server is in.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let permits = Arc::new(Semaphore::new(self.shared.config.concurrency));
        let mut jobs: JoinSet<()> = JoinSet::new();
        let mut pullers = JoinSet::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Delivery>(1);
        let client = self.shared.broker.client().clone();
        let listener = tokio::spawn(listen_for_cancellations(
            self.shared.clone(),
            self.queues.iter().map(|q| q.queue.clone()).collect(),
        ));
        let registry = tokio::spawn(crate::registry::heartbeat(
            self.shared.clone(),
            shutdown.clone(),
        ));
        for lanes in self.queues {
            pullers.spawn(pull_loop(
                lanes,
                client.clone(),
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
                    Some(Delivery { msg, permit, wake, slot }) => {
                        let shared = self.shared.clone();
                        jobs.spawn(async move {
                            // Pinned here, once: `with_heartbeat` borrows it (see there).
                            let work = std::pin::pin!(process(&shared, msg));
                            let due = match &slot {
                                // The queue's slot is held (kept alive) exactly as long as the job.
                                Some(token) => with_heartbeat(token, shared.heartbeat_wait, work).await,
                                None => work.await,
                            };
                            if let Some(token) = slot {
                                limit::release(token).await;
                            }
                            if let Some(delay) = due {
                                // The puller looks again when the message is due back.
                                let _ = wake.send(tokio::time::Instant::now() + delay + REDELIVERY_SLACK);
                            }
                            drop(permit);
                        });
                    }
                    None => break,
                },
                Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
                // Deliveries that have not started their handler hand their message back.
                () = shutdown.cancelled(), if !self.shared.stopping.is_cancelled() => {
                    self.shared.stopping.cancel();
                }
            }
        }
        self.shared.stopping.cancel();
        // Shutdown has begun. Everything below is bounded by the grace period, whatever
        // else is stopping (a nats-server stopped at the same moment must not keep this
        // process alive: its round trips wait for a reconnect that never comes).
        let grace = self.shared.config.shutdown_grace;
        let deadline = tokio::time::Instant::now() + grace;
        // The last part of the grace period: for cancelled handlers to return and their
        // messages to be handed back.
        let hand_back = (grace / 4).min(Duration::from_secs(5));
        if tokio::time::timeout(Duration::from_secs(1), async {
            while pullers.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            pullers.abort_all();
        }
        tracing::info!(
            running = jobs.len(),
            grace_ms = grace.as_millis() as u64,
            "worker stopping: waiting for running jobs"
        );
        if tokio::time::timeout_at(deadline - hand_back, join_all(&mut jobs))
            .await
            .is_err()
        {
            tracing::warn!(
                running = jobs.len(),
                "grace period nearly over: cancelling running jobs and handing them back"
            );
            self.shared.hard_stop.cancel();
            let margin = (hand_back / 5).min(Duration::from_millis(500));
            if tokio::time::timeout_at(deadline - margin, join_all(&mut jobs))
                .await
                .is_err()
            {
                tracing::warn!(
                    running = jobs.len(),
                    "jobs still running at the end of the grace period: abandoned (redelivered after ack_wait)"
                );
                jobs.abort_all();
            }
        }
        listener.abort();
        registry.abort();
        // Acks and naks are fire-and-forget publishes: let them leave before the
        // connection goes, if the server is there to take them.
        let flush_for = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_millis(200));
        match tokio::time::timeout(flush_for, self.shared.broker.client().flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not flush the last acks; their messages come back after ack_wait");
            }
            Err(_) => {
                tracing::warn!(
                    "the last acks did not leave in time (is nats-server away?); their messages come back after ack_wait"
                );
            }
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// Completes when every job of the set has ended.
async fn join_all(jobs: &mut JoinSet<()>) {
    while jobs.join_next().await.is_some() {}
}

/// What to do with the message once the attempt is over.
enum Disposition {
    Ack,
    Nak(Option<Duration>),
    Term,
}

/// Processes one delivery of a runnable (`queued` or `retry_requested`) message, end
/// to end; returns the delay after which a `Nak`ed message is due back.
async fn process(shared: &Shared, msg: jetstream::Message) -> Option<Duration> {
    let (delivered, seq) = match msg.info() {
        Ok(i) => (
            u32::try_from(i.delivered).unwrap_or(u32::MAX),
            i.stream_sequence,
        ),
        Err(e) => {
            tracing::error!(error = %e, "message without JetStream metadata");
            return None;
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
            return None;
        }
    };
    if !matches!(env.event, Event::Queued(_) | Event::RetryRequested { .. }) {
        tracing::error!(stream_seq = seq, subject = %msg.subject, "non-runnable event on a queue subject terminated");
        let _ = msg.ack_with(AckKind::Term).await;
        return None;
    }
    // The job's request id and trace, carried into every event this worker appends for it.
    let correlation = Correlation::of_event(msg.headers.as_ref(), env.job_id);
    // A message nats-server's scheduler fired (a delayed job's `queued`) follows other
    // events of its job (`scheduled`, maybe a cancel request): it always folds.
    let fired = msg
        .headers
        .as_ref()
        .is_some_and(|h| h.get(jobstream_core::stored::SCHEDULER_HEADER).is_some());
    let span = tracing::info_span!(
        "job",
        job_id = %env.job_id,
        kind = tracing::field::Empty,
        queue = tracing::field::Empty,
        attempt = delivered,
        stream_seq = seq,
        request_id = correlation.request_id().unwrap_or(""),
        trace_id = %correlation.trace.trace_id(),
    );
    // Exported under the job's trace, as a child of the span that appended this event.
    jobstream_core::telemetry::join_trace(
        &span,
        &TraceParent::of_event(msg.headers.as_ref(), env.job_id),
    );
    // The delivery stays this worker's (in-progress acks) for as long as it takes: to
    // decide, to run, and to store the outcome while the store refuses writes.
    let work = std::pin::pin!(decide_and_run(
        shared,
        &env,
        &msg.payload,
        (seq, fired),
        delivered,
        &correlation,
    ));
    let disposition = with_heartbeat(&msg, shared.heartbeat_wait, work)
        .instrument(span.clone())
        .await;
    let ack = async {
        match disposition {
            // A plain ack: the outcome is stored, so a lost ack only means a redelivery,
            // which the stream recognises as done (no round trip per job for the answer).
            Disposition::Ack => (msg.ack().await, None),
            Disposition::Nak(d) => (
                msg.ack_with(AckKind::Nak(d)).await,
                Some(d.unwrap_or_default()),
            ),
            Disposition::Term => (msg.ack_with(AckKind::Term).await, None),
        }
    };
    // Bounded: with the server away, even a fire-and-forget ack waits for the client's buffer.
    let (acked, due) = match tokio::time::timeout(ACK_BOUND, ack).await {
        Ok(r) => r,
        Err(_) => (Err("no room to send the ack in time".into()), None),
    };
    if let Err(e) = acked {
        span.in_scope(|| tracing::warn!(error = %e, "ack failed; the message will be redelivered and recognised as done"));
    }
    due
}

/// Longest wait for an ack to be sent.
const ACK_BOUND: Duration = Duration::from_secs(6);

/// Decides from the job's history (or, for a first delivery of a `queued` message
/// that is still its job's latest event, from the message itself) and runs the
/// attempt; every append of the attempt is conditional on nothing having happened
/// since (see [`crate::start`]). A conflicting append means the job changed meanwhile
/// (say, a cancel request): fold again and decide again.
///
/// # Attempts
/// The attempt number is the message's delivery count, so a delivery must end only
/// when the attempt is over: a delivery lost with its worker (a crash, a hang past
/// `ack_wait`) counts, so a poison job that kills its worker cannot loop forever. A
/// failure of the stream itself must not count, so this worker keeps the message
/// (in-progress acks) and retries with back-off instead of handing it back:
/// - before the handler runs (reading the job's last event or its history), it decides
///   again after the back-off, until the stream answers or shutdown begins;
/// - once the handler has run, it stores the same outcome envelope again (same event
///   id, hence same `Nats-Msg-Id`: the stream stores it once) until it is stored or
///   the grace period is over, and never runs the handler again.
///
/// Only a shutdown hands a delivery back (`Nak`), and the next delivery counts it.
/// Nothing here depends on `started` events existing. `stored` is the delivered message's payload.
async fn decide_and_run(
    shared: &Shared,
    env: &Envelope,
    stored: &[u8],
    (seq, fired): (u64, bool),
    attempt: u32,
    correlation: &Correlation,
) -> Disposition {
    const MAX_CONFLICTS: usize = 8;
    let mut conflicts = 0;
    let mut waits = StoreRetry::new("decide");
    // A first delivery of a `queued` message the API stored (its job's first event)
    // needs no fold while it is still the job's latest event: the conditional
    // appends of the attempt cover whatever comes after it.
    let mut try_fast =
        (matches!(env.event, Event::Queued(_)) && attempt == 1 && !fired).then_some(stored);
    // One `started` event id per delivery: a `started` stored whose answer was lost is
    // not stored twice when the delivery decides again.
    let started_id = Uuid::now_v7();
    loop {
        let result =
            decide_once(shared, env, seq, attempt, correlation, try_fast, started_id).await;
        try_fast = None;
        match result {
            Ok(d) => return d,
            Err(BrokerError::Conflict { .. }) => {
                conflicts += 1;
                if conflicts >= MAX_CONFLICTS {
                    tracing::warn!("the job keeps changing; trying again later");
                    return Disposition::Nak(Some(Duration::from_secs(1)));
                }
                tracing::debug!("the job changed meanwhile; deciding again");
            }
            Err(e) => {
                if !waits.wait(&e, &shared.stopping).await {
                    tracing::info!("shutting down before the job could start: handing it back");
                    return Disposition::Nak(None);
                }
            }
        }
    }
}

/// One decision, and the attempt it leads to. An error means nothing ran. `try_fast`:
/// the delivered message's payload, when it may run without a fold if it is still its
/// job's latest event.
async fn decide_once(
    shared: &Shared,
    env: &Envelope,
    seq: u64,
    attempt: u32,
    correlation: &Correlation,
    try_fast: Option<&[u8]>,
    started_id: Uuid,
) -> Result<Disposition, BrokerError> {
    let fast = match (&env.event, try_fast) {
        (Event::Queued(spec), Some(stored)) => is_latest_event(&shared.broker, env.job_id, stored)
            .await?
            .then(|| Plan::Run {
                spec: spec.clone(),
                last_seq: seq,
            }),
        _ => None,
    };
    let plan = match fast {
        Some(p) => p,
        None => plan(&shared.broker.job_history(env.job_id).await?, seq),
    };
    match plan {
        Plan::Skip(why) => {
            tracing::info!(reason = %why, "nothing to run; acking");
            Ok(Disposition::Ack)
        }
        Plan::Cancel { spec, last_seq } => {
            let cancelled = Envelope::new(
                env.job_id,
                attempt,
                Event::Cancelled {
                    reason: Some("cancelled while its worker was gone".into()),
                },
            );
            shared
                .broker
                .publish_if_last_correlated(&cancelled, &spec.queue, correlation, last_seq)
                .await?;
            tracing::info!("job cancelled");
            Ok(Disposition::Term)
        }
        Plan::Run { spec, last_seq } => {
            let span = tracing::Span::current();
            span.record("kind", spec.kind.as_str());
            span.record("queue", spec.queue.as_str());
            let attempt = Attempt {
                job_id: env.job_id,
                started_id,
                spec: &spec,
                number: attempt,
                correlation,
                msg_seq: seq,
                last_seq,
            };
            run_attempt(shared, attempt).await
        }
    }
}

/// Back-off between tries of a store or read the stream refused or did not answer.
struct StoreRetry {
    what: &'static str,
    tries: u32,
    delay: Duration,
}

impl StoreRetry {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new(what: &'static str) -> Self {
        StoreRetry {
            what,
            tries: 0,
            delay: Self::FIRST,
        }
    }

    /// Logs `e` and waits before the next try; `false` when `until` is cancelled first.
    async fn wait(&mut self, e: &BrokerError, until: &CancellationToken) -> bool {
        self.tries += 1;
        // Loud once, then now and then: a store that stays full would flood the log.
        if self.tries == 1 || self.tries.is_multiple_of(20) {
            tracing::warn!(error = %e, step = self.what, tries = self.tries, "the stream did not take the job's event; keeping the message and trying again");
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(Self::MAX);
        tokio::select! {
            () = until.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

/// How the handler's run ended.
enum Ran {
    /// It returned (on its own, or after its token was cancelled by shutdown or a timeout).
    Returned(Result<Value, JobError>),
    /// A client cancelled the job; the handler returned within the grace period, or not.
    Cancelled(Option<Result<Value, JobError>>),
}

/// One attempt of a job, as decided: what [`run_attempt`] runs and on what its appends
/// are conditional.
#[derive(Clone, Copy)]
struct Attempt<'a> {
    /// The job.
    job_id: Uuid,
    /// The id its `started` event takes, if the attempt runs long enough to store one.
    started_id: Uuid,
    /// What to run.
    spec: &'a JobSpec,
    /// 1-based attempt number (the message's delivery count).
    number: u32,
    /// The submission's request id and the job's trace, carried into the attempt's events.
    correlation: &'a Correlation,
    /// Stream sequence of the runnable message the attempt runs for.
    msg_seq: u64,
    /// The job's latest sequence the attempt was decided on (the condition of its first append).
    last_seq: u64,
}

/// Runs one attempt of the job.
async fn run_attempt(shared: &Shared, decided: Attempt<'_>) -> Result<Disposition, BrokerError> {
    let Attempt {
        job_id,
        started_id,
        spec,
        number: attempt,
        correlation,
        msg_seq,
        last_seq,
    } = decided;
    let broker = &shared.broker;
    let fail_now = |error: String| {
        let env = Envelope::new(job_id, attempt, Event::Failed { error });
        async move {
            broker
                .publish_if_last_correlated(&env, &spec.queue, correlation, last_seq)
                .await
                .map(|_| Disposition::Term)
        }
    };
    if attempt > spec.max_attempts {
        return fail_now(format!(
            "gave up after {} deliveries (the worker running it stopped or timed out)",
            attempt - 1
        ))
        .await;
    }
    let Some(handler) = shared.registry.get(&spec.kind) else {
        let error = format!(
            "no handler registered for kind {:?} on worker {}",
            spec.kind, shared.config.id
        );
        tracing::error!(%error);
        return fail_now(error).await;
    };
    // Registered before the handler runs, so a cancel request stored after the decision finds the job.
    let job_token = shared.hard_stop.child_token();
    let request_token = CancellationToken::new();
    if let Ok(mut r) = shared.running.lock() {
        r.insert(job_id, request_token.clone());
    }
    let _guard = RunningGuard {
        running: &shared.running,
        job_id,
    };
    let mut run = AttemptRun {
        worker: shared.config.id.clone(),
        started_at: jobstream_core::event::now(),
        timed_out: false,
    };
    // Nothing is stored yet: `started` only once the attempt runs long or reports progress.
    let start = Arc::new(StartGate::new(
        broker.clone(),
        spec.queue.clone(),
        correlation.clone(),
        (job_id, started_id),
        (msg_seq, last_seq),
        (attempt, &run),
    ));
    tracing::debug!("job running");

    let ctx = JobContext {
        job_id,
        kind: spec.kind.clone(),
        owner: spec.owner.clone(),
        payload: spec.payload.clone(),
        attempt,
        max_attempts: spec.max_attempts,
        cancel: job_token.clone(),
        progress: ProgressReporter::for_attempt(
            broker.clone(),
            spec.queue.clone(),
            (job_id, attempt),
            correlation.clone(),
            start.clone(),
        ),
    };
    let _busy =
        jobstream_core::metrics::InProgress::enter(jobstream_core::metrics::WORKER_SLOTS_BUSY);
    let tokens = AttemptTokens {
        job: &job_token,
        request: &request_token,
    };
    let (ran, timed_out) =
        run_handler(shared, handler.as_ref(), ctx, &decided, &start, tokens).await;
    // Marked on the outcome's run: the metrics count a `timeout` from this path alone.
    run.timed_out = timed_out;
    settle(shared, ran, run, &decided, &start).await
}

/// The two tokens of a running attempt.
#[derive(Clone, Copy)]
struct AttemptTokens<'a> {
    /// Cancelled to stop the handler (deadline, cancel request, hard stop).
    job: &'a CancellationToken,
    /// Cancelled by a cancel request that reached this worker directly.
    request: &'a CancellationToken,
}

/// Runs the handler against its deadline, the `started` threshold and cancellation:
/// what it returned (or that it was cancelled), and whether the deadline stopped it.
async fn run_handler(
    shared: &Shared,
    handler: &dyn Handler,
    ctx: JobContext,
    attempt: &Attempt<'_>,
    start: &StartGate,
    tokens: AttemptTokens<'_>,
) -> (Ran, bool) {
    let (spec, job_id, last_seq) = (attempt.spec, attempt.job_id, attempt.last_seq);
    let (job_token, request_token) = (tokens.job, tokens.request);
    let broker = &shared.broker;
    let timeout = Duration::from_millis(spec.timeout_ms);
    let cancel_grace = shared.config.cancel_grace;
    let mut timed_out = false;
    let ran = async {
        let work = handler.run(ctx);
        tokio::pin!(work);
        tokio::select! {
            r = &mut work => Ran::Returned(r),
            () = tokio::time::sleep(timeout) => {
                // The deadline: the handler's future is dropped (its token cancelled for any tasks it spawned).
                job_token.cancel();
                timed_out = true;
                Ran::Returned(Err(JobError::Failed(format!("timed out after {} ms", spec.timeout_ms))))
            }
            // A long attempt shows `running`: its `started` is stored past the threshold.
            () = async {
                tokio::time::sleep(STARTED_AFTER).await;
                // Boxed: only long attempts get here, and inline its state would be in every job's task.
                Box::pin(start.ensure_started()).await;
                std::future::pending::<()>().await;
            } => unreachable!("pending forever"),
            () = async {
                tokio::select! {
                    () = request_token.cancelled() => {}
                    () = start.lost() => {}
                    () = cancel_stored_after(broker, &spec.queue, job_id, last_seq, shared.config.ack_wait) => {
                        tracing::info!("cancel request found in the stream: stopping the handler");
                    }
                }
            } => {
                job_token.cancel();
                Ran::Cancelled(tokio::time::timeout(cancel_grace, &mut work).await.ok())
            }
        }
    }
    .await;
    (ran, timed_out)
}

/// Turns what the handler did into the attempt's outcome event and stores it: how the
/// runnable message is then settled.
async fn settle(
    shared: &Shared,
    ran: Ran,
    run: AttemptRun,
    attempt: &Attempt<'_>,
    start: &StartGate,
) -> Result<Disposition, BrokerError> {
    let (spec, job_id, number) = (attempt.spec, attempt.job_id, attempt.number);
    let (event, disposition) = match ran {
        Ran::Cancelled(Some(Ok(result))) => {
            tracing::info!("cancel requested, but the handler finished its work");
            (Event::Succeeded { result }, Disposition::Ack)
        }
        Ran::Cancelled(returned) => {
            let how = if returned.is_some() {
                "stopped"
            } else {
                "abandoned after the cancel grace period"
            };
            tracing::info!(how, "job cancelled while running");
            (cancelled_while_running(number, how), Disposition::Term)
        }
        Ran::Returned(outcome) => {
            if shared.hard_stop.is_cancelled() && outcome.is_err() {
                // Interrupted by shutdown, not failed: hand it to another worker now.
                tracing::warn!("job interrupted by shutdown; redelivering");
                return Ok(Disposition::Nak(None));
            }
            let backoff = spec.backoff.map_or(shared.config.backoff, Backoff::from);
            outcome_event(outcome, number, spec.max_attempts, &backoff)
        }
    };
    let outcome = Attempted {
        env: Envelope::new(job_id, number, event).with_run(run),
        disposition,
        msg_seq: attempt.msg_seq,
    };
    let Some((stored, disposition)) =
        store_outcome(shared, outcome, start, &spec.queue, attempt.correlation).await
    else {
        tracing::warn!(
            "grace period over before the outcome could be stored; handing the job back"
        );
        return Ok(Disposition::Nak(None));
    };
    match stored {
        Some(name) => tracing::debug!(outcome = name, "job attempt finished"),
        None => tracing::info!(
            "the job was cancelled or superseded while it ran: its outcome is not recorded"
        ),
    }
    Ok(disposition)
}

/// The `cancelled` event of an attempt stopped while it ran.
fn cancelled_while_running(attempt: u32, how: &str) -> Event {
    Event::Cancelled {
        reason: Some(format!(
            "cancelled while running (attempt {attempt}, handler {how})"
        )),
    }
}

/// A finished attempt's outcome, waiting to be stored.
struct Attempted {
    /// The outcome event (the same envelope on every try, so the stream keeps one copy).
    env: Envelope,
    /// What to do with the message once it is stored.
    disposition: Disposition,
    /// Sequence of the runnable message the attempt ran for (to decide again on a conflict).
    msg_seq: u64,
}

/// Stores a finished attempt's outcome, trying again with back-off while the stream
/// refuses or does not answer, until it is stored or the grace period of a shutdown is
/// over (`None`). Every try sends the same envelope, so the stream keeps one copy
/// (`Nats-Msg-Id`); after a failed try, the job's history is read first, in case an
/// earlier try was stored but its answer lost (beyond the duplicate window).
///
/// Until the attempt's `started` is stored, the append is conditional on the job's
/// latest sequence ([`crate::start`]); a conflict means the job changed while it ran:
/// fold again and decide. Still this attempt's → store on the new latest sequence; a
/// running job asked to cancel → a finished result stands, any other outcome becomes
/// `cancelled`; cancelled (the request came before any `started`), finished or
/// superseded → nothing to store, ack. Returns the stored event's type (`None` when
/// nothing was stored) and what to do with the message.
async fn store_outcome(
    shared: &Shared,
    mut outcome: Attempted,
    start: &StartGate,
    queue: &QueueName,
    correlation: &Correlation,
) -> Option<(Option<&'static str>, Disposition)> {
    const MAX_CONFLICTS: u32 = 8;
    let mut waits = StoreRetry::new("outcome");
    let mut conflicts = 0;
    let job_id = outcome.env.job_id;
    let stored_already =
        |history: &[(u64, Envelope)], id: Uuid| history.iter().any(|(_, e)| e.event_id == id);
    loop {
        if waits.tries > 0
            && let Ok(history) = shared.broker.job_history(job_id).await
            && stored_already(&history, outcome.env.event_id)
        {
            return Some((Some(outcome.env.event_type().as_str()), outcome.disposition));
        }
        let appended = match start.appends().await {
            Appends::Started => {
                (shared.broker)
                    .publish_correlated(&outcome.env, queue, correlation)
                    .await
            }
            Appends::Pending { last_seq } => {
                shared
                    .broker
                    .publish_if_last_correlated(&outcome.env, queue, correlation, last_seq)
                    .await
            }
        };
        let e = match appended {
            Ok(_) => return Some((Some(outcome.env.event_type().as_str()), outcome.disposition)),
            Err(BrokerError::Conflict { .. }) if conflicts < MAX_CONFLICTS => {
                conflicts += 1;
                match shared.broker.job_history(job_id).await {
                    Ok(history) if stored_already(&history, outcome.env.event_id) => {
                        return Some((
                            Some(outcome.env.event_type().as_str()),
                            outcome.disposition,
                        ));
                    }
                    Ok(history) => match plan(&history, outcome.msg_seq) {
                        Plan::Run { last_seq, .. } => {
                            start.moved_on(last_seq).await;
                            continue;
                        }
                        Plan::Cancel { last_seq, .. } => {
                            if !matches!(
                                outcome.env.event,
                                Event::Succeeded { .. } | Event::Cancelled { .. }
                            ) {
                                let run = outcome.env.run.take();
                                let event =
                                    cancelled_while_running(outcome.env.attempt, "finished");
                                outcome.env = Envelope::new(job_id, outcome.env.attempt, event);
                                outcome.env.run = run;
                                outcome.disposition = Disposition::Term;
                            }
                            start.moved_on(last_seq).await;
                            continue;
                        }
                        Plan::Skip(why) => {
                            tracing::debug!(reason = %why, "nothing to record");
                            return Some((None, Disposition::Ack));
                        }
                    },
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        if !waits.wait(&e, &shared.hard_stop).await {
            return None;
        }
    }
}

impl From<RetryBackoff> for Backoff {
    fn from(b: RetryBackoff) -> Self {
        Backoff {
            base: Duration::from_millis(b.base_ms),
            max: Duration::from_millis(b.max_ms),
        }
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

/// Runs `work` while telling the server, every third of `ack_wait`, that the message is in progress.
///
/// `work` is borrowed, pinned by the caller: a future taken by value stays in this
/// future's state next to the copy `select!` moves, which doubled the size of every
/// job's task at each level (37 KB per spawn, copied on every spawn, about 6 % of the
/// worker's CPU at saturation).
async fn with_heartbeat<T>(
    msg: &jetstream::Message,
    ack_wait: Duration,
    work: std::pin::Pin<&mut impl std::future::Future<Output = T>>,
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

    #[test]
    fn a_jobs_own_backoff_wins_over_the_workers_default() {
        let b = Backoff::from(RetryBackoff {
            base_ms: 10,
            max_ms: 15,
        });
        let (e, _) = outcome_event(Err(JobError::Failed("x".into())), 2, 3, &b);
        let Event::Retrying { retry_in_ms, .. } = e else {
            panic!("{e:?}")
        };
        assert!((12..=18).contains(&retry_in_ms), "{retry_in_ms}");
    }
}
