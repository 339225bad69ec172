//! Storing submissions ([`JobService::submit`], [`JobService::submit_batch`]) and the
//! messages that do it: delayed jobs (`run_at` / `delay_ms`) and idempotency keys.
//!
//! - A job to run now is one `queued` event.
//! - A delayed job is a `scheduled` event plus a timer (`timers.<queue>.<job_id>`)
//!   holding its `queued` event under `Nats-Schedule: @at <run_at>`; nats-server
//!   publishes that event on `jobs.<queue>.<job_id>.queued` at `run_at` (no polling,
//!   survives restarts). Both are one atomic batch: never a scheduled job without its timer.
//! - An idempotency key adds an idempotency record (`idem.<hash(owner, key)>`) to the
//!   same atomic batch with `Nats-Expected-Last-Subject-Sequence: 0`: the stream stores
//!   the first batch for a key and refuses every later one, whichever API instance
//!   sends it; the refused request reads the record and answers with the existing job.

use chrono::{DateTime, Duration as ChronoDuration, SubsecRound, Utc};
use jobstream_core::JobState;
use jobstream_core::atomic::{
    EXPECTED_LAST_SUBJECT_SEQUENCE, Outgoing, SCHEDULE_HEADER, SCHEDULE_TARGET_HEADER, TTL_HEADER,
};
use jobstream_core::broker::BrokerError;
use jobstream_core::event::{Envelope, Event, JobSpec, SCHEMA_VERSION};
use jobstream_core::subject::{self, QueueName};
use jobstream_core::trace::TraceParent;
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;
use uuid::Uuid;

use super::input::{SubmitBatch, SubmitJob, validate_key};
use super::{BatchStored, JobService, JobsError, Submitted};
use crate::auth::Caller;

/// The key of a single submission: the header, the body field, or both when they agree.
fn merge_key(header: Option<String>, body: Option<String>) -> Result<Option<String>, JobsError> {
    match (checked_header(header)?, body) {
        (Some(h), Some(b)) if h != b => Err(JobsError::field(
            "idempotency_key",
            "differs from the Idempotency-Key header",
        )),
        (h, b) => Ok(h.or(b)),
    }
}

/// The `Idempotency-Key` header, validated.
fn checked_header(header: Option<String>) -> Result<Option<String>, JobsError> {
    if let Some(k) = &header {
        validate_key(k).map_err(|m| JobsError::field("Idempotency-Key", m))?;
    }
    Ok(header)
}

impl JobService {
    /// Validates and stores one job (delayed and/or idempotent as asked). `header_key` is
    /// an idempotency key given beside the body (the `Idempotency-Key` header).
    pub async fn submit(
        &self,
        caller: &Caller,
        input: SubmitJob,
        header_key: Option<String>,
        request_id: Option<&str>,
        client_trace: Option<TraceParent>,
    ) -> Result<Submitted, JobsError> {
        let mut spec = input
            .validate(&caller.sub, &self.state.kinds)
            .map_err(JobsError::Invalid)?;
        spec.idempotency_key = merge_key(header_key, spec.idempotency_key.take())?;
        if runs_now(&spec) {
            self.state
                .admission
                .admit(&self.state.broker, &[(&spec.queue, 1)])
                .await?;
        }
        let job_id = Uuid::now_v7();
        let span = tracing::Span::current();
        span.record("job_id", tracing::field::display(job_id));
        span.record("kind", spec.kind.as_str());
        // The client's trace, or one the job starts.
        let trace = client_trace.map_or_else(|| TraceParent::for_job(job_id), |t| t.child());
        span.record("trace_id", tracing::field::display(trace.trace_id()));
        let (first, msgs) = job_messages(job_id, &spec, request_id, &trace);
        // Storing the job, exported under the job's trace (the request's span is not in it:
        // it starts before the job has an id).
        let stored = if jobstream_core::telemetry::exporting() {
            let span = tracing::info_span!("enqueue_job", %job_id, trace_id = %trace.trace_id());
            jobstream_core::telemetry::join_trace(&span, &client_trace.unwrap_or(trace));
            span
        } else {
            tracing::Span::none()
        };
        if let Some(ids) = self
            .publish_guarded(
                &spec.owner,
                spec.idempotency_key.as_deref(),
                vec![job_id],
                msgs,
            )
            .instrument(stored)
            .await?
        {
            let id = ids
                .first()
                .copied()
                .ok_or_else(|| anyhow::anyhow!("empty idempotency record"))?;
            let job = self.load(id).await?.ok_or_else(|| {
                JobsError::NotFound(format!(
                    "job {id} of this idempotency key is no longer stored"
                ))
            })?;
            return Ok(Submitted::Existing(Box::new(job)));
        }
        jobstream_core::metrics::job_enqueued(spec.queue.as_str(), &spec.kind, "api");
        let mut job = JobState::from_queued(&first, 0)
            .ok_or_else(|| anyhow::anyhow!("first event did not fold"))?;
        job.trace_id = Some(trace.trace_id().to_string());
        Ok(Submitted::New(Box::new(job)))
    }

    /// Validates and stores up to [`super::MAX_BATCH`] jobs all together or not at all
    /// (one atomic batch); any invalid job refuses the whole batch, naming `jobs[i].field`.
    pub async fn submit_batch(
        &self,
        caller: &Caller,
        input: SubmitBatch,
        key: Option<String>,
        request_id: Option<&str>,
        client_trace: Option<TraceParent>,
    ) -> Result<BatchStored, JobsError> {
        let key = checked_header(key)?;
        let specs = input
            .validate(&caller.sub, &self.state.kinds)
            .map_err(JobsError::Invalid)?;
        tracing::Span::current().record("jobs", specs.len());
        let mut per_queue: Vec<(&QueueName, u64)> = Vec::new();
        for spec in specs.iter().filter(|s| runs_now(s)) {
            match per_queue.iter_mut().find(|(q, _)| *q == &spec.queue) {
                Some((_, n)) => *n += 1,
                None => per_queue.push((&spec.queue, 1)),
            }
        }
        self.state
            .admission
            .admit(&self.state.broker, &per_queue)
            .await?;
        let mut ids = Vec::with_capacity(specs.len());
        let mut msgs = Vec::with_capacity(specs.len());
        for spec in &specs {
            let id = Uuid::now_v7();
            ids.push(id);
            // One trace per job: the client's (all the batch's jobs in it), or each job's own.
            let trace = client_trace.map_or_else(|| TraceParent::for_job(id), |t| t.child());
            msgs.extend(job_messages(id, spec, request_id, &trace).1);
        }
        match self
            .publish_guarded(&caller.sub, key.as_deref(), ids.clone(), msgs)
            .await?
        {
            Some(existing) => Ok(BatchStored {
                ids: existing,
                existing: true,
            }),
            None => {
                for spec in &specs {
                    jobstream_core::metrics::job_enqueued(spec.queue.as_str(), &spec.kind, "batch");
                }
                Ok(BatchStored {
                    ids,
                    existing: false,
                })
            }
        }
    }
}

/// Whether the job becomes runnable at once (a delayed job joins its queue's backlog
/// only when its timer fires, so admission control does not count it now).
fn runs_now(spec: &JobSpec) -> bool {
    spec.run_at
        .is_none_or(|run_at| run_at <= jobstream_core::event::now())
}

/// The first event of a job and the messages that store it (one, or two for a delayed job).
pub fn job_messages(
    job_id: Uuid,
    spec: &JobSpec,
    request_id: Option<&str>,
    trace: &TraceParent,
) -> (Envelope, Vec<Outgoing>) {
    let queued = Envelope::new(job_id, 0, Event::Queued(spec.clone()));
    let now = jobstream_core::event::now();
    match spec.run_at {
        Some(run_at) if run_at > now => {
            let scheduled = Envelope::new(job_id, 0, Event::Scheduled(spec.clone()));
            // The fired `queued` event lands on the job's priority lane.
            let target = subject::for_event(&spec.queue, job_id, &queued.event);
            let mut timer = Outgoing::event(&queued, &spec.queue, request_id)
                .with_trace(trace)
                .with_header(SCHEDULE_HEADER, &format!("@at {}", fire_time(run_at)))
                .with_header(SCHEDULE_TARGET_HEADER, &target)
                // The stream's max_age must never drop a pending timer.
                .with_header(TTL_HEADER, "never");
            timer.subject = subject::timer(&spec.queue, job_id);
            let msgs = vec![
                Outgoing::event(&scheduled, &spec.queue, request_id).with_trace(trace),
                timer,
            ];
            (scheduled, msgs)
        }
        _ => {
            let msgs = vec![Outgoing::event(&queued, &spec.queue, request_id).with_trace(trace)];
            (queued, msgs)
        }
    }
}

/// `run_at` rounded up to the millisecond, in the RFC 3339 form nats-server schedules
/// take (`@at` accepts fractional seconds): the job never starts before its time.
fn fire_time(run_at: DateTime<Utc>) -> String {
    let ms = run_at.trunc_subsecs(3);
    let t = if ms < run_at {
        ms + ChronoDuration::milliseconds(1)
    } else {
        ms
    };
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// What an idempotency record says: which jobs the key produced.
#[derive(Debug, Serialize, Deserialize)]
struct IdempotencyRecord {
    v: u16,
    owner: String,
    key: String,
    /// The jobs, in submission order (one, or a whole batch).
    job_ids: Vec<Uuid>,
    at: DateTime<Utc>,
}

/// The idempotency record message of `owner`'s `key`, create-only.
fn idempotency_message(owner: &str, key: &str, job_ids: Vec<Uuid>) -> Outgoing {
    let rec = IdempotencyRecord {
        v: SCHEMA_VERSION,
        owner: owner.to_owned(),
        key: key.to_owned(),
        job_ids,
        at: jobstream_core::event::now(),
    };
    // The first job's id makes the record's message id: a retried batch is a duplicate.
    let msg_id = format!("idem-{}", rec.job_ids.first().copied().unwrap_or_default());
    Outgoing::new(
        subject::idempotency(owner, key),
        serde_json::to_vec(&rec).unwrap_or_default(),
    )
    .with_header("Nats-Msg-Id", &msg_id)
    .with_header(EXPECTED_LAST_SUBJECT_SEQUENCE, "0")
}

impl JobService {
    /// The jobs `owner`'s `key` already produced, read from the stream.
    async fn existing_jobs(&self, owner: &str, key: &str) -> Result<Option<Vec<Uuid>>, JobsError> {
        let Some(msg) = self
            .state
            .broker
            .last_on_subject(&subject::idempotency(owner, key))
            .await?
        else {
            return Ok(None);
        };
        let rec: IdempotencyRecord = serde_json::from_slice(&msg.payload)
            .map_err(|e| anyhow::anyhow!("unreadable idempotency record: {e}"))?;
        Ok(Some(rec.job_ids))
    }

    /// Publishes `msgs` atomically, guarded by `owner`'s `key` when given. `Ok(None)` means
    /// stored; `Ok(Some(ids))` means the key was already used, for the jobs `ids`.
    async fn publish_guarded(
        &self,
        owner: &str,
        key: Option<&str>,
        job_ids: Vec<Uuid>,
        mut msgs: Vec<Outgoing>,
    ) -> Result<Option<Vec<Uuid>>, JobsError> {
        let Some(key) = key else {
            self.state
                .broker
                .publish_atomic(msgs)
                .await
                .map_err(refusal)?;
            return Ok(None);
        };
        if let Some(ids) = self.existing_jobs(owner, key).await? {
            return Ok(Some(ids));
        }
        msgs.insert(0, idempotency_message(owner, key, job_ids.clone()));
        match self.state.broker.publish_atomic(msgs).await {
            Ok(_) => Ok(None),
            // Another request (maybe on another API instance) stored this key first, or an
            // earlier attempt of this very request did (then the record names our jobs).
            Err(e) if e.is_wrong_last_sequence() => match self.existing_jobs(owner, key).await? {
                Some(ids) if ids == job_ids => Ok(None),
                Some(ids) => Ok(Some(ids)),
                None => Err(anyhow::anyhow!("idempotency record vanished after a conflict").into()),
            },
            Err(e) => Err(refusal(e)),
        }
    }
}

/// A broker error as the client sees it: a server refusal of the content is invalid input.
fn refusal(e: BrokerError) -> JobsError {
    match e.refusal() {
        Some(reason) if reason.contains("too large") => JobsError::field(
            "jobs",
            format!(
                "the batch needs more messages than the server allows in one atomic batch ({reason})"
            ),
        ),
        Some(reason) => JobsError::field("body", reason),
        None => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fire_time_rounds_up_to_the_millisecond() {
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.250001Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(fire_time(t), "2026-01-02T03:04:05.251Z");
        let whole = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(fire_time(whole), "2026-01-02T03:04:05.000Z");
    }
}
