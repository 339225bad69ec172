//! One batch of events → one transaction: rows and checkpoint together.

use std::collections::{HashMap, HashSet};

use tracing::Instrument as _;

use chrono::{DateTime, Utc};
use jobstream_core::event::{REQUEST_ID_HEADER, TRACEPARENT_HEADER};
use jobstream_core::metrics::JobTransition;
use jobstream_core::queue::QueueRecord;
use jobstream_core::schedule::ScheduleRecord;
use jobstream_core::stored::Record;
use jobstream_core::trace::{TraceId, TraceParent};
use jobstream_core::user::UserEnvelope;
use jobstream_core::{Envelope, Event, JobState, JobStatus, fold::Rejected};
use jobstream_entity::{projector_checkpoint, projector_status, queued_job, rejected_event};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait,
    IntoActiveModel, QueryFilter, QuerySelect, TransactionTrait,
};
use uuid::Uuid;

/// Rows written per INSERT statement (well under SQLite's and PostgreSQL's parameter limits).
pub(crate) const ROWS_PER_STATEMENT: usize = 400;

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchOutcome {
    /// Events applied to a job.
    pub applied: usize,
    /// Events at or below the checkpoint (redeliveries, replays): skipped.
    pub already_applied: usize,
    /// Events refused by the state machine or for unknown jobs: recorded as ignored.
    pub ignored: usize,
    /// Messages that could not be decoded: skipped, logged.
    pub undecodable: usize,
    /// Events the database refused (poison): recorded in `rejected_events`, skipped.
    pub rejected: usize,
    /// Checkpoint after the batch.
    pub checkpoint: u64,
    /// What the applied job events mean for the metrics (recorded by the live fold once committed).
    pub transitions: Vec<JobTransition>,
}

/// One message of the stream as the fold sees it.
#[derive(Debug, Clone)]
pub(crate) struct Delivered {
    /// Stream sequence.
    pub(crate) seq: u64,
    /// Subject it was stored under (for the dead letter, if it comes to that).
    pub(crate) subject: String,
    /// The decoded record; `None` when it does not decode.
    pub(crate) record: Option<Record>,
    /// The `traceparent` it was stored with, when valid (see [`jobstream_core::trace`]).
    pub(crate) trace: Option<TraceParent>,
    /// The request id it was stored with (for the fold's log lines).
    pub(crate) request_id: Option<String>,
}

impl Delivered {
    pub(crate) fn new(seq: u64, subject: String, record: Option<Record>) -> Self {
        Delivered {
            seq,
            subject,
            record,
            trace: None,
            request_id: None,
        }
    }

    /// With the trace context of the message's headers (a malformed one is ignored).
    pub(crate) fn traced(mut self, headers: Option<&async_nats::HeaderMap>) -> Self {
        self.trace = headers
            .and_then(|h| h.get(TRACEPARENT_HEADER))
            .and_then(|v| TraceParent::parse(v.as_str()));
        self.request_id = headers
            .and_then(|h| h.get(REQUEST_ID_HEADER))
            .map(|v| v.as_str().to_owned());
        self
    }
}

/// Applies a batch like [`apply_records`]; when the database refuses it, tells a poison
/// event from a fault. A fault (connection lost, locked, disk full …, or any error while a
/// write of the projector's status row cannot commit either) is returned: the caller retries
/// the batch, never skips it. Otherwise the batch is applied event by event, and each event
/// the database still refuses is recorded in `rejected_events` in the transaction that moves
/// the checkpoint past it.
pub(crate) async fn apply_isolating(
    db: &DatabaseConnection,
    checkpoint_name: &str,
    batch: &[Delivered],
) -> Result<BatchOutcome, DbErr> {
    let err = match apply_records(db, checkpoint_name, batch).await {
        Ok(out) => return Ok(out),
        Err(e) => e,
    };
    if is_fault(&err) {
        return Err(err);
    }
    // Can the database commit at all? If not, it is not the events' fault.
    probe(db, checkpoint_name, &err).await?;
    tracing::warn!(error = %err, events = batch.len(), "the database refused a batch but commits otherwise: applying it event by event");
    let mut total = BatchOutcome::default();
    for item in batch {
        let out = match apply_records(db, checkpoint_name, std::slice::from_ref(item)).await {
            Ok(out) => out,
            Err(e) if is_fault(&e) => return Err(e),
            Err(e) => {
                probe(db, checkpoint_name, &e).await?;
                reject(db, checkpoint_name, item, &e).await?
            }
        };
        total.applied += out.applied;
        total.already_applied += out.already_applied;
        total.ignored += out.ignored;
        total.undecodable += out.undecodable;
        total.rejected += out.rejected;
        total.checkpoint = total.checkpoint.max(out.checkpoint);
        total.transitions.extend(out.transitions);
    }
    Ok(total)
}

/// Whether an error says nothing about the events: the database is unreachable, busy,
/// full or out of resources. Such a batch is retried until it commits.
pub(crate) fn is_fault(err: &DbErr) -> bool {
    use sea_orm::sqlx;
    let runtime = match err {
        DbErr::Exec(r) | DbErr::Query(r) => r,
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => return true,
        // Our own conversions: the same for every try, so they are the events' doing.
        _ => return false,
    };
    let sea_orm::RuntimeErr::SqlxError(e) = runtime else {
        return false;
    };
    match &**e {
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // Only what the data itself can cause is not a fault: constraint, too big,
                // datatype mismatch, bind range. (Primary result code: the low byte.)
                let primary = code.parse::<i32>().map_or(0, |c| c & 0xff);
                !matches!(primary, 18 | 19 | 20 | 25)
            } else {
                // PostgreSQL SQLSTATE: data exceptions (22), integrity constraints (23) and
                // program limits (54, e.g. an index row too large) come from the data.
                !(code.starts_with("22") || code.starts_with("23") || code.starts_with("54"))
            }
        }
        // Connection, pool, I/O, protocol, a crashed SQLite worker …
        sqlx::Error::Decode(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::TypeNotFound { .. } => false,
        _ => true,
    }
}

/// Commits a write of the projector's status row (recording `err` as its last error):
/// `Ok` means the database takes writes, so a refused batch is the events' doing.
async fn probe(db: &DatabaseConnection, name: &str, err: &DbErr) -> Result<(), DbErr> {
    let txn = db.begin().await?;
    let now = jobstream_core::event::now();
    let res = write_status(&txn, name, now, None, Some(&clean_text(&err.to_string()))).await;
    match res {
        Ok(()) => txn.commit().await.map_err(fault("commit")),
        Err(e) => {
            txn.rollback().await.map_err(fault("rollback"))?;
            Err(fault("probe")(e))
        }
    }
}

/// Records one refused event as rejected and moves the checkpoint past it, in one transaction.
async fn reject(
    db: &DatabaseConnection,
    name: &str,
    item: &Delivered,
    err: &DbErr,
) -> Result<BatchOutcome, DbErr> {
    use rejected_event::Column as C;
    let txn = db.begin().await?;
    let checkpoint = lock_checkpoint(&txn, name).await?;
    let mut out = BatchOutcome {
        checkpoint,
        ..Default::default()
    };
    if item.seq <= checkpoint {
        out.already_applied = 1;
        txn.commit().await?;
        return Ok(out);
    }
    let (job_id, event_type) = describe(item.record.as_ref());
    let error = clean_text(&err.to_string());
    tracing::error!(seq = item.seq, subject = %item.subject, job_id = job_id.as_deref().unwrap_or("-"), error = %error, "event rejected: the projection cannot hold it (recorded in rejected_events)");
    let row = rejected_event::Model {
        projector: name.to_owned(),
        seq: i64::try_from(item.seq).unwrap_or(i64::MAX),
        subject: clean_text(&item.subject),
        job_id,
        event_type,
        error,
        rejected_at: jobstream_core::event::now(),
    };
    let written = async {
        rejected_event::Entity::insert_many([row.into_active_model()])
            .on_conflict(
                OnConflict::columns([C::Projector, C::Seq])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        save_checkpoint(&txn, name, item.seq, jobstream_core::event::now()).await
    }
    .await;
    match written {
        Ok(()) => txn.commit().await.map_err(fault("commit"))?,
        Err(e) => {
            txn.rollback().await.map_err(fault("rollback"))?;
            // The dead letter itself cannot be written: retry, never skip silently.
            return Err(fault("recording a rejected event")(e));
        }
    }
    out.rejected = 1;
    out.checkpoint = item.seq;
    Ok(out)
}

/// The id and type of a record, for its dead letter.
fn describe(rec: Option<&Record>) -> (Option<String>, Option<String>) {
    match rec {
        Some(Record::Job(e)) => (
            Some(e.job_id.to_string()),
            Some(e.event_type().as_str().to_owned()),
        ),
        Some(Record::Schedule(s)) => (
            Some(clean_text(&s.schedule_key).chars().take(36).collect()),
            Some(
                match s.event {
                    jobstream_core::schedule::ScheduleEvent::Created(_) => "schedule.created",
                    jobstream_core::schedule::ScheduleEvent::Deleted { .. } => "schedule.deleted",
                    jobstream_core::schedule::ScheduleEvent::Paused(_) => "schedule.paused",
                    jobstream_core::schedule::ScheduleEvent::Resumed(_) => "schedule.resumed",
                }
                .to_owned(),
            ),
        ),
        Some(Record::User(u)) => (Some(u.user_id.to_string()), Some("user".to_owned())),
        Some(Record::Queue(q)) => (
            Some(q.queue.to_string().chars().take(36).collect()),
            Some(
                if q.event.paused() {
                    "queue_paused"
                } else {
                    "queue_resumed"
                }
                .to_owned(),
            ),
        ),
        Some(Record::Workflow(w)) => (
            Some(w.workflow_id.to_string()),
            Some(format!("workflow.{}", w.event.token())),
        ),
        Some(Record::Other) | None => (None, None),
    }
}

/// Text any database column takes: no control characters (NUL breaks PostgreSQL), bounded.
pub(crate) fn clean_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(4000)
        .collect()
}

/// Upserts the projector's status row. `failing_since`: `None` clears it (healthy), `Some`
/// keeps an earlier value. `last_error`: `None` keeps the previous one.
pub(crate) async fn write_status<C: ConnectionTrait>(
    db: &C,
    name: &str,
    now: DateTime<Utc>,
    failing_since: Option<DateTime<Utc>>,
    last_error: Option<&str>,
) -> Result<(), DbErr> {
    let current = projector_status::Entity::find_by_id(name.to_owned())
        .one(db)
        .await?;
    let row = projector_status::Model {
        name: name.to_owned(),
        heartbeat_at: current.as_ref().map_or(now, |c| c.heartbeat_at),
        failing_since: failing_since
            .map(|f| current.as_ref().and_then(|c| c.failing_since).unwrap_or(f)),
        last_error: last_error
            .map(str::to_owned)
            .or_else(|| current.as_ref().and_then(|c| c.last_error.clone())),
        last_error_at: if last_error.is_some() {
            Some(now)
        } else {
            current.as_ref().and_then(|c| c.last_error_at)
        },
    };
    upsert_status(db, row).await
}

/// Marks the projector alive and caught up: heartbeat now, not failing.
pub(crate) async fn write_heartbeat(db: &DatabaseConnection, name: &str) -> Result<(), DbErr> {
    let current = projector_status::Entity::find_by_id(name.to_owned())
        .one(db)
        .await?;
    let row = projector_status::Model {
        name: name.to_owned(),
        heartbeat_at: jobstream_core::event::now(),
        failing_since: None,
        last_error: current.as_ref().and_then(|c| c.last_error.clone()),
        last_error_at: current.and_then(|c| c.last_error_at),
    };
    upsert_status(db, row).await
}

async fn upsert_status<C: ConnectionTrait>(
    db: &C,
    row: projector_status::Model,
) -> Result<(), DbErr> {
    use projector_status::Column as C;
    projector_status::Entity::insert_many([row.into_active_model()])
        .on_conflict(
            OnConflict::column(C::Name)
                .update_columns([
                    C::HeartbeatAt,
                    C::FailingSince,
                    C::LastError,
                    C::LastErrorAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Reads a projector's checkpoint (0 when it never ran).
pub(crate) async fn load_checkpoint<C: ConnectionTrait>(db: &C, name: &str) -> Result<u64, DbErr> {
    Ok(projector_checkpoint::Entity::find_by_id(name.to_owned())
        .one(db)
        .await?
        .map_or(0, |c| u64::try_from(c.last_seq).unwrap_or(0)))
}

/// Reads a projector's checkpoint inside a fold transaction and holds it until the
/// transaction ends: the fence that keeps two projectors (a standby while the pin moves)
/// from applying the same event. On PostgreSQL `SELECT … FOR UPDATE` makes a second fold
/// wait, then read the checkpoint the first committed; a missing row is created first so
/// there is one to lock. SQLite has one writer at a time: a fold that read an older
/// checkpoint cannot commit over a newer one (its write fails busy, and is retried).
pub(crate) async fn lock_checkpoint(txn: &DatabaseTransaction, name: &str) -> Result<u64, DbErr> {
    use projector_checkpoint::Column as C;
    let locked = || {
        projector_checkpoint::Entity::find_by_id(name.to_owned())
            .lock_exclusive()
            .one(txn)
    };
    let row = match locked().await? {
        Some(row) => Some(row),
        None => {
            let first = projector_checkpoint::Model {
                name: name.to_owned(),
                last_seq: 0,
                updated_at: jobstream_core::event::now(),
            };
            // Two first folds: the second insert waits for the first to commit, then does nothing.
            projector_checkpoint::Entity::insert_many([first.into_active_model()])
                .on_conflict(OnConflict::column(C::Name).do_nothing().to_owned())
                .exec_without_returning(txn)
                .await?;
            locked().await?
        }
    };
    Ok(row.map_or(0, |c| u64::try_from(c.last_seq).unwrap_or(0)))
}

/// Applies `(sequence, event)` pairs in order (an event that failed to decode is `None`)
/// and moves the checkpoint, all in one transaction.
pub(crate) async fn apply_batch(
    db: &DatabaseConnection,
    checkpoint_name: &str,
    batch: &[(u64, Option<Envelope>)],
) -> Result<BatchOutcome, DbErr> {
    let records: Vec<Delivered> = batch
        .iter()
        .map(|(seq, env)| Delivered::new(*seq, String::new(), env.clone().map(Record::Job)))
        .collect();
    apply_isolating(db, checkpoint_name, &records).await
}

/// Applies `(sequence, record)` pairs — job events, schedule and user records — in order
/// (a message that failed to decode is `None`) and moves the checkpoint, all in one transaction.
pub(crate) async fn apply_records(
    db: &DatabaseConnection,
    checkpoint_name: &str,
    batch: &[Delivered],
) -> Result<BatchOutcome, DbErr> {
    let txn = db.begin().await?;
    match fold_in(&txn, checkpoint_name, batch).await {
        // A failed COMMIT is never the events' doing (constraints fail their statement), and
        // may leave the connection in a transaction: a fault, so the caller drops the pool.
        Ok(out) => txn.commit().await.map(|()| out).map_err(fault("commit")),
        Err(e) => {
            // Explicitly, not on drop: the connection goes back to the pool without the write lock.
            // If even that fails, the connection's state is unknown: a fault, never a rejection.
            txn.rollback().await.map_err(fault("rollback"))?;
            Err(e)
        }
    }
}

/// Turns an error into a fault ([`is_fault`]) that names the step.
fn fault(step: &'static str) -> impl FnOnce(DbErr) -> DbErr {
    move |e| DbErr::Conn(sea_orm::RuntimeErr::Internal(format!("{step} failed: {e}")))
}

/// The fold of one batch inside `txn` (which the caller commits).
async fn fold_in(
    txn: &DatabaseTransaction,
    checkpoint_name: &str,
    batch: &[Delivered],
) -> Result<BatchOutcome, DbErr> {
    let checkpoint = lock_checkpoint(txn, checkpoint_name).await?;
    let mut out = BatchOutcome {
        checkpoint,
        ..Default::default()
    };

    let mut schedules: Vec<(u64, &ScheduleRecord)> = Vec::new();
    let mut fresh_users: Vec<(u64, &UserEnvelope)> = Vec::new();
    let mut queue_records: Vec<(u64, &QueueRecord)> = Vec::new();
    let mut fresh_workflows = Vec::new();
    // Jobs fired by a schedule: (schedule key, sequence, firing time).
    let mut firings: Vec<(&str, u64, DateTime<Utc>)> = Vec::new();
    let fresh: Vec<(u64, &Envelope, Option<TraceParent>, Option<&str>)> = batch
        .iter()
        .filter_map(
            |Delivered {
                 seq,
                 subject,
                 record: rec,
                 trace,
                 request_id,
             }| {
                if *seq <= checkpoint {
                    out.already_applied += 1;
                    return None;
                }
                out.checkpoint = out.checkpoint.max(*seq);
                match rec {
                    Some(Record::Job(e)) => {
                        // Whatever the job's fold does (a swept job is not brought back),
                        // the firing happened: its schedule's last firing moves.
                        if let (Event::Queued(_), Some(key)) = (
                            &e.event,
                            jobstream_core::subject::fired_schedule_key(subject),
                        ) {
                            firings.push((key, *seq, e.at));
                        }
                        Some((*seq, e, *trace, request_id.as_deref()))
                    }
                    Some(Record::Schedule(s)) => {
                        schedules.push((*seq, s));
                        None
                    }
                    Some(Record::User(u)) => {
                        fresh_users.push((*seq, u));
                        None
                    }
                    Some(Record::Queue(q)) => {
                        queue_records.push((*seq, q));
                        None
                    }
                    Some(Record::Workflow(w)) => {
                        fresh_workflows.push((*seq, w));
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
            },
        )
        .collect();
    for (seq, rec) in schedules {
        crate::schedules::apply_schedule_record(txn, seq, rec).await?;
        out.applied += 1;
    }
    for (key, seq, at) in firings {
        crate::schedules::record_firing(txn, key, seq, at).await?;
    }
    for (seq, rec) in queue_records {
        crate::queues::apply_queue_record(txn, seq, rec).await?;
        out.applied += 1;
    }
    let (users_applied, users_ignored) = crate::users::apply_user_events(txn, &fresh_users).await?;
    out.applied += users_applied;
    out.ignored += users_ignored;
    if fresh.is_empty() && out.checkpoint == checkpoint {
        return Ok(out);
    }

    let mut jobs = load_jobs(txn, fresh.iter().map(|(_, e, ..)| e.job_id)).await?;
    // Where each job stood before its first event of the batch (`None`: new): what
    // `job_counts` moves it from.
    let mut initial: HashMap<Uuid, Option<JobStatus>> = HashMap::new();
    let mut flows = crate::workflows::BatchFlows::load(
        txn,
        &fresh_workflows,
        fresh.iter().map(|(_, e, ..)| e.job_id),
    )
    .await?;
    let mut dirty: HashSet<Uuid> = HashSet::new();
    for (seq, env, trace, request_id) in fresh {
        let before = jobs.get(&env.job_id).map(|j| j.status);
        initial.entry(env.job_id).or_insert(before);
        // A span per job event only for the OTLP export (logs carry the ids without it).
        let span = if jobstream_core::telemetry::exporting() {
            let parent = trace.unwrap_or_else(|| TraceParent::for_job(env.job_id));
            let span = tracing::info_span!("project_job_event", job_id = %env.job_id, trace_id = %parent.trace_id(), seq, event = env.event_type().as_str());
            jobstream_core::telemetry::join_trace(&span, &parent);
            span
        } else {
            tracing::Span::none()
        };
        match fold_job_event(txn, &mut jobs, seq, env, (trace, request_id))
            .instrument(span)
            .await?
        {
            JobFold::Applied => {
                out.applied += 1;
                dirty.insert(env.job_id);
                let after = jobs.get(&env.job_id);
                (out.transitions)
                    .extend(after.and_then(|j| JobTransition::observe(before, j, env, seq)));
                flows.job_changed(seq, env, after);
            }
            JobFold::Ignored => out.ignored += 1,
        }
    }
    let (workflows_applied, workflows_ignored) = flows.write(txn).await?;
    out.applied += workflows_applied;
    out.ignored += workflows_ignored;

    let mut counts = crate::counts::Deltas::default();
    let rows: Vec<queued_job::Model> = dirty
        .iter()
        .filter_map(|id| jobs.get(id))
        .inspect(|j| counts.job_changed(initial.get(&j.id).copied().flatten(), j))
        .map(queued_job::Model::from)
        .collect();
    upsert_jobs(txn, rows).await?;
    counts.write(txn).await?;
    save_checkpoint(
        txn,
        checkpoint_name,
        out.checkpoint,
        jobstream_core::event::now(),
    )
    .await?;
    Ok(out)
}

/// What one job event did to the batch's jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobFold {
    /// The job changed: its row is written with the batch.
    Applied,
    /// Refused by the state machine, a second use of an idempotency key, or an unknown
    /// job: recorded as ignored, nothing changes.
    Ignored,
}

/// Folds one job event into `jobs` (the batch's jobs, loaded from the projection).
async fn fold_job_event(
    txn: &DatabaseTransaction,
    jobs: &mut HashMap<Uuid, JobState>,
    seq: u64,
    env: &Envelope,
    (trace, request_id): (Option<TraceParent>, Option<&str>),
) -> Result<JobFold, DbErr> {
    let job_id = env.job_id;
    // The job's trace: its events' `traceparent`, or the one it started without one.
    let trace_id = trace.map_or_else(|| TraceId::of_job(job_id), |t| t.trace_id());
    // At debug: one line per event is too many for production, and a disabled line costs nothing.
    tracing::debug!(%job_id, %trace_id, request_id = request_id.unwrap_or(""), seq, event = env.event_type().as_str(), "job event");
    Ok(match (jobs.get_mut(&job_id), &env.event) {
        (None, Event::Queued(spec) | Event::Scheduled(spec)) => {
            if let Some(existing) =
                idempotent_twin(txn, jobs, &spec.owner, spec.idempotency_key.as_deref()).await?
            {
                tracing::info!(%job_id, %existing, seq, "queued event ignored: idempotency key already used by another job");
                JobFold::Ignored
            } else if let Some(mut state) = JobState::from_queued(env, seq) {
                state.trace_id = Some(trace_id.to_string());
                jobs.insert(job_id, state);
                JobFold::Applied
            } else {
                JobFold::Ignored
            }
        }
        (None, _) => {
            tracing::info!(%job_id, seq, event = env.event_type().as_str(), "event ignored: unknown job (never queued, or already swept)");
            JobFold::Ignored
        }
        (Some(state), _) => match state.apply(env, seq) {
            Ok(()) => JobFold::Applied,
            Err(Rejected::Impossible { from, event }) => {
                tracing::warn!(%job_id, seq, from, event, "impossible transition ignored");
                JobFold::Ignored
            }
            Err(e) => {
                tracing::debug!(%job_id, seq, error = %e, "event ignored");
                JobFold::Ignored
            }
        },
    })
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
///
/// In chunks of [`SWEEP_CHUNK`] rows, each one transaction that deletes its rows and
/// takes them off `job_counts`: the counts are those of the rows actually deleted
/// (`RETURNING`), even when a fold retries one of them at the same moment.
pub(crate) async fn sweep_finished(
    db: &DatabaseConnection,
    cutoff: DateTime<Utc>,
) -> Result<u64, DbErr> {
    use queued_job::Column as C;
    use sea_orm::sea_query::{Expr, ExprTrait, Query};
    let terminal: Vec<&str> = JobStatus::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .map(JobStatus::as_str)
        .collect();
    let doomed = || {
        Expr::col(C::Status)
            .is_in(terminal.iter().copied())
            .and(Expr::col(C::FinishedAt).lt(cutoff))
    };
    let mut swept = 0;
    loop {
        let chunk = Query::select()
            .column(C::Id)
            .from(queued_job::Entity)
            .and_where(doomed())
            .limit(SWEEP_CHUNK)
            .to_owned();
        let delete = Query::delete()
            .from_table(queued_job::Entity)
            .and_where(Expr::col(C::Id).in_subquery(chunk))
            .and_where(doomed())
            .returning(Query::returning().columns([C::Queue, C::Owner, C::Status]))
            .to_owned();
        let txn = db.begin().await?;
        let gone = txn.query_all(&delete).await?;
        let mut counts = crate::counts::Deltas::default();
        for row in &gone {
            let (queue, owner, status): (String, String, String) = (
                row.try_get("", "queue")?,
                row.try_get("", "owner")?,
                row.try_get("", "status")?,
            );
            counts.job_deleted(queue, owner, &status);
        }
        counts.write(&txn).await?;
        txn.commit().await?;
        swept += gone.len() as u64;
        if (gone.len() as u64) < SWEEP_CHUNK {
            return Ok(swept);
        }
    }
}

/// Rows one sweep transaction deletes: bounds its memory and how long it holds the lock.
const SWEEP_CHUNK: u64 = 5_000;
