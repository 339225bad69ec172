//! One batch of events → one transaction: rows and checkpoint together.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use jobstream_core::schedule::ScheduleRecord;
use jobstream_core::stored::Record;
use jobstream_core::user::UserEnvelope;
use jobstream_core::{Envelope, Event, JobState, JobStatus, fold::Rejected};
use jobstream_entity::{projector_checkpoint, queued_job};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, TransactionTrait,
};
use uuid::Uuid;

/// Rows written per INSERT statement (well under SQLite's and PostgreSQL's parameter limits).
const ROWS_PER_STATEMENT: usize = 400;

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events applied to a job.
    pub applied: usize,
    /// Events at or below the checkpoint (redeliveries, replays): skipped.
    pub already_applied: usize,
    /// Events refused by the state machine or for unknown jobs: recorded as ignored.
    pub ignored: usize,
    /// Messages that could not be decoded: skipped, logged.
    pub undecodable: usize,
    /// Checkpoint after the batch.
    pub checkpoint: u64,
}

/// Reads a projector's checkpoint (0 when it never ran).
pub(crate) async fn load_checkpoint<C: ConnectionTrait>(db: &C, name: &str) -> Result<u64, DbErr> {
    Ok(projector_checkpoint::Entity::find_by_id(name.to_owned())
        .one(db)
        .await?
        .map_or(0, |c| u64::try_from(c.last_seq).unwrap_or(0)))
}

/// Applies `(sequence, event)` pairs in order (an event that failed to decode is `None`)
/// and moves the checkpoint, all in one transaction.
pub(crate) async fn apply_batch(
    db: &DatabaseConnection,
    checkpoint_name: &str,
    batch: &[(u64, Option<Envelope>)],
) -> Result<BatchOutcome, DbErr> {
    let records: Vec<(u64, Option<Record>)> = batch
        .iter()
        .map(|(seq, env)| (*seq, env.clone().map(Record::Job)))
        .collect();
    apply_records(db, checkpoint_name, &records).await
}

/// Applies `(sequence, record)` pairs — job events, schedule and user records — in order
/// (a message that failed to decode is `None`) and moves the checkpoint, all in one transaction.
pub(crate) async fn apply_records(
    db: &DatabaseConnection,
    checkpoint_name: &str,
    batch: &[(u64, Option<Record>)],
) -> Result<BatchOutcome, DbErr> {
    let txn = db.begin().await?;
    let checkpoint = load_checkpoint(&txn, checkpoint_name).await?;
    let mut out = BatchOutcome {
        checkpoint,
        ..Default::default()
    };

    let mut schedules: Vec<(u64, &ScheduleRecord)> = Vec::new();
    let mut fresh_users: Vec<(u64, &UserEnvelope)> = Vec::new();
    let fresh: Vec<(u64, &Envelope)> = batch
        .iter()
        .filter_map(|(seq, rec)| {
            if *seq <= checkpoint {
                out.already_applied += 1;
                return None;
            }
            out.checkpoint = out.checkpoint.max(*seq);
            match rec {
                Some(Record::Job(e)) => Some((*seq, e)),
                Some(Record::Schedule(s)) => {
                    schedules.push((*seq, s));
                    None
                }
                Some(Record::User(u)) => {
                    fresh_users.push((*seq, u));
                    None
                }
                Some(Record::Other) => {
                    out.ignored += 1;
                    None
                }
                None => {
                    out.undecodable += 1;
                    None
                }
            }
        })
        .collect();
    for (seq, rec) in schedules {
        crate::schedules::apply_schedule_record(&txn, seq, rec).await?;
        out.applied += 1;
    }
    let (users_applied, users_ignored) =
        crate::users::apply_user_events(&txn, &fresh_users).await?;
    out.applied += users_applied;
    out.ignored += users_ignored;
    if fresh.is_empty() && out.checkpoint == checkpoint {
        txn.commit().await?;
        return Ok(out);
    }

    let mut jobs = load_jobs(&txn, fresh.iter().map(|(_, e)| e.job_id)).await?;
    let mut dirty: HashSet<Uuid> = HashSet::new();
    for (seq, env) in fresh {
        let job_id = env.job_id;
        let outcome = match (jobs.get_mut(&job_id), &env.event) {
            (None, Event::Queued(spec) | Event::Scheduled(spec)) => {
                if let Some(existing) =
                    idempotent_twin(&txn, &jobs, &spec.owner, spec.idempotency_key.as_deref())
                        .await?
                {
                    tracing::info!(%job_id, %existing, seq, "queued event ignored: idempotency key already used by another job");
                    Err(())
                } else if let Some(state) = JobState::from_queued(env, seq) {
                    jobs.insert(job_id, state);
                    Ok(())
                } else {
                    Err(())
                }
            }
            (None, _) => {
                tracing::info!(%job_id, seq, event = env.event_type().as_str(), "event ignored: unknown job (never queued, or already swept)");
                Err(())
            }
            (Some(state), _) => match state.apply(env, seq) {
                Ok(()) => Ok(()),
                Err(Rejected::Impossible { from, event }) => {
                    tracing::warn!(%job_id, seq, from, event, "impossible transition ignored");
                    Err(())
                }
                Err(e) => {
                    tracing::debug!(%job_id, seq, error = %e, "event ignored");
                    Err(())
                }
            },
        };
        match outcome {
            Ok(()) => {
                out.applied += 1;
                dirty.insert(job_id);
            }
            Err(()) => out.ignored += 1,
        }
    }

    let rows: Vec<queued_job::Model> = dirty
        .iter()
        .filter_map(|id| jobs.get(id))
        .map(queued_job::Model::from)
        .collect();
    upsert_jobs(&txn, rows).await?;
    save_checkpoint(
        &txn,
        checkpoint_name,
        out.checkpoint,
        jobstream_core::event::now(),
    )
    .await?;
    txn.commit().await?;
    Ok(out)
}

/// Current state of the given jobs, as far as the projection has them.
async fn load_jobs<C: ConnectionTrait>(
    db: &C,
    ids: impl Iterator<Item = Uuid>,
) -> Result<HashMap<Uuid, JobState>, DbErr> {
    let ids: Vec<String> = ids
        .collect::<HashSet<_>>()
        .into_iter()
        .map(|id| id.to_string())
        .collect();
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let rows = queued_job::Entity::find()
            .filter(queued_job::Column::Id.is_in(chunk.iter().cloned()))
            .all(db)
            .await?;
        for row in rows {
            match JobState::try_from(row) {
                Ok(s) => {
                    out.insert(s.id, s);
                }
                Err(e) => {
                    tracing::error!(error = %e, "unreadable projection row: its events are ignored until the projection is rebuilt");
                }
            }
        }
    }
    Ok(out)
}

/// Another job of the same owner already holding this idempotency key, if any.
async fn idempotent_twin<C: ConnectionTrait>(
    db: &C,
    batch_jobs: &HashMap<Uuid, JobState>,
    owner: &str,
    key: Option<&str>,
) -> Result<Option<String>, DbErr> {
    let Some(key) = key else { return Ok(None) };
    if let Some(s) = batch_jobs
        .values()
        .find(|s| s.spec.owner == owner && s.spec.idempotency_key.as_deref() == Some(key))
    {
        return Ok(Some(s.id.to_string()));
    }
    Ok(queued_job::Entity::find()
        .filter(queued_job::Column::Owner.eq(owner))
        .filter(queued_job::Column::IdempotencyKey.eq(key))
        .one(db)
        .await?
        .map(|m| m.id))
}

/// Inserts or overwrites rows by id.
pub(crate) async fn upsert_jobs<C: ConnectionTrait>(
    db: &C,
    rows: Vec<queued_job::Model>,
) -> Result<(), DbErr> {
    use queued_job::Column as C;
    let update = [
        C::Status,
        C::Result,
        C::Error,
        C::Attempt,
        C::Progress,
        C::ProgressMessage,
        C::StartedAt,
        C::FinishedAt,
        C::UpdatedAt,
        C::LastSeq,
        C::Errors,
        C::CancelRequestedAt,
    ];
    let mut rows = rows;
    while !rows.is_empty() {
        let rest = rows.split_off(rows.len().min(ROWS_PER_STATEMENT));
        queued_job::Entity::insert_many(rows.into_iter().map(IntoActiveModel::into_active_model))
            .on_conflict(OnConflict::column(C::Id).update_columns(update).to_owned())
            .exec_without_returning(db)
            .await?;
        rows = rest;
    }
    Ok(())
}

async fn save_checkpoint<C: ConnectionTrait>(
    db: &C,
    name: &str,
    seq: u64,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    use projector_checkpoint::Column as C;
    let row = projector_checkpoint::Model {
        name: name.to_owned(),
        last_seq: i64::try_from(seq).unwrap_or(i64::MAX),
        updated_at: at,
    };
    projector_checkpoint::Entity::insert_many([row.into_active_model()])
        .on_conflict(
            OnConflict::column(C::Name)
                .update_columns([C::LastSeq, C::UpdatedAt])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Deletes finished jobs whose `finished_at` is before `cutoff`; returns how many.
pub(crate) async fn sweep_finished<C: ConnectionTrait>(
    db: &C,
    cutoff: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let terminal: Vec<&str> = JobStatus::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .map(JobStatus::as_str)
        .collect();
    let res = queued_job::Entity::delete_many()
        .filter(queued_job::Column::Status.is_in(terminal))
        .filter(queued_job::Column::FinishedAt.lt(cutoff))
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}
