//! Operators: rebuild the projection from the stream (replay) and compare it with a
//! fresh fold (verify).
//!
//! Both fold with the projector's own code (`projector/src/apply.rs`): the same batches,
//! the same checkpoint in the same transaction, the same idempotency and TTL rules.
//!
//! Replay into the live database builds a *shadow* projection beside it (a
//! `jobstream_replay` schema on PostgreSQL, a `<file>.replay` SQLite file), then
//! swaps it in with one transaction that copies the rows and the checkpoint, so
//! readers see the old tables until the commit and the new ones after it. The swap
//! waits until the shadow is at or beyond the live checkpoint, so the running
//! projector neither re-applies nor loses an event: its next batch reads the
//! carried checkpoint in its own transaction and skips what the shadow already has.
//! The shadow keeps its own checkpoint, so an interrupted replay resumes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use jobstream_core::JobStatus;
use jobstream_core::broker::{Broker, BrokerError};
use jobstream_core::stream_read::{self, Stored};
use jobstream_entity::{queued_job, rejected_event};
use migration::MigratorTrait;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    QueryOrder, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::apply::{self, Delivered};

/// Schema (PostgreSQL) holding the shadow projection while a replay builds it.
pub const SHADOW_SCHEMA: &str = "jobstream_replay";
/// Tables a replay rebuilds (the checkpoint row is carried separately).
/// Helpers that add projection tables append them here.
pub const PROJECTION_TABLES: &[&str] = &["queued_jobs", "schedules", "users", "rejected_events"];
/// Checkpoint row in the shadow recording where the replay started (for resuming).
const ORIGIN_MARKER: &str = "replay-origin";
/// How long a stream read may stall before a replay gives up.
const STALL: Duration = Duration::from_secs(30);
/// Attempts to catch the shadow up with a running projector before the swap.
const SWAP_ATTEMPTS: usize = 20;

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStart {
    /// The stream's first stored event.
    Beginning,
    /// This stream sequence (events before it are ignored).
    Seq(u64),
    /// The first event stored at or after this time.
    Since(DateTime<Utc>),
}

/// How a replay runs.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The projector whose checkpoint is rebuilt (its durable consumer name).
    pub projector_name: String,
    /// Where to start.
    pub start: ReplayStart,
    /// Finished jobs older than this are swept from the result, as the projector would.
    pub job_ttl: Duration,
    /// Events per transaction.
    pub batch_size: usize,
    /// Throw away an interrupted replay's shadow instead of resuming it.
    pub fresh: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            projector_name: "projector".to_owned(),
            start: ReplayStart::Beginning,
            job_ttl: Duration::from_secs(24 * 3600),
            batch_size: 1000,
            fresh: false,
        }
    }
}

/// Why a replay or verify stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading the stream failed.
    #[error("reading the stream: {0}")]
    Stream(#[from] BrokerError),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] DbErr),
    /// The database cannot host a shadow projection.
    #[error("{0}")]
    Unsupported(String),
    /// The running projector kept ahead of the shadow.
    #[error(
        "the running projector stayed ahead of the replay for {SWAP_ATTEMPTS} attempts; run the replay again"
    )]
    SwapRace,
    /// No event arrived from the stream for too long.
    #[error("the stream stopped delivering at sequence {0}")]
    Stalled(u64),
}

/// Live counters of a replay, readable while it runs (CLI progress line, admin API).
#[derive(Debug, Default)]
pub struct Progress {
    phase: Mutex<&'static str>,
    position: AtomicU64,
    target: AtomicU64,
    events: AtomicU64,
    pending: AtomicU64,
    finished: AtomicBool,
    started: Mutex<Option<Instant>>,
    error: Mutex<Option<String>>,
    summary: Mutex<Option<ReplaySummary>>,
}

/// A point-in-time view of [`Progress`].
#[derive(Debug, Clone, Serialize)]
pub struct ProgressSnapshot {
    /// `starting`, `folding`, `sweeping`, `swapping`, `done`, `interrupted` or `failed`.
    pub phase: &'static str,
    /// Last stream sequence folded.
    pub position: u64,
    /// Sequence the replay folds up to.
    pub target: u64,
    /// Events read so far.
    pub events: u64,
    /// Events per second since the start.
    pub events_per_sec: f64,
    /// Estimated seconds left.
    pub eta_secs: Option<f64>,
    /// Whether the replay has ended (done, interrupted or failed).
    pub finished: bool,
    /// Why it failed.
    pub error: Option<String>,
    /// What it did, once done or interrupted.
    pub summary: Option<ReplaySummary>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Progress {
    fn set_phase(&self, phase: &'static str) {
        *lock(&self.phase) = phase;
    }

    fn start_clock(&self) {
        lock(&self.started).get_or_insert_with(Instant::now);
    }

    fn finish(&self, outcome: &Result<ReplaySummary, ReplayError>) {
        match outcome {
            Ok(s) => {
                self.set_phase(if s.interrupted { "interrupted" } else { "done" });
                *lock(&self.summary) = Some(s.clone());
            }
            Err(e) => {
                self.set_phase("failed");
                *lock(&self.error) = Some(e.to_string());
            }
        }
        self.finished.store(true, Ordering::SeqCst);
    }

    /// The current counters.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let events = self.events.load(Ordering::Relaxed);
        let elapsed = lock(&self.started).map_or(0.0, |s| s.elapsed().as_secs_f64());
        let rate = if elapsed > 0.0 {
            events as f64 / elapsed
        } else {
            0.0
        };
        let pending = self.pending.load(Ordering::Relaxed);
        let phase = *lock(&self.phase);
        ProgressSnapshot {
            phase: if phase.is_empty() { "starting" } else { phase },
            position: self.position.load(Ordering::Relaxed),
            target: self.target.load(Ordering::Relaxed),
            events,
            events_per_sec: rate,
            eta_secs: (rate > 0.0).then(|| pending as f64 / rate),
            finished: self.finished.load(Ordering::SeqCst),
            error: lock(&self.error).clone(),
            summary: lock(&self.summary).clone(),
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplaySummary {
    /// First sequence folded in this run.
    pub from_seq: u64,
    /// Checkpoint of the result.
    pub checkpoint: u64,
    /// Events read from the stream in this run.
    pub events: u64,
    /// Events applied to a job.
    pub applied: u64,
    /// Events the state machine refused or that belong to unknown (expired) jobs.
    pub ignored: u64,
    /// Messages that did not decode.
    pub undecodable: u64,
    /// Events the database refused, recorded in `rejected_events`.
    pub rejected: u64,
    /// Finished jobs past the TTL removed before the swap.
    pub swept: u64,
    /// Jobs in the result.
    pub jobs: u64,
    /// Whether an interrupted replay was resumed.
    pub resumed: bool,
    /// Whether this run was interrupted (run again to resume).
    pub interrupted: bool,
    /// Seconds taken.
    pub elapsed_secs: f64,
}

/// Folds the stream into `db` (applying its checkpoint rules) from `from` until the stream
/// sequence `until` (inclusive), or until cancelled. Returns whether it was interrupted.
/// What a fold reads from and writes to.
struct FoldTarget<'a> {
    broker: &'a Broker,
    db: &'a DatabaseConnection,
    name: &'a str,
    batch_size: usize,
    progress: &'a Progress,
    cancel: &'a CancellationToken,
}

async fn fold_range(
    t: &FoldTarget<'_>,
    from: u64,
    until: u64,
    summary: &mut ReplaySummary,
) -> Result<bool, ReplayError> {
    let FoldTarget {
        broker,
        db,
        name,
        batch_size,
        progress,
        cancel,
    } = *t;
    if from > until {
        return Ok(false);
    }
    progress.target.store(until, Ordering::Relaxed);
    // Nothing stored in the range (deleted or expired): an ordered consumer would just wait.
    let stream = broker.stream().await?;
    match stream_read::next_at_or_after(&stream, stream_read::EVERYTHING, from).await? {
        Some(m) if m.seq <= until => {}
        _ => return Ok(false),
    }
    let messages = stream_read::ordered_from(broker, from, "jobstream replay").await?;
    let mut messages = std::pin::pin!(messages);
    let mut batch: Vec<Delivered> = Vec::with_capacity(batch_size);
    let mut last = from.saturating_sub(1);
    loop {
        let next = tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            m = tokio::time::timeout(STALL, messages.next()) => Some(m),
        };
        let Some(next) = next else {
            flush(db, name, &mut batch, summary).await?;
            return Ok(true);
        };
        let (msg, pending): (Stored, u64) = match next {
            Err(_) | Ok(None) => return Err(ReplayError::Stalled(last)),
            Ok(Some(m)) => m?,
        };
        if msg.seq > until {
            break;
        }
        last = msg.seq;
        summary.events += 1;
        progress.events.fetch_add(1, Ordering::Relaxed);
        progress.position.store(msg.seq, Ordering::Relaxed);
        progress.pending.store(
            until.saturating_sub(msg.seq).min(pending),
            Ordering::Relaxed,
        );
        batch.push(Delivered::new(
            msg.seq,
            msg.subject.clone(),
            stream_read::decode_record_or_log(&msg),
        ));
        let done = msg.seq >= until || pending == 0;
        if batch.len() >= batch_size || done {
            flush(db, name, &mut batch, summary).await?;
            if cancel.is_cancelled() && !done {
                return Ok(true);
            }
        }
        if done {
            break;
        }
    }
    flush(db, name, &mut batch, summary).await?;
    Ok(false)
}

async fn flush(
    db: &DatabaseConnection,
    name: &str,
    batch: &mut Vec<Delivered>,
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    if batch.is_empty() {
        return Ok(());
    }
    // The projector's own rule: an event the database refuses is recorded as rejected, once.
    let out = apply::apply_isolating(db, name, batch).await?;
    summary.rejected += out.rejected as u64;
    summary.applied += out.applied as u64;
    summary.ignored += out.ignored as u64;
    summary.undecodable += out.undecodable as u64;
    summary.checkpoint = out.checkpoint;
    batch.clear();
    Ok(())
}

async fn resolve_start(broker: &Broker, start: ReplayStart) -> Result<u64, ReplayError> {
    Ok(match start {
        ReplayStart::Beginning => 1,
        ReplayStart::Seq(s) => s.max(1),
        ReplayStart::Since(t) => match stream_read::first_seq_since(broker, t).await? {
            Some(s) => s,
            // Nothing stored since then: start after the end.
            None => stream_read::bounds(broker).await?.last + 1,
        },
    })
}

async fn count_jobs(db: &DatabaseConnection) -> Result<u64, DbErr> {
    use sea_orm::PaginatorTrait;
    queued_job::Entity::find().count(db).await
}

fn sweep_cutoff(ttl: Duration) -> DateTime<Utc> {
    jobstream_core::event::now() - chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
}

/// Replays the stream into `db`, a separate (migrated) database: `--into`. Resumes
/// from `db`'s own checkpoint when it has one.
pub async fn replay_into(
    broker: &Broker,
    db: &DatabaseConnection,
    opts: &ReplayOptions,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<ReplaySummary, ReplayError> {
    let outcome = replay_into_inner(broker, db, opts, progress, cancel).await;
    progress.finish(&outcome);
    outcome
}

async fn replay_into_inner(
    broker: &Broker,
    db: &DatabaseConnection,
    opts: &ReplayOptions,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<ReplaySummary, ReplayError> {
    let clock = Instant::now();
    progress.set_phase("starting");
    progress.start_clock();
    let origin = resolve_start(broker, opts.start).await?;
    let checkpoint = apply::load_checkpoint(db, &opts.projector_name).await?;
    let from = origin.max(checkpoint + 1);
    let mut summary = ReplaySummary {
        from_seq: from,
        checkpoint,
        resumed: checkpoint > 0,
        ..Default::default()
    };
    let until = stream_read::bounds(broker).await?.last;
    progress.set_phase("folding");
    let target = FoldTarget {
        broker,
        db,
        name: &opts.projector_name,
        batch_size: opts.batch_size,
        progress,
        cancel,
    };
    summary.interrupted = fold_range(&target, from, until, &mut summary).await?;
    if !summary.interrupted {
        progress.set_phase("sweeping");
        summary.swept = apply::sweep_finished(db, sweep_cutoff(opts.job_ttl)).await?;
    }
    summary.jobs = count_jobs(db).await?;
    summary.elapsed_secs = clock.elapsed().as_secs_f64();
    Ok(summary)
}

/// The shadow projection beside the live database.
struct Shadow {
    db: DatabaseConnection,
    /// SQLite: the shadow file (attached for the swap). PostgreSQL: `None` (a schema).
    file: Option<std::path::PathBuf>,
}

impl Shadow {
    async fn open(live: &DatabaseConnection, fresh: bool) -> Result<Self, ReplayError> {
        match live.get_database_backend() {
            DbBackend::Postgres => {
                if fresh {
                    live.execute_unprepared(&format!(
                        "DROP SCHEMA IF EXISTS {SHADOW_SCHEMA} CASCADE"
                    ))
                    .await?;
                }
                live.execute_unprepared(&format!("CREATE SCHEMA IF NOT EXISTS {SHADOW_SCHEMA}"))
                    .await?;
                let opts = (*live.get_postgres_connection_pool().connect_options())
                    .clone()
                    .options([("search_path", SHADOW_SCHEMA)]);
                let pool = sea_orm::sqlx::postgres::PgPoolOptions::new()
                    .max_connections(4)
                    .connect_with(opts)
                    .await
                    .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into())))?;
                let db = sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(pool);
                migration::Migrator::up(&db, None).await?;
                Ok(Shadow { db, file: None })
            }
            DbBackend::Sqlite => {
                let live_file = live
                    .get_sqlite_connection_pool()
                    .connect_options()
                    .get_filename()
                    .to_path_buf();
                if live_file.as_os_str().is_empty() || live_file.to_string_lossy() == ":memory:" {
                    return Err(ReplayError::Unsupported(
                        "replay into an in-memory SQLite database is not possible; use --into"
                            .into(),
                    ));
                }
                let mut name = live_file.as_os_str().to_owned();
                name.push(".replay");
                let file = std::path::PathBuf::from(name);
                if fresh {
                    remove_sqlite_files(&file);
                }
                let db = jobstream_core::store::connect(&format!(
                    "sqlite://{}?mode=rwc",
                    file.display()
                ))
                .await?;
                migration::Migrator::up(&db, None).await?;
                Ok(Shadow {
                    db,
                    file: Some(file),
                })
            }
            other => Err(ReplayError::Unsupported(format!(
                "replay does not support {other:?}"
            ))),
        }
    }

    /// Empties the shadow's projection tables and checkpoints.
    async fn clear(&self) -> Result<(), DbErr> {
        for t in PROJECTION_TABLES.iter().chain(&["projector_checkpoints"]) {
            self.db
                .execute_unprepared(&format!("DELETE FROM {t}"))
                .await?;
        }
        Ok(())
    }

    async fn drop_it(self, live: &DatabaseConnection) -> Result<(), DbErr> {
        self.db.close().await.ok();
        match self.file {
            Some(file) => remove_sqlite_files(&file),
            None => {
                live.execute_unprepared(&format!("DROP SCHEMA IF EXISTS {SHADOW_SCHEMA} CASCADE"))
                    .await?;
            }
        }
        Ok(())
    }
}

fn remove_sqlite_files(file: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = file.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(std::path::PathBuf::from(p));
    }
}

async fn save_marker(db: &DatabaseConnection, origin: u64) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    db.execute_unprepared(&format!(
        "DELETE FROM projector_checkpoints WHERE name = '{ORIGIN_MARKER}'"
    ))
    .await?;
    db.execute_raw(sea_orm::Statement::from_sql_and_values(
        backend,
        match backend {
            DbBackend::Postgres => {
                "INSERT INTO projector_checkpoints (name, last_seq, updated_at) VALUES ($1, $2, $3)"
            }
            _ => "INSERT INTO projector_checkpoints (name, last_seq, updated_at) VALUES (?, ?, ?)",
        },
        [
            ORIGIN_MARKER.into(),
            i64::try_from(origin).unwrap_or(i64::MAX).into(),
            jobstream_core::event::now().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Replays the stream into the live database: builds a shadow projection beside it,
/// then swaps it in atomically, carrying the checkpoint. Interrupted (cancelled), the
/// shadow stays and the next run resumes it.
pub async fn replay_live(
    broker: &Broker,
    live: &DatabaseConnection,
    opts: &ReplayOptions,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<ReplaySummary, ReplayError> {
    let outcome = replay_live_inner(broker, live, opts, progress, cancel).await;
    progress.finish(&outcome);
    outcome
}

async fn replay_live_inner(
    broker: &Broker,
    live: &DatabaseConnection,
    opts: &ReplayOptions,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<ReplaySummary, ReplayError> {
    let clock = Instant::now();
    progress.set_phase("starting");
    progress.start_clock();
    let name = opts.projector_name.as_str();
    let origin = resolve_start(broker, opts.start).await?;
    let shadow = Shadow::open(live, opts.fresh).await?;
    let marker = apply::load_checkpoint(&shadow.db, ORIGIN_MARKER).await?;
    let mut checkpoint = apply::load_checkpoint(&shadow.db, name).await?;
    let resumed = marker == origin && checkpoint > 0;
    if !resumed {
        shadow.clear().await?;
        save_marker(&shadow.db, origin).await?;
        checkpoint = 0;
    }
    let mut summary = ReplaySummary {
        from_seq: origin.max(checkpoint + 1),
        checkpoint,
        resumed,
        ..Default::default()
    };

    progress.set_phase("folding");
    let mut swapped = false;
    for _ in 0..SWAP_ATTEMPTS {
        let until = stream_read::bounds(broker).await?.last;
        let from = origin.max(apply::load_checkpoint(&shadow.db, name).await? + 1);
        let target = FoldTarget {
            broker,
            db: &shadow.db,
            name,
            batch_size: opts.batch_size,
            progress,
            cancel,
        };
        if fold_range(&target, from, until, &mut summary).await? {
            summary.interrupted = true;
            summary.elapsed_secs = clock.elapsed().as_secs_f64();
            summary.jobs = count_jobs(&shadow.db).await?;
            return Ok(summary);
        }
        // As the projector would have: finished jobs past the TTL never come back.
        progress.set_phase("sweeping");
        summary.swept += apply::sweep_finished(&shadow.db, sweep_cutoff(opts.job_ttl)).await?;
        progress.set_phase("swapping");
        if swap(live, &shadow, name).await? {
            swapped = true;
            break;
        }
        progress.set_phase("folding");
    }
    if !swapped {
        return Err(ReplayError::SwapRace);
    }
    summary.checkpoint = apply::load_checkpoint(live, name).await?;
    summary.jobs = count_jobs(live).await?;
    shadow.drop_it(live).await?;
    summary.elapsed_secs = clock.elapsed().as_secs_f64();
    Ok(summary)
}

/// Copies the shadow into the live tables in one transaction, if the shadow is at or
/// beyond the live checkpoint (so the running projector loses nothing). `false` when
/// the projector is ahead: fold further and try again.
async fn swap(live: &DatabaseConnection, shadow: &Shadow, name: &str) -> Result<bool, ReplayError> {
    let shadow_seq = apply::load_checkpoint(&shadow.db, name).await?;
    match &shadow.file {
        None => {
            let txn = live.begin().await?;
            // The checkpoint first, exclusively: a projector batch in flight (it read the
            // checkpoint at its start) finishes before the swap, the next one waits for it
            // and then reads the carried checkpoint. Readers of the job tables are not blocked:
            // they see the old rows until the commit.
            txn.execute_unprepared("LOCK TABLE projector_checkpoints IN ACCESS EXCLUSIVE MODE")
                .await?;
            txn.execute_unprepared(&format!(
                "LOCK TABLE {} IN EXCLUSIVE MODE",
                PROJECTION_TABLES.join(", ")
            ))
            .await?;
            let live_seq = apply::load_checkpoint(&txn, name).await?;
            if live_seq > shadow_seq {
                txn.rollback().await?;
                return Ok(false);
            }
            copy_tables(&txn, &format!("{SHADOW_SCHEMA}."), name).await?;
            txn.commit().await?;
            Ok(true)
        }
        Some(file) => {
            // A dedicated connection to the live file with the shadow attached.
            let opts = (*live.get_sqlite_connection_pool().connect_options()).clone();
            let pool = sea_orm::sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts)
                .await
                .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into())))?;
            let conn = sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool);
            let path = file.to_string_lossy().replace('\'', "''");
            conn.execute_unprepared(&format!("ATTACH DATABASE '{path}' AS shadow"))
                .await?;
            let txn = conn
                .begin_with_options(TransactionOptions {
                    isolation_level: None,
                    access_mode: None,
                    sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                })
                .await?;
            let live_seq = apply::load_checkpoint(&txn, name).await?;
            let ok = live_seq <= shadow_seq;
            if ok {
                copy_tables(&txn, "shadow.", name).await?;
                txn.commit().await?;
            } else {
                txn.rollback().await?;
            }
            conn.execute_unprepared("DETACH DATABASE shadow").await?;
            conn.close().await.ok();
            Ok(ok)
        }
    }
}

async fn copy_tables<C: ConnectionTrait>(txn: &C, shadow: &str, name: &str) -> Result<(), DbErr> {
    for t in PROJECTION_TABLES {
        txn.execute_unprepared(&format!("DELETE FROM {t}")).await?;
        txn.execute_unprepared(&format!("INSERT INTO {t} SELECT * FROM {shadow}{t}"))
            .await?;
    }
    let name = name.replace('\'', "''");
    txn.execute_unprepared(&format!(
        "DELETE FROM projector_checkpoints WHERE name = '{name}'"
    ))
    .await?;
    txn.execute_unprepared(&format!(
        "INSERT INTO projector_checkpoints SELECT * FROM {shadow}projector_checkpoints WHERE name = '{name}'"
    ))
    .await?;
    Ok(())
}

/// One job whose projected row differs from a fresh fold.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// Job id.
    pub job_id: String,
    /// What differs: column names, or `missing from the projection` / `not in a fresh fold`.
    pub fields: Vec<String>,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Checkpoint of the projection that was compared (the fold went exactly this far).
    pub checkpoint: u64,
    /// Rows in the projection.
    pub projected: usize,
    /// Jobs in the fresh fold.
    pub folded: usize,
    /// Finished jobs past the TTL that the projection has (rightly) swept.
    pub swept: usize,
    /// Rows whose events have all expired from the stream: not comparable.
    pub beyond_retention: usize,
    /// Jobs that differ.
    pub differences: Vec<Difference>,
    /// Events the projection recorded as rejected (dead letters), up to its checkpoint.
    pub rejected: Vec<RejectedEvent>,
    /// Jobs not compared because one of their events was rejected (the projection cannot
    /// hold it, so it rightly differs from a fold that could).
    pub rejected_jobs: usize,
}

/// An event the projection could not hold, as `verify` and the admin API report it.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedEvent {
    /// Stream sequence.
    pub seq: u64,
    /// Subject it was stored under.
    pub subject: String,
    /// Job (or schedule key, or user id), when it decoded.
    pub job_id: Option<String>,
    /// Event type, when it decoded.
    pub event_type: Option<String>,
    /// Why the database refused it.
    pub error: String,
    /// When it was rejected.
    pub rejected_at: DateTime<Utc>,
}

impl From<rejected_event::Model> for RejectedEvent {
    fn from(m: rejected_event::Model) -> Self {
        RejectedEvent {
            seq: u64::try_from(m.seq).unwrap_or(0),
            subject: m.subject,
            job_id: m.job_id,
            event_type: m.event_type,
            error: m.error,
            rejected_at: m.rejected_at,
        }
    }
}

/// The dead letters of a projector, oldest first: up to `limit` with a sequence above `after`.
pub async fn rejected_events<C: ConnectionTrait>(
    db: &C,
    projector_name: &str,
    after: u64,
    limit: u64,
) -> Result<Vec<RejectedEvent>, DbErr> {
    use sea_orm::{ColumnTrait, QueryFilter, QuerySelect};
    Ok(rejected_event::Entity::find()
        .filter(rejected_event::Column::Projector.eq(projector_name))
        .filter(rejected_event::Column::Seq.gt(i64::try_from(after).unwrap_or(i64::MAX)))
        .order_by_asc(rejected_event::Column::Seq)
        .limit(limit.min(i64::MAX as u64))
        .all(db)
        .await?
        .into_iter()
        .map(RejectedEvent::from)
        .collect())
}

impl VerifyReport {
    /// Whether the projection equals the fresh fold.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Folds the stream afresh in memory (an in-memory SQLite database, with the projector's
/// code) up to the projection's checkpoint and compares every row.
pub async fn verify(
    broker: &Broker,
    live: &DatabaseConnection,
    projector_name: &str,
    job_ttl: Duration,
) -> Result<VerifyReport, ReplayError> {
    // One consistent snapshot of the projection: rows and the checkpoint they cover.
    // (SQLite in WAL mode gives a read transaction a snapshot by itself.)
    let isolation = (live.get_database_backend() == DbBackend::Postgres)
        .then_some(sea_orm::IsolationLevel::RepeatableRead);
    let txn = live.begin_with_config(isolation, None).await?;
    let checkpoint = apply::load_checkpoint(&txn, projector_name).await?;
    let projected = queued_job::Entity::find()
        .order_by_asc(queued_job::Column::Id)
        .all(&txn)
        .await?;
    let rejected: Vec<RejectedEvent> = rejected_events(&txn, projector_name, 0, u64::MAX)
        .await?
        .into_iter()
        .filter(|r| r.seq <= checkpoint)
        .collect();
    txn.commit().await?;
    let rejected_ids: std::collections::HashSet<String> =
        rejected.iter().filter_map(|r| r.job_id.clone()).collect();

    let mut opts = ConnectOptions::new("sqlite::memory:");
    opts.max_connections(1)
        .min_connections(1)
        .sqlx_logging(false);
    let mem = Database::connect(opts).await?;
    migration::Migrator::up(&mem, None).await?;
    let progress = Progress::default();
    let mut summary = ReplaySummary::default();
    let cancel = CancellationToken::new();
    let target = FoldTarget {
        broker,
        db: &mem,
        name: projector_name,
        batch_size: 2000,
        progress: &progress,
        cancel: &cancel,
    };
    fold_range(&target, 1, checkpoint, &mut summary).await?;
    let folded = queued_job::Entity::find()
        .order_by_asc(queued_job::Column::Id)
        .all(&mem)
        .await?;
    let first_seq = stream_read::bounds(broker).await?.first;
    let cutoff = sweep_cutoff(job_ttl);

    let mut report = VerifyReport {
        checkpoint,
        projected: projected.len(),
        folded: folded.len(),
        rejected,
        ..Default::default()
    };
    let fresh: std::collections::HashMap<&str, &queued_job::Model> =
        folded.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut seen = std::collections::HashSet::new();
    for row in &projected {
        seen.insert(row.id.as_str());
        if rejected_ids.contains(&row.id) {
            report.rejected_jobs += 1;
            continue;
        }
        match fresh.get(row.id.as_str()) {
            Some(f) => {
                let fields = differing_fields(row, f);
                if !fields.is_empty() {
                    report.differences.push(Difference {
                        job_id: row.id.clone(),
                        fields,
                    });
                }
            }
            None if u64::try_from(row.last_seq).unwrap_or(0) < first_seq => {
                report.beyond_retention += 1;
            }
            None => report.differences.push(Difference {
                job_id: row.id.clone(),
                fields: vec!["not in a fresh fold of the stream".into()],
            }),
        }
    }
    for f in &folded {
        if seen.contains(f.id.as_str()) {
            continue;
        }
        if rejected_ids.contains(&f.id) {
            report.rejected_jobs += 1;
            continue;
        }
        let finished = JobStatus::parse(&f.status).is_some_and(JobStatus::is_terminal);
        if finished && f.finished_at.is_some_and(|t| t < cutoff) {
            report.swept += 1;
        } else {
            report.differences.push(Difference {
                job_id: f.id.clone(),
                fields: vec![format!("missing from the projection (status {})", f.status)],
            });
        }
    }
    mem.close().await.ok();
    Ok(report)
}

/// Columns whose values differ, by name.
fn differing_fields(a: &queued_job::Model, b: &queued_job::Model) -> Vec<String> {
    let (Ok(Value::Object(a)), Ok(Value::Object(b))) =
        (serde_json::to_value(a), serde_json::to_value(b))
    else {
        return vec!["row".into()];
    };
    let mut out: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k}: projection {} ≠ stream {}",
                v,
                b.get(k).cloned().unwrap_or(Value::Null)
            )
        })
        .collect();
    out.sort();
    out
}
