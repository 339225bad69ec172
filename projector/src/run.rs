//! The projector process: a durable consumer over every job event.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use futures::StreamExt;
use futures::future::BoxFuture;
use jobstream_core::Envelope;
use jobstream_core::broker::{Broker, BrokerError};
use jobstream_core::stored::{Record, StoredMessage};
use jobstream_core::stream_read;
use sea_orm::{DatabaseConnection, DbBackend, DbErr};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::apply::{self, BatchOutcome, Delivered};
use crate::replay::control::ReplayService;

/// Events per transaction of a replay run on request.
const REPLAY_BATCH: usize = 1000;

/// How the projector folds and sweeps.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Durable consumer name; also the checkpoint's name.
    pub name: String,
    /// Most events folded in one transaction.
    pub batch_size: usize,
    /// How often finished jobs are swept.
    pub sweep_interval: Duration,
    /// Age after which a finished job is deleted from the projection.
    pub job_ttl: Duration,
    /// How long a small delivery waits for more before it is folded. Each transaction
    /// costs about as much again as its rows (checkpoint, counts, commit, WAL write):
    /// at a few hundred jobs/s without it, every event is a transaction of its own and
    /// the projector takes a core's worth of CPU from everything else. The projection
    /// lags this much more; the API's reads and waits come from the stream, not from it.
    pub linger: Duration,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        ProjectorConfig {
            name: jobstream_core::replay::DEFAULT_PROJECTOR.to_owned(),
            batch_size: 500,
            sweep_interval: Duration::from_secs(60),
            job_ttl: jobstream_core::replay::DEFAULT_JOB_TTL,
            linger: Duration::from_millis(2),
        }
    }
}

/// Errors that stop the projector.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// The consumer could not be created or read.
    #[error("JetStream consumer: {0}")]
    Consumer(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] DbErr),
}

/// Folds the job stream into SQL.
pub struct Projector {
    broker: Broker,
    db: DatabaseConnection,
    config: ProjectorConfig,
    consumer: consumer::Consumer<pull::Config>,
    applied_tx: watch::Sender<u64>,
    /// Reopens the projector's pool after a failed batch (`None`: keep the one given).
    connector: Option<Connector>,
    failures: watch::Sender<u64>,
    /// The replay commands of this projector's name, served while it runs.
    replays: Option<ReplayService>,
    /// The pin of the consumer's priority group this projector last received messages under.
    pin: Option<String>,
}

impl Projector {
    /// Creates (or reuses) the durable consumer. The projector writes through a pool of its
    /// own on the same database as `db` (see [`own_pool`]), which it can drop and reopen.
    pub async fn build(
        broker: Broker,
        db: DatabaseConnection,
        config: ProjectorConfig,
    ) -> Result<Self, ProjectorError> {
        // Replays write through the pool given (the swap has its own connection).
        let shared = db.clone();
        let replay_db: Connector = Arc::new(move || {
            let db = shared.clone();
            Box::pin(async move { Ok(db) })
        });
        match own_pool(&db) {
            Some(connector) => {
                let db = connector().await?;
                Self::build_inner(broker, db, Some(connector), replay_db, config).await
            }
            None => Self::build_inner(broker, db, None, replay_db, config).await,
        }
    }

    /// Like [`build`](Self::build), with the pools opened by `connector` (one now, a new
    /// one after each failed batch).
    pub async fn build_with_connector(
        broker: Broker,
        connector: Connector,
        config: ProjectorConfig,
    ) -> Result<Self, ProjectorError> {
        let db = connector().await?;
        Self::build_inner(broker, db, Some(connector.clone()), connector, config).await
    }

    async fn build_inner(
        broker: Broker,
        db: DatabaseConnection,
        connector: Option<Connector>,
        replay_db: Connector,
        config: ProjectorConfig,
    ) -> Result<Self, ProjectorError> {
        // Listening before `build` returns: a replay asked for right after is answered.
        let replays = ReplayService::start(
            broker.clone(),
            replay_db,
            &config.name,
            REPLAY_BATCH,
            config.job_ttl,
        )
        .await
        .map_err(|e| ProjectorError::Consumer(e.to_string()))?;
        let stream = broker
            .stream()
            .await
            .map_err(|e| ProjectorError::Consumer(e.to_string()))?;
        let consumer = crate::standby::ensure_consumer(&stream, &config).await?;
        let checkpoint = apply::load_checkpoint(&db, &config.name).await?;
        let (applied_tx, _) = watch::channel(checkpoint);
        Ok(Projector {
            broker,
            db,
            config,
            consumer,
            applied_tx,
            connector,
            failures: watch::channel(0).0,
            replays: Some(replays),
            pin: None,
        })
    }

    /// Watches the checkpoint: the last stream sequence committed to SQL.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    /// Watches how many batches failed to commit (each is retried): a test signal, and what
    /// a supervisor would look at.
    pub fn failures(&self) -> watch::Receiver<u64> {
        self.failures.subscribe()
    }

    /// The broker this projector reads from.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Applies one batch of `(sequence, job event)` in one transaction.
    pub async fn apply_batch(
        &self,
        batch: &[(u64, Option<Envelope>)],
    ) -> Result<BatchOutcome, DbErr> {
        apply::apply_batch(&self.db, &self.config.name, batch).await
    }

    /// Deletes finished jobs older than the job TTL; returns how many.
    pub async fn sweep(&self) -> Result<u64, DbErr> {
        let ttl = chrono::Duration::from_std(self.config.job_ttl).unwrap_or(chrono::Duration::MAX);
        let cutoff = jobstream_core::event::now() - ttl;
        let n = apply::sweep_finished(&self.db, cutoff).await?;
        if n > 0 {
            tracing::info!(deleted = n, "swept finished jobs past their TTL");
        }
        Ok(n)
    }

    /// Folds events until `shutdown` is cancelled, and serves replay commands meanwhile.
    ///
    /// First (and whenever the consumer is idle while the stream is ahead of the checkpoint)
    /// it catches up by reading the stream from the checkpoint, so it never depends on the
    /// consumer redelivering what an earlier instance acked. A batch is retried until it
    /// commits (an event the database refuses is recorded as rejected, see `apply`), a
    /// delivered message is never dropped, and a message is acked only once the committed
    /// checkpoint covers every message delivered so far (`AckPolicy::All` acks them all).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ProjectorError> {
        // The replay service stops with the fold, whichever ends first.
        let stop_replays = shutdown.child_token();
        let replays = self
            .replays
            .take()
            .map(|r| tokio::spawn(r.serve(stop_replays.clone())));
        let folded = self.fold(&shutdown).await;
        stop_replays.cancel();
        if let Some(r) = replays {
            let _ = r.await;
        }
        folded
    }

    /// The fold loop of [`run`](Self::run).
    async fn fold(&mut self, shutdown: &CancellationToken) -> Result<(), ProjectorError> {
        if self.catch_up_until_done(shutdown).await.is_none() {
            return Ok(());
        }
        let mut messages = self
            .consumer
            .stream()
            .max_messages_per_batch(self.config.batch_size * 2)
            .group(crate::standby::PRIORITY_GROUP)
            .expires(crate::standby::PULL_EXPIRES)
            .heartbeat(crate::standby::PULL_HEARTBEAT)
            .messages()
            .await
            .map_err(|e| ProjectorError::Consumer(e.to_string()))?
            .ready_chunks(self.config.batch_size);
        let mut sweep = tokio::time::interval(self.config.sweep_interval);
        let mut idle = tokio::time::interval(IDLE_CHECK);
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut delivered_since_tick = false;
        tracing::info!(name = %self.config.name, "projector started");
        loop {
            let step = tokio::select! {
                () = shutdown.cancelled() => Step::Stop,
                _ = sweep.tick() => {
                    if let Err(e) = self.sweep().await {
                        tracing::error!(error = %e, "TTL sweep failed; will try again");
                    }
                    Step::Continue
                }
                _ = idle.tick() => {
                    if std::mem::take(&mut delivered_since_tick) {
                        Step::Continue
                    } else {
                        self.when_idle(shutdown).await
                    }
                }
                chunk = messages.next() => {
                    let Some(mut chunk) = chunk else {
                        return Err(ProjectorError::Consumer("message stream ended".to_owned()));
                    };
                    fill(&mut messages, &mut chunk, self.config.batch_size, self.config.linger).await;
                    delivered_since_tick = true;
                    match Chunk::decode(chunk) {
                        Some(chunk) => self.fold_chunk(chunk, shutdown).await,
                        None => Step::Continue,
                    }
                }
            };
            if step == Step::Stop {
                break;
            }
        }
        // No more pulls from this projector, then hand the pin to a standby.
        drop(messages);
        if let Ok(stream) = self.broker.stream().await {
            crate::standby::release(&stream, &self.consumer, self.pin.as_deref()).await;
        }
        tracing::info!("projector stopped");
        Ok(())
    }

    /// The consumer was silent: the stream may still be ahead (messages acked by an earlier
    /// instance but never committed, a lost last transaction): read them from the stream.
    async fn when_idle(&mut self, shutdown: &CancellationToken) -> Step {
        // A standby leaves the stream to the pinned projector (the fence would make a
        // concurrent fold harmless, but not free).
        if crate::standby::pinned_elsewhere(&self.consumer, self.pin.as_deref()).await {
            return Step::Continue;
        }
        match self.catch_up(shutdown).await {
            Ok(true) => {
                if let Err(e) = apply::write_heartbeat(&self.db, &self.config.name).await {
                    tracing::debug!(error = %e, "projector heartbeat not written");
                }
            }
            Ok(false) => {}
            Err(CatchUp::Shutdown) => return Step::Stop,
            Err(CatchUp::Stream(e)) => {
                tracing::warn!(error = %e, "cannot read the stream to catch up; will try again");
            }
        }
        Step::Continue
    }

    /// Folds one delivered chunk and acks it once the checkpoint covers it.
    async fn fold_chunk(&mut self, chunk: Chunk, shutdown: &CancellationToken) -> Step {
        let Chunk {
            batch,
            last,
            highest,
        } = chunk;
        if let Some(pin) = crate::standby::pin_of(&last) {
            self.pin = Some(pin);
        }
        // The consumer only delivers; order comes from the stream. Messages an earlier
        // (crashed) instance held come back only after ack_wait, later ones may come
        // first: fold everything missing above the checkpoint straight from the stream
        // first. Never drop the chunk: its messages would be acked with a later one.
        let checkpoint = *self.applied_tx.borrow();
        if has_gap(&batch, checkpoint) && self.catch_up_until_done(shutdown).await.is_none() {
            return Step::Stop;
        }
        let Some(outcome) = self.apply_until_committed(&batch, shutdown).await else {
            return Step::Stop;
        };
        tracing::debug!(?outcome, "batch committed");
        let committed = outcome.checkpoint.max(*self.applied_tx.borrow());
        self.applied_tx.send_replace(committed);
        if highest > committed {
            // Cannot happen after a commit; if it ever did, acking would lose events.
            tracing::error!(
                highest,
                committed,
                "not acking: the checkpoint does not cover the batch"
            );
            return Step::Continue;
        }
        if let Err(e) = last.ack().await {
            // Harmless: the batch is redelivered and is a no-op below the checkpoint.
            tracing::warn!(error = %e, "ack after commit failed");
        }
        Step::Continue
    }

    /// Folds the stream from the checkpoint to its end, in batches, straight from the
    /// stream. `Ok(true)` when it was (or now is) caught up with what the stream held.
    async fn catch_up(&mut self, shutdown: &CancellationToken) -> Result<bool, CatchUp> {
        loop {
            // A long backlog is folded batch by batch: a shutdown stops it between two.
            if shutdown.is_cancelled() {
                return Err(CatchUp::Shutdown);
            }
            let checkpoint = *self.applied_tx.borrow();
            let bounds = stream_read::bounds(&self.broker)
                .await
                .map_err(CatchUp::Stream)?;
            if bounds.last <= checkpoint {
                return Ok(true);
            }
            let msgs = stream_read::read_from(
                &self.broker,
                stream_read::EVERYTHING,
                checkpoint + 1,
                self.config.batch_size,
            )
            .await
            .map_err(CatchUp::Stream)?;
            if msgs.is_empty() {
                return Ok(true);
            }
            tracing::info!(
                from = checkpoint + 1,
                read = msgs.len(),
                stream_last = bounds.last,
                "catching up from the stream"
            );
            let batch: Vec<Delivered> = msgs
                .iter()
                .map(|m| {
                    Delivered::new(
                        m.seq,
                        m.subject.clone(),
                        stream_read::decode_record_or_log(m),
                    )
                    .traced(m.headers.as_ref())
                })
                .collect();
            let outcome = self
                .apply_until_committed(&batch, shutdown)
                .await
                .ok_or(CatchUp::Shutdown)?;
            let committed = outcome.checkpoint.max(checkpoint);
            self.applied_tx.send_replace(committed);
        }
    }

    /// [`catch_up`](Self::catch_up), retrying stream reads until it succeeds. `None` on shutdown.
    async fn catch_up_until_done(&mut self, shutdown: &CancellationToken) -> Option<()> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.catch_up(shutdown).await {
                Ok(_) => return Some(()),
                Err(CatchUp::Shutdown) => return None,
                Err(CatchUp::Stream(e)) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot read the stream to catch up; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Applies one batch of `(sequence, record)` — job events, schedule and user records — in one transaction.
    pub async fn apply_records(
        &self,
        batch: &[(u64, Option<Record>)],
    ) -> Result<BatchOutcome, DbErr> {
        let batch: Vec<Delivered> = batch
            .iter()
            .map(|(seq, rec)| Delivered::new(*seq, String::new(), rec.clone()))
            .collect();
        apply::apply_isolating(&self.db, &self.config.name, &batch).await
    }

    /// Retries a batch until it commits: skipping it would lose events. `None` on shutdown.
    /// After each failure the projector's own pool is replaced, so a connection a failed
    /// transaction left holding a lock (SQLite's write lock) is closed, not reused.
    async fn apply_until_committed(
        &mut self,
        batch: &[Delivered],
        shutdown: &CancellationToken,
    ) -> Option<BatchOutcome> {
        let mut delay = Duration::from_millis(100);
        let mut failing_since = None;
        loop {
            match apply::apply_isolating(&self.db, &self.config.name, batch).await {
                Ok(o) => {
                    o.transitions
                        .iter()
                        .for_each(jobstream_core::metrics::JobTransition::record);
                    if failing_since.is_some() {
                        tracing::info!(
                            checkpoint = o.checkpoint,
                            "the database takes batches again"
                        );
                    }
                    return Some(o);
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(jobstream_core::event::now);
                    tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "batch not committed; retrying");
                    self.failures.send_modify(|n| *n += 1);
                    self.reconnect().await;
                    // Best effort: the database may take this small write (an operator sees why).
                    let error = apply::clean_text(&e.to_string());
                    let status = apply::write_status(
                        &self.db,
                        &self.config.name,
                        jobstream_core::event::now(),
                        Some(since),
                        Some(&error),
                    );
                    if tokio::time::timeout(Duration::from_secs(1), status)
                        .await
                        .is_err()
                    {
                        // Abandoned mid-write: do not reuse that connection.
                        self.reconnect().await;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Replaces the projector's pool with a new one (closing the old connections).
    async fn reconnect(&mut self) {
        let Some(connect) = &self.connector else {
            return;
        };
        match connect().await {
            Ok(db) => {
                let old = std::mem::replace(&mut self.db, db);
                if tokio::time::timeout(Duration::from_secs(5), old.close())
                    .await
                    .is_err()
                {
                    tracing::warn!("the old database pool did not close in time");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reconnect to the database; will try again");
            }
        }
    }
}

/// Whether the fold loop goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Continue,
    Stop,
}

/// Adds what arrives within `linger` to a chunk smaller than `max` (it may end up
/// larger by one delivery). A stream that ends meanwhile says so again at the next read.
async fn fill<S, T>(messages: &mut S, chunk: &mut Vec<T>, max: usize, linger: Duration)
where
    S: futures::Stream<Item = Vec<T>> + Unpin,
{
    let until = tokio::time::Instant::now() + linger;
    while chunk.len() < max {
        match tokio::time::timeout_at(until, messages.next()).await {
            Ok(Some(more)) => chunk.extend(more),
            Ok(None) | Err(_) => break,
        }
    }
}

/// One chunk of delivered messages, decoded: the batch in stream order (each sequence
/// once), the last message (acking it acks them all) and the highest sequence.
struct Chunk {
    batch: Vec<Delivered>,
    last: async_nats::jetstream::Message,
    highest: u64,
}

impl Chunk {
    /// Decodes what the consumer delivered; `None` when nothing usable arrived. A message
    /// that does not decode stays in the batch as `None` (the fold counts and skips it).
    fn decode(
        chunk: Vec<Result<async_nats::jetstream::Message, consumer::pull::MessagesError>>,
    ) -> Option<Chunk> {
        let mut batch = Vec::with_capacity(chunk.len());
        let mut last = None;
        let mut highest = 0;
        for m in chunk {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "consumer error; continuing");
                    continue;
                }
            };
            let seq = match m.info() {
                Ok(i) => i.stream_sequence,
                Err(e) => {
                    tracing::warn!(error = %e, "message without JetStream metadata");
                    continue;
                }
            };
            // The one decoder: fired jobs need the stored message, not just its payload.
            let decoded = StoredMessage::from_delivered(&m).and_then(|s| Record::from_stored(&s));
            let record = match decoded {
                Ok(rec) => Some(rec),
                Err(e) => {
                    tracing::error!(seq, subject = %m.subject, error = %e, "undecodable event skipped");
                    None
                }
            };
            batch.push(
                Delivered::new(seq, m.subject.to_string(), record).traced(m.headers.as_ref()),
            );
            highest = highest.max(seq);
            last = Some(m);
        }
        batch.sort_by_key(|d| d.seq);
        batch.dedup_by_key(|d| d.seq);
        Some(Chunk {
            batch,
            last: last?,
            highest,
        })
    }
}

/// Whether a sorted batch skips a sequence above the checkpoint: right above it (held
/// by a crashed instance until their ack wait), or between two of its messages (a
/// delivery cut short by a consumer leader's failover: its rest comes back only after
/// the ack wait, while later messages come at once, and a chunk may join both). Either
/// must be read from the stream first, or the checkpoint would pass over it and the
/// redelivery would be skipped as already applied. A gap the stream itself has (a
/// deleted timer) costs one catch-up.
fn has_gap(batch: &[Delivered], checkpoint: u64) -> bool {
    let mut next = checkpoint + 1;
    for d in batch.iter().filter(|d| d.seq > checkpoint) {
        if d.seq != next {
            return true;
        }
        next = d.seq + 1;
    }
    false
}

/// Why a catch-up stopped.
enum CatchUp {
    Shutdown,
    Stream(BrokerError),
}

/// How long the consumer may stay silent before the projector checks the stream itself.
const IDLE_CHECK: Duration = Duration::from_secs(2);

/// Opens a fresh pool on the projection database.
pub type Connector =
    Arc<dyn Fn() -> BoxFuture<'static, Result<DatabaseConnection, DbErr>> + Send + Sync>;

/// A connector to the same database as `db`, on a pool of the projector's own (one writer
/// connection on SQLite), or `None` for an in-memory SQLite database (a new pool would be
/// another database).
pub fn own_pool(db: &DatabaseConnection) -> Option<Connector> {
    match db.get_database_backend() {
        DbBackend::Sqlite => {
            let opts = (*db.get_sqlite_connection_pool().connect_options()).clone();
            let file = opts.get_filename().to_string_lossy().into_owned();
            if file.is_empty() || file == ":memory:" {
                return None;
            }
            Some(Arc::new(move || {
                let opts = opts.clone();
                Box::pin(async move {
                    let pool = sea_orm::sqlx::sqlite::SqlitePoolOptions::new()
                        .max_connections(1)
                        .acquire_timeout(Duration::from_secs(10))
                        .connect_with(opts)
                        .await
                        .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into())))?;
                    Ok(sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
                })
            }))
        }
        DbBackend::Postgres => {
            let opts = (*db.get_postgres_connection_pool().connect_options()).clone();
            Some(Arc::new(move || {
                let opts = opts.clone();
                Box::pin(async move {
                    let pool = sea_orm::sqlx::postgres::PgPoolOptions::new()
                        .max_connections(2)
                        .acquire_timeout(Duration::from_secs(10))
                        .connect_with(opts)
                        .await
                        .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into())))?;
                    Ok(sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(
                        pool,
                    ))
                })
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deliveries `[1]` at once, `[2, 3]` after 1 ms, `[4]` after 5 ms.
    fn deliveries() -> impl futures::Stream<Item = Vec<u32>> + Unpin {
        let plan = vec![(0, vec![1]), (1, vec![2, 3]), (4, vec![4])];
        Box::pin(
            futures::stream::iter(plan).then(|(after_ms, chunk)| async move {
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                chunk
            }),
        )
    }

    /// Takes the first delivery and fills it as the fold loop does: the chunk, how long
    /// the fill took, and the rest of the deliveries.
    async fn first_filled(
        max: usize,
    ) -> (
        Vec<u32>,
        Duration,
        impl futures::Stream<Item = Vec<u32>> + Unpin,
    ) {
        let mut messages = deliveries();
        let mut chunk = messages.next().await.unwrap();
        let start = tokio::time::Instant::now();
        fill(&mut messages, &mut chunk, max, Duration::from_millis(2)).await;
        (chunk, start.elapsed(), messages)
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_delivery_waits_for_more_within_the_linger_only() {
        let (chunk, took, mut messages) = first_filled(500).await;
        assert_eq!(chunk, [1, 2, 3]);
        assert_eq!(took, Duration::from_millis(2), "no longer than the linger");
        assert_eq!(
            messages.next().await,
            Some(vec![4]),
            "the late one is the next chunk"
        );
    }

    #[test]
    fn a_sequence_missing_right_above_the_checkpoint_or_inside_the_batch_is_a_gap() {
        let batch = |seqs: &[u64]| -> Vec<Delivered> {
            seqs.iter()
                .map(|&s| Delivered::new(s, String::new(), None))
                .collect()
        };
        assert!(!has_gap(&batch(&[]), 10));
        assert!(!has_gap(&batch(&[11, 12, 13]), 10));
        assert!(
            !has_gap(&batch(&[4, 9, 10, 11]), 10),
            "below the checkpoint: already applied"
        );
        assert!(has_gap(&batch(&[12, 13]), 10), "11 is missing");
        // The tail of a delivery a failover cut short, joined with the next delivery.
        assert!(
            has_gap(&batch(&[11, 12, 15, 16]), 10),
            "13 and 14 are missing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_delivery_is_folded_at_once() {
        let (chunk, took, _) = first_filled(1).await;
        assert_eq!((chunk, took), (vec![1], Duration::ZERO));
    }
}
