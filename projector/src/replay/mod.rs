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

//!
//! ## Layout
//! - `fold`: folding a range of the stream with the projector's batches.
//! - `shadow`: the shadow projection and the atomic swap.
//! - [`Progress`]: live counters, read as a [`ProgressSnapshot`].
//! - [`verify`](verify()): a fresh fold in memory compared with the projection.
//! - [`control`]: the replay commands a running projector serves, one at a time, with
//!   progress published for every API instance.

use std::time::{Duration, Instant};

use jobstream_core::broker::{Broker, BrokerError};
use jobstream_core::stream_read;
use sea_orm::{DatabaseConnection, DbErr};
use tokio_util::sync::CancellationToken;

use crate::apply;
use fold::{FoldTarget, count_jobs, fold_range, resolve_start, sweep_cutoff};
use shadow::{ORIGIN_MARKER, Shadow, save_marker, swap};

pub mod control;
mod fold;
mod progress;
mod shadow;
mod verify;

pub use jobstream_core::replay::{ProgressSnapshot, ReplayStart, ReplaySummary};
pub use progress::Progress;
pub use verify::{Difference, RejectedEvent, VerifyReport, rejected_events, verify};

/// Schema (PostgreSQL) holding the shadow projection while a replay builds it.
pub const SHADOW_SCHEMA: &str = "jobstream_replay";
/// Tables a replay rebuilds (the checkpoint row is carried separately).
/// Helpers that add projection tables append them here.
pub const PROJECTION_TABLES: &[&str] = &[
    "queued_jobs",
    "job_counts",
    "schedules",
    "users",
    "rejected_events",
    "queue_states",
    "workflows",
    "workflow_steps",
];
/// Attempts to catch the shadow up with a running projector before the swap.
const SWAP_ATTEMPTS: usize = 20;

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
            projector_name: jobstream_core::replay::DEFAULT_PROJECTOR.to_owned(),
            start: ReplayStart::Beginning,
            job_ttl: jobstream_core::replay::DEFAULT_JOB_TTL,
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
