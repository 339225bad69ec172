//! The worker process: pull, run, report, ack.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{
    self, AckKind,
    consumer::{self, AckPolicy, DeliverPolicy, pull},
};
use futures::{FutureExt, StreamExt};
use jobstream_core::broker::{Broker, BrokerError};
use jobstream_core::event::{Envelope, Event, JobSpec, Priority, REQUEST_ID_HEADER, RetryBackoff};
use jobstream_core::subject::{self, QueueName};
use jobstream_core::{JobState, JobStatus};
use rand::Rng;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::handler::{JobContext, JobError, ProgressReporter, Registry};
use crate::limit::{self, Slots};

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
    /// `max_ack_pending` of a lane consumer this worker creates for a queue without a limit.
    pub queue_max_in_flight: i64,
    /// Global limits: jobs of a queue running at once across all workers, enforced by
    /// the server (the lane consumers' `max_ack_pending`).
    /// Applied to existing consumers at start; a queue not listed keeps what it has.
    pub queue_limits: HashMap<QueueName, i64>,
    /// Back-off between attempts for jobs whose `queued` event names none.
    pub backoff: Backoff,
    /// On shutdown: how long running jobs may finish before they are cancelled.
    pub shutdown_grace: Duration,
    /// How long a cancelled job's handler may take to return after its token is cancelled.
    pub cancel_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: format!("worker-{}", std::process::id()),
            queues: vec![QueueName::default_queue()],
            concurrency: 32,
            ack_wait: Duration::from_secs(30),
            queue_max_in_flight: 10_000,
            queue_limits: HashMap::new(),
            backoff: Backoff::default(),
            shutdown_grace: Duration::from_secs(25),
            cancel_grace: Duration::from_secs(5),
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
    format!("worker-{queue}")
}

/// Durable consumer name of one priority lane of a queue. The normal lane keeps
/// [`consumer_name`]; the others are `worker_high-<queue>` and `worker_low-<queue>`
/// (the `_` cannot collide with a normal lane's `worker-…`).
pub fn lane_consumer_name(queue: &QueueName, lane: Priority) -> String {
    match lane {
        Priority::Normal => consumer_name(queue),
        other => format!("worker_{}-{queue}", other.as_str()),
    }
}

/// Cancellation handles of the jobs this worker runs, by job id.
type Running = Mutex<HashMap<Uuid, CancellationToken>>;

struct Shared {
    broker: Broker,
    registry: Registry,
    config: WorkerConfig,
    /// Cancelled when the grace period is over: running handlers must stop.
    hard_stop: CancellationToken,
    /// Jobs running here; a cancel request for one of them cancels its token.
    running: Running,
}

/// The lane consumers of one queue, most urgent first, and its slots when it is limited.
struct QueueLanes {
    queue: QueueName,
    lanes: Vec<(Priority, consumer::Consumer<pull::Config>)>,
    slots: Option<Slots>,
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
        for queue in &config.queues {
            let mut lanes = Vec::new();
            for lane in subject::LANES {
                let c = ensure_lane_consumer(&stream, &config, queue, lane)
                    .await
                    .map_err(|reason| WorkerError::Consumer {
                        queue: queue.to_string(),
                        reason,
                    })?;
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
            queues.push(QueueLanes {
                queue: queue.clone(),
                lanes,
                slots,
            });
        }
        Ok(Worker {
            shared: Arc::new(Shared {
                broker,
                registry,
                config,
                hard_stop: CancellationToken::new(),
                running: Mutex::new(HashMap::new()),
            }),
            queues,
        })
    }

    /// Runs until `shutdown`; then stops pulling, lets running jobs finish within the
    /// grace period, cancels the rest (their messages are redelivered to other workers).
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
                            let work = process(&shared, msg);
                            let due = match &slot {
                                // The queue's slot is held (kept alive) exactly as long as the job.
                                Some(token) => with_heartbeat(token, shared.config.ack_wait, work).await,
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
        listener.abort();
        // Acks and naks are fire-and-forget publishes: make sure they leave before the connection goes.
        if let Err(e) = self.shared.broker.client().flush().await {
            tracing::warn!(error = %e, "could not flush the last acks; their messages come back after ack_wait");
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// Creates a lane consumer, or brings an existing one up to date: its filters, and
/// its `max_ack_pending` when this worker is configured with a limit for the queue
/// (without one, an existing consumer keeps its limit, so workers started without
/// `--queue-limit` never undo it).
async fn ensure_lane_consumer(
    stream: &jetstream::stream::Stream<()>,
    config: &WorkerConfig,
    queue: &QueueName,
    lane: Priority,
) -> Result<consumer::Consumer<pull::Config>, String> {
    use async_nats::jetstream::consumer::FromConsumer;
    let name = lane_consumer_name(queue, lane);
    let limit = config.queue_limits.get(queue).copied();
    let mut wanted = match stream.consumer_info(&name).await {
        Ok(info) => {
            pull::Config::try_from_consumer_config(info.config).map_err(|e| e.to_string())?
        }
        Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
            pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!(
                    "jobstream workers of queue {queue}, {} priority",
                    lane.as_str()
                )),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                // Attempts are counted by the worker against each job's own max_attempts.
                max_deliver: -1,
                max_ack_pending: config.queue_max_in_flight,
                ..Default::default()
            }
        }
        Err(e) => return Err(e.to_string()),
    };
    wanted.filter_subject = String::new();
    wanted.filter_subjects = subject::runnable_in(queue, lane);
    if let Some(limit) = limit {
        wanted.max_ack_pending = limit;
    }
    stream
        .create_consumer(wanted)
        .await
        .map_err(|e| e.to_string())
}

/// How long an idle puller waits for a doorbell before looking again anyway (this
/// bounds how late it notices a message redelivered after a dead worker's `ack_wait`).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Margin after a `Nak(delay)` before looking for the message again.
const REDELIVERY_SLACK: Duration = Duration::from_millis(20);

/// A message handed from a puller to the worker, with the local permit it holds
/// and where to say when a `Nak`ed message is due back.
struct Delivery {
    msg: jetstream::Message,
    permit: OwnedSemaphorePermit,
    wake: tokio::sync::mpsc::UnboundedSender<tokio::time::Instant>,
    /// The queue's concurrency token, when the queue is limited.
    slot: Option<jetstream::Message>,
}

/// Pulls one queue, highest lane first, in batches sized to the free local permits,
/// so no message waits in a buffer while its ack timer runs. When every lane is
/// empty it waits for a "doorbell" (a core NATS subscription on the queue's
/// runnable subjects, which sees each new `queued`/`retry_requested` as it is
/// stored), for a message it `Nak`ed to be due back, or for [`IDLE_POLL`].
async fn pull_loop(
    lanes: QueueLanes,
    client: async_nats::Client,
    permits: Arc<Semaphore>,
    tx: tokio::sync::mpsc::Sender<Delivery>,
    shutdown: CancellationToken,
) {
    use std::cmp::Reverse;
    const MAX_BATCH: usize = 256;
    let queue = &lanes.queue;
    let mut doorbell = doorbell(&client, queue).await;
    let (wake, mut wakeups) = tokio::sync::mpsc::unbounded_channel();
    let mut due = std::collections::BinaryHeap::new();
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
        // A limited queue: no more jobs than the server hands out tokens.
        let mut tokens = Vec::new();
        if let Some(slots) = &lanes.slots {
            tokens = tokio::select! {
                () = shutdown.cancelled() => break,
                t = slots.acquire(held.len(), IDLE_POLL) => t,
            };
            if tokens.is_empty() {
                continue;
            }
            held.truncate(tokens.len());
        }
        // Whatever rang so far is covered by the look below.
        while let Some(Some(_)) = doorbell.next().now_or_never() {}
        let mut received = 0usize;
        for (lane, consumer) in &lanes.lanes {
            if held.is_empty() {
                break;
            }
            let batch = consumer.fetch().max_messages(held.len()).messages().await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(%queue, lane = lane.as_str(), error = %e, "pull request failed; retrying");
                    continue;
                }
            };
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break 'outer,
                    next = batch.next() => match next {
                        Some(Ok(msg)) => {
                            let Some(permit) = held.pop() else { break };
                            received += 1;
                            let delivery = Delivery { msg, permit, wake: wake.clone(), slot: tokens.pop() };
                            if tx.send(delivery).await.is_err() { break 'outer; }
                        }
                        Some(Err(e)) => tracing::debug!(%queue, error = %e, "pull batch ended"),
                        None => break,
                    }
                }
            }
        }
        for token in tokens.drain(..) {
            limit::release(token).await;
        }
        if received == 0 {
            drop(held);
            loop {
                while let Ok(at) = wakeups.try_recv() {
                    due.push(Reverse(at));
                }
                let now = tokio::time::Instant::now();
                let mut past_due = false;
                while due.peek().is_some_and(|Reverse(at)| *at <= now) {
                    due.pop();
                    past_due = true;
                }
                if past_due {
                    break;
                }
                let until = due
                    .peek()
                    .map_or(now + IDLE_POLL, |Reverse(at)| (*at).min(now + IDLE_POLL));
                tokio::select! {
                    () = shutdown.cancelled() => break 'outer,
                    _ = doorbell.next() => break,
                    () = tokio::time::sleep_until(until) => break,
                    Some(at) = wakeups.recv() => due.push(Reverse(at)),
                }
            }
        }
    }
}

/// New runnable messages of a queue (any lane), as a signal only.
async fn doorbell(
    client: &async_nats::Client,
    queue: &QueueName,
) -> futures::stream::SelectAll<async_nats::Subscriber> {
    let mut subs = Vec::new();
    for lane in subject::LANES {
        for filter in subject::runnable_in(queue, lane) {
            match client.subscribe(filter).await {
                Ok(s) => subs.push(s),
                // Without it the puller still looks every IDLE_POLL.
                Err(e) => tracing::warn!(%queue, error = %e, "doorbell subscription failed"),
            }
        }
    }
    futures::stream::select_all(subs)
}

/// Cancels the token of a running job when its `cancel_requested` event is stored.
/// (A job that is not running is cancelled by the event itself: no worker starts it.)
async fn listen_for_cancellations(shared: Arc<Shared>, queues: Vec<QueueName>) {
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

/// What to do with the message once the attempt is over.
enum Disposition {
    Ack,
    Nak(Option<Duration>),
    Term,
}

/// What a delivery of a runnable message should do, decided from the job's history.
#[derive(Debug)]
enum Plan {
    /// Run an attempt; `started` is stored only if the job's latest event is still `last_seq`.
    Run { spec: JobSpec, last_seq: u64 },
    /// The job was asked to cancel while its previous worker ran it: record `cancelled`.
    Cancel { spec: JobSpec, last_seq: u64 },
    /// Nothing to run (finished, cancelled, or superseded by a later retry request).
    Skip(String),
}

/// Folds a job's history (in stream order) and decides what the runnable message at
/// `msg_seq` should do. Only the latest accepted `queued`/`retry_requested` event may
/// run the job, so a job runs at most once per request, however its messages arrive.
fn plan(history: &[(u64, Envelope)], msg_seq: u64) -> Plan {
    let mut state: Option<JobState> = None;
    let mut trigger = 0;
    for (seq, env) in history {
        match &mut state {
            None => {
                state = JobState::from_queued(env, *seq);
                if state.is_some() {
                    trigger = *seq;
                }
            }
            Some(s) => {
                if s.apply(env, *seq).is_ok() && matches!(env.event, Event::RetryRequested { .. }) {
                    trigger = *seq;
                }
            }
        }
    }
    let Some(job) = state else {
        return Plan::Skip("the job's queued event is not in the stream".into());
    };
    if trigger != msg_seq {
        return Plan::Skip(format!("superseded by the job's event at seq {trigger}"));
    }
    match job.status {
        s if s.is_terminal() => Plan::Skip(format!("the job is already {}", s.as_str())),
        JobStatus::Running if job.cancel_requested() => Plan::Cancel {
            spec: job.spec,
            last_seq: job.last_seq,
        },
        _ => Plan::Run {
            spec: job.spec,
            last_seq: job.last_seq,
        },
    }
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
    let env = match Envelope::decode(&msg.payload) {
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
    let request_id = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(REQUEST_ID_HEADER))
        .map(|v| v.as_str().to_owned());
    let span = tracing::info_span!(
        "job",
        job_id = %env.job_id,
        kind = tracing::field::Empty,
        queue = tracing::field::Empty,
        attempt = delivered,
        stream_seq = seq,
        request_id = request_id.as_deref().unwrap_or(""),
    );
    let disposition = decide_and_run(shared, &msg, &env, seq, delivered, request_id.as_deref())
        .instrument(span.clone())
        .await;
    let (acked, due) = match disposition {
        Disposition::Ack => (msg.double_ack().await, None),
        Disposition::Nak(d) => (
            msg.ack_with(AckKind::Nak(d)).await,
            Some(d.unwrap_or_default()),
        ),
        Disposition::Term => (msg.ack_with(AckKind::Term).await, None),
    };
    if let Err(e) = acked {
        span.in_scope(|| tracing::warn!(error = %e, "ack failed; the message will be redelivered and recognised as done"));
    }
    due
}

/// Decides from the job's history (or, for a first delivery of a `queued` message,
/// from the message itself, with the `started` append conditional on nothing having
/// happened since) and runs the attempt. A conflicting append means the job changed
/// meanwhile (say, a cancel request): fold again and decide again.
async fn decide_and_run(
    shared: &Shared,
    msg: &jetstream::Message,
    env: &Envelope,
    seq: u64,
    attempt: u32,
    request_id: Option<&str>,
) -> Disposition {
    const MAX_CONFLICTS: usize = 8;
    // A first delivery of a `queued` message that is its job's first event (no
    // earlier event, such as a cancel request of a delayed job, to fold) needs no
    // fold: the conditional `started` covers whatever comes after it.
    let mut fast = match &env.event {
        Event::Queued(spec) if attempt == 1 => {
            match first_event_seq(&shared.broker, env.job_id).await {
                Ok(Some(first)) if first == seq => Some(Plan::Run {
                    spec: spec.clone(),
                    last_seq: seq,
                }),
                Ok(_) => None,
                Err(e) => return retry_soon(&e),
            }
        }
        _ => None,
    };
    for _ in 0..MAX_CONFLICTS {
        let plan = match fast.take() {
            Some(p) => p,
            None => match shared.broker.job_history(env.job_id).await {
                Ok(history) => plan(&history, seq),
                Err(e) => return retry_soon(&e),
            },
        };
        let result = match plan {
            Plan::Skip(why) => {
                tracing::info!(reason = %why, "nothing to run; acking");
                return Disposition::Ack;
            }
            Plan::Cancel { spec, last_seq } => {
                let cancelled = Envelope::new(
                    env.job_id,
                    attempt,
                    Event::Cancelled {
                        reason: Some("cancelled while its worker was gone".into()),
                    },
                );
                match shared
                    .broker
                    .publish_if_last(&cancelled, &spec.queue, request_id, last_seq)
                    .await
                {
                    Ok(_) => {
                        tracing::info!("job cancelled");
                        return Disposition::Term;
                    }
                    Err(e) => Err(e),
                }
            }
            Plan::Run { spec, last_seq } => {
                let span = tracing::Span::current();
                span.record("kind", spec.kind.as_str());
                span.record("queue", spec.queue.as_str());
                run_attempt(
                    shared, msg, env.job_id, &spec, attempt, request_id, last_seq,
                )
                .await
            }
        };
        match result {
            Ok(d) => return d,
            Err(BrokerError::Conflict { .. }) => {
                tracing::debug!("the job changed meanwhile; deciding again");
            }
            Err(e) => return retry_soon(&e),
        }
    }
    tracing::warn!("the job keeps changing; trying again later");
    Disposition::Nak(Some(Duration::from_secs(1)))
}

/// Stream sequence of a job's first stored event.
async fn first_event_seq(broker: &Broker, job_id: Uuid) -> Result<Option<u64>, BrokerError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let stream = broker.stream().await?;
    match stream
        .get_first_raw_message_by_subject(subject::of_job(job_id), 1)
        .await
    {
        Ok(m) => Ok(Some(m.sequence)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(BrokerError::Read(e.to_string())),
    }
}

/// Completes once a `cancel_requested` of the job is stored after `since`: a
/// fallback for a cancel request whose core NATS notification this worker missed
/// (say, while reconnecting). Looks every `every`.
async fn cancel_stored_after(
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
struct RunningGuard<'a> {
    running: &'a Running,
    job_id: Uuid,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut r) = self.running.lock() {
            r.remove(&self.job_id);
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

#[allow(clippy::too_many_arguments)]
async fn run_attempt(
    shared: &Shared,
    msg: &jetstream::Message,
    job_id: Uuid,
    spec: &JobSpec,
    attempt: u32,
    request_id: Option<&str>,
    last_seq: u64,
) -> Result<Disposition, BrokerError> {
    let broker = &shared.broker;
    let publish = |event: Event| {
        let env = Envelope::new(job_id, attempt, event);
        async move { broker.publish(&env, &spec.queue, request_id).await }
    };
    let fail_now = |error: String| {
        let env = Envelope::new(job_id, attempt, Event::Failed { error });
        async move {
            broker
                .publish_if_last(&env, &spec.queue, request_id, last_seq)
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
    // Registered before `started` is stored, so a cancel request stored after it finds the job.
    let job_token = shared.hard_stop.child_token();
    let request_token = CancellationToken::new();
    if let Ok(mut r) = shared.running.lock() {
        r.insert(job_id, request_token.clone());
    }
    let _guard = RunningGuard {
        running: &shared.running,
        job_id,
    };
    let started = Envelope::new(
        job_id,
        attempt,
        Event::Started {
            worker: shared.config.id.clone(),
        },
    );
    let started_seq = broker
        .publish_if_last(&started, &spec.queue, request_id, last_seq)
        .await?;
    tracing::info!("job started");

    let ctx = JobContext {
        job_id,
        kind: spec.kind.clone(),
        payload: spec.payload.clone(),
        attempt,
        max_attempts: spec.max_attempts,
        cancel: job_token.clone(),
        progress: ProgressReporter::new(
            broker.clone(),
            spec.queue.clone(),
            job_id,
            attempt,
            request_id.map(str::to_owned),
        ),
    };
    let timeout = Duration::from_millis(spec.timeout_ms);
    let cancel_grace = shared.config.cancel_grace;
    let ran = with_heartbeat(msg, shared.config.ack_wait, async {
        let work = handler.run(ctx);
        tokio::pin!(work);
        tokio::select! {
            r = &mut work => Ran::Returned(r),
            () = tokio::time::sleep(timeout) => {
                // The deadline: the handler's future is dropped (its token cancelled for any tasks it spawned).
                job_token.cancel();
                Ran::Returned(Err(JobError::Failed(format!("timed out after {} ms", spec.timeout_ms))))
            }
            () = async {
                tokio::select! {
                    () = request_token.cancelled() => {}
                    () = cancel_stored_after(broker, &spec.queue, job_id, started_seq, shared.config.ack_wait) => {
                        tracing::info!("cancel request found in the stream: stopping the handler");
                    }
                }
            } => {
                job_token.cancel();
                Ran::Cancelled(tokio::time::timeout(cancel_grace, &mut work).await.ok())
            }
        }
    })
    .await;

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
            (
                Event::Cancelled {
                    reason: Some(format!(
                        "cancelled while running (attempt {attempt}, handler {how})"
                    )),
                },
                Disposition::Term,
            )
        }
        Ran::Returned(outcome) => {
            if shared.hard_stop.is_cancelled() && outcome.is_err() {
                // Interrupted by shutdown, not failed: hand it to another worker now.
                tracing::warn!("job interrupted by shutdown; redelivering");
                return Ok(Disposition::Nak(None));
            }
            let backoff = spec.backoff.map_or(shared.config.backoff, Backoff::from);
            outcome_event(outcome, attempt, spec.max_attempts, &backoff)
        }
    };
    let name = event.event_type().as_str();
    publish(event).await?;
    tracing::info!(outcome = name, "job attempt finished");
    Ok(disposition)
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

    fn spec() -> JobSpec {
        JobSpec {
            kind: "echo".into(),
            queue: QueueName::default_queue(),
            owner: "alice".into(),
            payload: Value::Null,
            priority: Priority::Normal,
            max_attempts: 3,
            timeout_ms: 1000,
            run_at: None,
            idempotency_key: None,
            result_ttl_ms: None,
            backoff: None,
        }
    }

    fn history(events: Vec<Event>) -> Vec<(u64, Envelope)> {
        let id = Uuid::now_v7();
        events
            .into_iter()
            .enumerate()
            .map(|(i, e)| (i as u64 + 1, Envelope::new(id, 0, e)))
            .collect()
    }

    #[test]
    fn only_the_latest_runnable_event_runs_the_job() {
        let retry = || Event::RetryRequested {
            priority: Priority::Normal,
            by: None,
        };
        let h = history(vec![
            Event::Queued(spec()),
            Event::CancelRequested {
                reason: None,
                by: None,
            },
            retry(),
        ]);
        // The original queued message of a cancelled-then-retried job is superseded.
        assert!(matches!(plan(&h, 1), Plan::Skip(_)));
        assert!(matches!(plan(&h, 3), Plan::Run { last_seq: 3, .. }));
        // A retry request the fold refused (the job was not finished) never runs it.
        let h = history(vec![Event::Queued(spec()), retry()]);
        assert!(matches!(plan(&h, 1), Plan::Run { last_seq: 1, .. }));
        assert!(matches!(plan(&h, 2), Plan::Skip(_)));
    }

    #[test]
    fn finished_or_cancelled_jobs_never_run_again() {
        let cancelled = history(vec![
            Event::Queued(spec()),
            Event::CancelRequested {
                reason: None,
                by: None,
            },
        ]);
        assert!(matches!(plan(&cancelled, 1), Plan::Skip(_)));
        let done = history(vec![
            Event::Queued(spec()),
            Event::Started { worker: "w".into() },
            Event::Succeeded {
                result: Value::Null,
            },
        ]);
        assert!(matches!(plan(&done, 1), Plan::Skip(_)));
        // Its worker died while it ran, and it was asked to cancel meanwhile.
        let orphan = history(vec![
            Event::Queued(spec()),
            Event::Started { worker: "w".into() },
            Event::CancelRequested {
                reason: None,
                by: None,
            },
        ]);
        assert!(matches!(plan(&orphan, 1), Plan::Cancel { last_seq: 3, .. }));
        // Its worker died while it ran: run it again.
        let died = history(vec![
            Event::Queued(spec()),
            Event::Started { worker: "w".into() },
        ]);
        assert!(matches!(plan(&died, 1), Plan::Run { last_seq: 2, .. }));
        assert!(matches!(plan(&[], 1), Plan::Skip(_)));
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
