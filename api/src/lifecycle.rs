//! Storing a submission in the stream: delayed jobs (`run_at` / `delay_ms`) and
//! idempotency keys. Used by `POST /v1/jobs` and `POST /v1/jobs/batch`.
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

use axum::http::HeaderMap;
use chrono::{DateTime, Duration as ChronoDuration, SubsecRound, Utc};
use jobstream_core::atomic::{
    EXPECTED_LAST_SUBJECT_SEQUENCE, Outgoing, SCHEDULE_HEADER, SCHEDULE_TARGET_HEADER, TTL_HEADER,
};
use jobstream_core::catalogue::FieldError;
use jobstream_core::event::{Envelope, Event, JobSpec, SCHEMA_VERSION};
use jobstream_core::subject;
use jobstream_core::{JobState, fold};
use jobstream_entity::queued_job;
use sea_orm::EntityTrait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::ApiError;
use crate::routes::jobs::JobView;
use crate::state::AppState;

/// Longest delay a job may ask for (one year).
pub const MAX_DELAY_MS: u64 = 365 * 24 * 3600 * 1000;
/// Longest idempotency key.
pub const MAX_KEY_LEN: usize = 255;
/// The HTTP header carrying an idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The lifecycle fields of a submission.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    /// When to run (from `run_at` or `delay_ms`).
    pub(crate) run_at: Option<DateTime<Utc>>,
    /// The body's `idempotency_key`.
    pub(crate) idempotency_key: Option<String>,
}

/// Removes and validates `run_at`, `delay_ms` and `idempotency_key` from a submission,
/// recording errors against their field names.
pub(crate) fn take_extras(obj: &mut Map<String, Value>, errors: &mut Vec<FieldError>) -> Extras {
    let now = jobstream_core::event::now();
    let run_at = match obj.remove("run_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(&s) {
            Ok(t) => Some(t.with_timezone(&Utc).trunc_subsecs(6)),
            Err(e) => {
                errors.push(FieldError::new(
                    "run_at",
                    format!("must be an RFC 3339 time like 2026-01-02T15:04:05Z ({e})"),
                ));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new("run_at", "must be an RFC 3339 string"));
            None
        }
    };
    let delay_ms = match obj.remove("delay_ms") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64().filter(|n| *n <= MAX_DELAY_MS) {
            Some(n) => Some(n),
            None => {
                errors.push(FieldError::new(
                    "delay_ms",
                    format!("must be an integer from 0 to {MAX_DELAY_MS}"),
                ));
                None
            }
        },
    };
    let run_at = match (run_at, delay_ms) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                "delay_ms",
                "give either run_at or delay_ms, not both",
            ));
            None
        }
        (Some(t), None) if t > now + ChronoDuration::milliseconds(MAX_DELAY_MS as i64) => {
            errors.push(FieldError::new(
                "run_at",
                "must be at most one year from now",
            ));
            None
        }
        (Some(t), None) => Some(t),
        (None, Some(ms)) => Some(now + ChronoDuration::milliseconds(ms as i64)),
        (None, None) => None,
    };
    let idempotency_key = match obj.remove("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => match validate_key(&k) {
            Ok(()) => Some(k),
            Err(m) => {
                errors.push(FieldError::new("idempotency_key", m));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new("idempotency_key", "must be a string"));
            None
        }
    };
    Extras {
        run_at,
        idempotency_key,
    }
}

fn validate_key(k: &str) -> Result<(), String> {
    if k.is_empty() || k.len() > MAX_KEY_LEN {
        return Err(format!("must be 1 to {MAX_KEY_LEN} characters"));
    }
    if k.chars().any(|c| c.is_control()) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// The `Idempotency-Key` header, if any (validated).
pub(crate) fn header_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let k = v
        .to_str()
        .map_err(|_| ApiError::field("Idempotency-Key", "must be visible ASCII"))?
        .to_owned();
    validate_key(&k).map_err(|m| ApiError::field("Idempotency-Key", m))?;
    Ok(Some(k))
}

/// The key of a single submission: the header, the body field, or both when they agree.
pub(crate) fn merge_key(
    headers: &HeaderMap,
    body_key: Option<String>,
) -> Result<Option<String>, ApiError> {
    match (header_key(headers)?, body_key) {
        (Some(h), Some(b)) if h != b => Err(ApiError::field(
            "idempotency_key",
            "differs from the Idempotency-Key header",
        )),
        (h, b) => Ok(h.or(b)),
    }
}

/// The first event of a job and the messages that store it (one, or two for a delayed job).
pub(crate) fn job_messages(
    job_id: Uuid,
    spec: &JobSpec,
    request_id: Option<&str>,
) -> (Envelope, Vec<Outgoing>) {
    let queued = Envelope::new(job_id, 0, Event::Queued(spec.clone()));
    let now = jobstream_core::event::now();
    match spec.run_at {
        Some(run_at) if run_at > now => {
            let scheduled = Envelope::new(job_id, 0, Event::Scheduled(spec.clone()));
            // The fired `queued` event lands on the job's priority lane.
            let target = subject::for_event(&spec.queue, job_id, &queued.event);
            let mut timer = Outgoing::event(&queued, &spec.queue, request_id)
                .with_header(SCHEDULE_HEADER, &format!("@at {}", fire_time(run_at)))
                .with_header(SCHEDULE_TARGET_HEADER, &target)
                // The stream's max_age must never drop a pending timer.
                .with_header(TTL_HEADER, "never");
            timer.subject = subject::timer(&spec.queue, job_id);
            let msgs = vec![Outgoing::event(&scheduled, &spec.queue, request_id), timer];
            (scheduled, msgs)
        }
        _ => {
            let msgs = vec![Outgoing::event(&queued, &spec.queue, request_id)];
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
pub(crate) struct IdempotencyRecord {
    v: u16,
    owner: String,
    key: String,
    /// The jobs, in submission order (one, or a whole batch).
    pub(crate) job_ids: Vec<Uuid>,
    at: DateTime<Utc>,
}

/// The idempotency record message of `owner`'s `key`, create-only.
pub(crate) fn idempotency_message(owner: &str, key: &str, job_ids: Vec<Uuid>) -> Outgoing {
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

/// The jobs `owner`'s `key` already produced, read from the stream.
pub(crate) async fn existing_jobs(
    state: &AppState,
    owner: &str,
    key: &str,
) -> Result<Option<Vec<Uuid>>, ApiError> {
    let Some(msg) = state
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
pub(crate) async fn publish_guarded(
    state: &AppState,
    owner: &str,
    key: Option<&str>,
    job_ids: Vec<Uuid>,
    mut msgs: Vec<Outgoing>,
) -> Result<Option<Vec<Uuid>>, ApiError> {
    let Some(key) = key else {
        state.broker.publish_atomic(msgs).await.map_err(refusal)?;
        return Ok(None);
    };
    if let Some(ids) = existing_jobs(state, owner, key).await? {
        return Ok(Some(ids));
    }
    msgs.insert(0, idempotency_message(owner, key, job_ids.clone()));
    match state.broker.publish_atomic(msgs).await {
        Ok(_) => Ok(None),
        // Another request (maybe on another API instance) stored this key first, or an
        // earlier attempt of this very request did (then the record names our jobs).
        Err(e) if e.is_wrong_last_sequence() => match existing_jobs(state, owner, key).await? {
            Some(ids) if ids == job_ids => Ok(None),
            Some(ids) => Ok(Some(ids)),
            None => Err(anyhow::anyhow!("idempotency record vanished after a conflict").into()),
        },
        Err(e) => Err(refusal(e)),
    }
}

/// A broker error as the client sees it: a server refusal of the content is a 422.
fn refusal(e: jobstream_core::broker::BrokerError) -> ApiError {
    match e.refusal() {
        Some(reason) if reason.contains("too large") => ApiError::field(
            "jobs",
            format!(
                "the batch needs more messages than the server allows in one atomic batch ({reason})"
            ),
        ),
        Some(reason) => ApiError::field("body", reason),
        None => e.into(),
    }
}

/// Outcome of storing one job.
pub(crate) enum Stored {
    /// Newly stored: its first state.
    New(Box<JobState>),
    /// The idempotency key was used before: that job.
    Existing(Box<JobView>),
}

/// Stores one job (delayed and/or idempotent as its spec says).
pub(crate) async fn store_job(
    state: &AppState,
    job_id: Uuid,
    spec: &JobSpec,
    request_id: Option<&str>,
) -> Result<Stored, ApiError> {
    let (first, msgs) = job_messages(job_id, spec, request_id);
    if let Some(ids) = publish_guarded(
        state,
        &spec.owner,
        spec.idempotency_key.as_deref(),
        vec![job_id],
        msgs,
    )
    .await?
    {
        let id = ids
            .first()
            .copied()
            .ok_or_else(|| anyhow::anyhow!("empty idempotency record"))?;
        let view = load_job(state, id).await?.ok_or_else(|| {
            ApiError::NotFound(format!(
                "job {id} of this idempotency key is no longer stored"
            ))
        })?;
        return Ok(Stored::Existing(Box::new(view)));
    }
    let job = JobState::from_queued(&first, 0)
        .ok_or_else(|| anyhow::anyhow!("first event did not fold"))?;
    Ok(Stored::New(Box::new(job)))
}

/// A job as clients see it: from the projection, or folded from the stream when the
/// projection has not caught up.
pub(crate) async fn load_job(state: &AppState, id: Uuid) -> Result<Option<JobView>, ApiError> {
    if let Some(row) = queued_job::Entity::find_by_id(id.to_string())
        .one(&state.db)
        .await?
    {
        let s = JobState::try_from(row).map_err(anyhow::Error::from)?;
        return Ok(Some(JobView::from(&s)));
    }
    let history = state.broker.job_history(id).await?;
    Ok(fold::fold_history(history.iter().map(|(seq, env)| (*seq, env))).map(|s| JobView::from(&s)))
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

    #[test]
    fn extras_name_their_fields() {
        let mut errors = Vec::new();
        let mut obj = serde_json::json!({"run_at": "tomorrow", "idempotency_key": ""})
            .as_object()
            .cloned()
            .unwrap();
        take_extras(&mut obj, &mut errors);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["run_at", "idempotency_key"]);

        let mut errors = Vec::new();
        let mut obj = serde_json::json!({"run_at": "2026-01-01T00:00:00Z", "delay_ms": 5})
            .as_object()
            .cloned()
            .unwrap();
        take_extras(&mut obj, &mut errors);
        assert_eq!(errors[0].field, "delay_ms");
    }
}
