//! Folding a range of the stream into a database with the projector's own batches.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use jobstream_core::broker::Broker;
use jobstream_core::replay::{ReplayStart, ReplaySummary};
use jobstream_core::stream_read::{self, Stored};
use jobstream_entity::queued_job;
use sea_orm::{DatabaseConnection, DbErr, EntityTrait};
use tokio_util::sync::CancellationToken;

use super::{Progress, ReplayError};
use crate::apply::{self, Delivered};

/// How long a stream read may stall before a replay gives up.
const STALL: Duration = Duration::from_secs(30);

/// What a fold reads from and writes to.
pub(super) struct FoldTarget<'a> {
    pub(super) broker: &'a Broker,
    pub(super) db: &'a DatabaseConnection,
    pub(super) name: &'a str,
    pub(super) batch_size: usize,
    pub(super) progress: &'a Progress,
    pub(super) cancel: &'a CancellationToken,
}

/// Folds the stream into `t.db` (applying its checkpoint rules) from `from` until the stream
/// sequence `until` (inclusive), or until cancelled. Returns whether it was interrupted.
pub(super) async fn fold_range(
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
        batch.push(
            Delivered::new(
                msg.seq,
                msg.subject.clone(),
                stream_read::decode_record_or_log(&msg),
            )
            .traced(msg.headers.as_ref()),
        );
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

/// The first sequence a replay from `start` folds.
pub(super) async fn resolve_start(broker: &Broker, start: ReplayStart) -> Result<u64, ReplayError> {
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

/// Jobs in the projection `db`.
pub(super) async fn count_jobs(db: &DatabaseConnection) -> Result<u64, DbErr> {
    use sea_orm::PaginatorTrait;
    queued_job::Entity::find().count(db).await
}

/// Finished jobs finished before this are past `ttl`.
pub(super) fn sweep_cutoff(ttl: Duration) -> DateTime<Utc> {
    jobstream_core::event::now() - chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
}
