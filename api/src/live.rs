//! The live side of the stream for one API process: one tail, many subscribers.
//!
//! [`EventHub`] runs a single ordered consumer from the stream's end (one per API
//! process, never one per connection) and fans every stored event out over a
//! bounded broadcast channel. The tail runs only while someone listens: the first
//! subscriber starts it at the stream's end, and it stops once nobody has listened for
//! [`IDLE_STOP`], so an API that only takes submissions decodes no events. SSE
//! connections and `wait` calls subscribe to it; SSE catch-up reads older events straight from the stream by sequence
//! ([`jobstream_core::stream_read`]) and hands over to the tail, deduplicating by sequence.
//!
//! Events other than `queued` carry neither owner nor kind, so the hub keeps a
//! bounded job → (owner, kind, queue) [`Directory`], fed by `queued` events and
//! falling back to reading the job's `queued` event from the stream.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jobstream_core::broker::{Broker, BrokerError};
use jobstream_core::event::{Envelope, Event, EventType};
use jobstream_core::stream_read::{self, Stored};
use sea_orm::DatabaseConnection;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Who a job belongs to and where it runs: what isolation and filters need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobMeta {
    /// Owner (`sub` of the submitter).
    pub owner: String,
    /// Kind name.
    pub kind: String,
    /// Queue name.
    pub queue: String,
}

/// One stored event, decoded once and shared by every subscriber.
#[derive(Debug)]
pub struct LiveEvent {
    /// Stream sequence (the SSE `id`).
    pub seq: u64,
    /// The event's job.
    pub job_id: Uuid,
    /// The event's type (the SSE `event`).
    pub event_type: EventType,
    /// Owner, kind and queue of the job, when known.
    pub meta: Option<Arc<JobMeta>>,
    /// The event as stored (the SSE `data`).
    pub data: Arc<str>,
}

impl LiveEvent {
    /// Builds the shared form of a decoded stored message.
    pub fn new(msg: &Stored, env: &Envelope, meta: Option<Arc<JobMeta>>) -> Self {
        LiveEvent {
            seq: msg.seq,
            job_id: env.job_id,
            event_type: env.event_type(),
            meta,
            data: Arc::from(String::from_utf8_lossy(&msg.payload).as_ref()),
        }
    }
}

/// Tuning of the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Events buffered for subscribers; a subscriber further behind is lagging.
    pub capacity: usize,
    /// Jobs remembered in the directory.
    pub directory_size: usize,
    /// SSE keep-alive comment interval.
    pub keep_alive: Duration,
    /// How long the tail keeps running with nobody subscribed (default [`IDLE_STOP`]).
    pub idle_stop: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            capacity: 4096,
            directory_size: 200_000,
            keep_alive: Duration::from_secs(15),
            idle_stop: IDLE_STOP,
        }
    }
}

/// The map and the insertion order (for forgetting the oldest).
type Entries = (HashMap<Uuid, Arc<JobMeta>>, VecDeque<Uuid>);

/// Bounded job → [`JobMeta`] map, oldest entries forgotten first.
#[derive(Debug)]
pub struct Directory {
    inner: Mutex<Entries>,
    size: usize,
    /// The projection: a job whose `queued` event has left the stream is found there.
    db: DatabaseConnection,
}

impl Directory {
    fn new(size: usize, db: DatabaseConnection) -> Self {
        Directory {
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
            size: size.max(1),
            db,
        }
    }

    /// Owner, kind and queue of a job as the projection has them.
    async fn read_projection(&self, id: Uuid) -> Option<Arc<JobMeta>> {
        use jobstream_entity::queued_job::{Column as C, Entity as Jobs};
        use sea_orm::{EntityTrait, QuerySelect};
        let row = Jobs::find_by_id(id.to_string())
            .select_only()
            .columns([C::Owner, C::Kind, C::Queue])
            .into_tuple::<(String, String, String)>()
            .one(&self.db)
            .await;
        match row {
            Ok(row) => row.map(|(owner, kind, queue)| Arc::new(JobMeta { owner, kind, queue })),
            Err(e) => {
                tracing::warn!(error = %e, job_id = %id, "owner of a job not read from the projection");
                None
            }
        }
    }

    fn get(&self, id: Uuid) -> Option<Arc<JobMeta>> {
        let guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.0.get(&id).cloned()
    }

    fn insert(&self, id: Uuid, meta: Arc<JobMeta>) {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (map, order) = &mut *guard;
        if map.insert(id, meta).is_none() {
            order.push_back(id);
            while order.len() > self.size {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
    }

    /// Owner, kind and queue of the event's job: from the event itself when it is
    /// `queued`, else remembered, else read from the job's `queued` event in the stream,
    /// else (that event is gone, by retention) from the projection.
    pub async fn resolve(
        &self,
        broker: &Broker,
        env: &Envelope,
    ) -> Result<Option<Arc<JobMeta>>, BrokerError> {
        if let Event::Queued(spec) | Event::Scheduled(spec) = &env.event {
            let meta = Arc::new(JobMeta {
                owner: spec.owner.clone(),
                kind: spec.kind.clone(),
                queue: spec.queue.to_string(),
            });
            self.insert(env.job_id, meta.clone());
            return Ok(Some(meta));
        }
        if let Some(m) = self.get(env.job_id) {
            return Ok(Some(m));
        }
        // The job's first event carries its spec, whatever its lane (`queued-high`…), and
        // a delayed (`scheduled`) or periodic (fired) job's too: read its history.
        let history = broker.job_history(env.job_id).await?;
        match history
            .into_iter()
            .find(|(_, e)| matches!(e.event, Event::Queued(_) | Event::Scheduled(_)))
        {
            Some((_, first)) => Box::pin(self.resolve(broker, &first)).await,
            None => {
                let meta = self.read_projection(env.job_id).await;
                if let Some(m) = &meta {
                    self.insert(env.job_id, m.clone());
                }
                Ok(meta)
            }
        }
    }
}

/// How long the tail keeps running with nobody subscribed, by default (spares
/// restarting it for every short `wait`).
pub const IDLE_STOP: Duration = Duration::from_secs(30);

struct Inner {
    broker: Broker,
    /// Whether the tail runs. Starting and stopping it hold this lock, and so does
    /// subscribing: a subscriber is never left with a tail that has just stopped.
    tail: Arc<tokio::sync::Mutex<bool>>,
    tx: broadcast::Sender<Arc<LiveEvent>>,
    directory: Arc<Directory>,
    closing: CancellationToken,
    config: HubConfig,
    tickets: tokio::sync::OnceCell<async_nats::jetstream::kv::Store>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone (the server stopped): stop the tail and every stream.
        self.closing.cancel();
    }
}

/// One API process's view of the live stream. Cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<Inner>,
}

impl EventHub {
    /// The hub over `broker` (and the projection `db`); its tail starts with the first
    /// subscriber.
    pub async fn with_config(
        broker: Broker,
        db: DatabaseConnection,
        config: HubConfig,
    ) -> Result<Self, BrokerError> {
        let (tx, _) = broadcast::channel(config.capacity.max(16));
        Ok(EventHub {
            inner: Arc::new(Inner {
                broker,
                tail: Arc::new(tokio::sync::Mutex::new(false)),
                tx,
                directory: Arc::new(Directory::new(config.directory_size, db)),
                closing: CancellationToken::new(),
                config,
                tickets: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// A receiver of every event stored from now on; starts the tail at the stream's end
    /// if it is not running.
    pub async fn subscribe(&self) -> Result<broadcast::Receiver<Arc<LiveEvent>>, BrokerError> {
        let inner = &self.inner;
        let mut running = inner.tail.lock().await;
        let rx = inner.tx.subscribe();
        if !*running {
            let start = stream_read::bounds(&inner.broker).await?.last + 1;
            tokio::spawn(run_tail(
                Tail {
                    broker: inner.broker.clone(),
                    tx: inner.tx.clone(),
                    directory: inner.directory.clone(),
                    closing: inner.closing.clone(),
                    running: inner.tail.clone(),
                    idle_stop: inner.config.idle_stop,
                },
                start,
            ));
            *running = true;
        }
        Ok(rx)
    }

    /// The broker the hub reads from.
    pub fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    /// The job directory.
    pub fn directory(&self) -> &Directory {
        &self.inner.directory
    }

    /// Tuning.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// Cancelled when the server shuts down: every SSE stream and `wait` ends.
    pub fn closing(&self) -> CancellationToken {
        self.inner.closing.clone()
    }

    /// Ends every open stream (graceful shutdown).
    pub fn close(&self) {
        self.inner.closing.cancel();
    }

    /// The SSE ticket bucket, opened (or created) on first use.
    pub(crate) async fn ticket_store(
        &self,
    ) -> Result<&async_nats::jetstream::kv::Store, BrokerError> {
        self.inner
            .tickets
            .get_or_try_init(|| crate::tickets::open_bucket(&self.inner.broker))
            .await
    }

    /// Whether the tail runs (someone listens, or did within [`HubConfig::idle_stop`]).
    pub async fn tail_running(&self) -> bool {
        *self.inner.tail.lock().await
    }

    /// Open subscriptions (SSE connections and waits).
    pub fn subscribers(&self) -> usize {
        self.inner.tx.receiver_count()
    }
}

/// What the tail works with.
struct Tail {
    broker: Broker,
    tx: broadcast::Sender<Arc<LiveEvent>>,
    directory: Arc<Directory>,
    closing: CancellationToken,
    running: Arc<tokio::sync::Mutex<bool>>,
    idle_stop: Duration,
}

impl Tail {
    /// Stops the tail if nobody listens: under the lock subscribers take.
    async fn stop_if_unheard(&self) -> bool {
        let mut running = self.running.lock().await;
        if self.tx.receiver_count() > 0 {
            return false;
        }
        *running = false;
        tracing::debug!("live tail stopped: nobody listens");
        true
    }
}

/// The one tail of this process: an ordered consumer from `start`, recreated from the
/// last seen sequence if it fails, until `closing` or until nobody has listened for
/// [`HubConfig::idle_stop`].
async fn run_tail(tail: Tail, start: u64) {
    let Tail {
        broker,
        tx,
        directory,
        closing,
        ..
    } = &tail;
    let mut next = start;
    let mut heard = tokio::time::Instant::now();
    let mut idle_check = tokio::time::interval(tail.idle_stop / 3);
    while !closing.is_cancelled() {
        let messages =
            match stream_read::ordered_from(broker, next, "jobstream api live tail").await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, next, "live tail cannot start; retrying");
                    tokio::select! {
                        () = closing.cancelled() => return,
                        () = tokio::time::sleep(stream_read::RETRY_DELAY) => continue,
                    }
                }
            };
        let mut messages = std::pin::pin!(messages);
        tracing::debug!(next, "live tail reading");
        loop {
            let item = tokio::select! {
                () = closing.cancelled() => return,
                _ = idle_check.tick() => {
                    if tx.receiver_count() > 0 {
                        heard = tokio::time::Instant::now();
                    } else if heard.elapsed() >= tail.idle_stop && tail.stop_if_unheard().await {
                        return;
                    }
                    continue;
                }
                item = messages.next() => item,
            };
            match item {
                Some(Ok((msg, _))) => {
                    next = msg.seq + 1;
                    if tx.receiver_count() == 0 {
                        // Nobody to hand it to: not worth decoding.
                        continue;
                    }
                    heard = tokio::time::Instant::now();
                    let Some(env) = stream_read::decode_or_log(&msg) else {
                        continue;
                    };
                    let meta = match directory.resolve(broker, &env).await {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(error = %e, job_id = %env.job_id, "owner of event unknown; only admins see it");
                            None
                        }
                    };
                    // Every receiver may have gone meanwhile: nobody listens right now.
                    let _ = tx.send(Arc::new(LiveEvent::new(&msg, &env, meta)));
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, next, "live tail interrupted; resuming");
                    break;
                }
                None => break,
            }
        }
    }
}
