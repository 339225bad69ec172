//! `/v1/jobs`: submit, get and list jobs.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use jobstream_core::event::{JobSpec, Priority, RetryBackoff};
use jobstream_core::kinds::Catalogue;
use jobstream_core::subject::QueueName;
use jobstream_core::{JobState, JobStatus, catalogue, fold};
use jobstream_entity::queued_job;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, PathParam};
use crate::lifecycle;
use crate::state::AppState;

/// Most attempts a job may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// Longest per-attempt timeout a job may ask for (24 h).
pub const MAX_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// Longest back-off a job may ask for (24 h).
pub const MAX_BACKOFF_MS: u64 = 24 * 3600 * 1000;
/// Largest page of a list.
pub const MAX_PAGE: u64 = 500;

/// `/v1/jobs` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", get(list_jobs).post(submit_job))
        .route("/v1/jobs/{id}", get(get_job))
}

/// A job submission.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // Documents the body; parsing is done field by field to name the bad field.
pub struct SubmitJob {
    /// Kind of job, e.g. `echo`.
    kind: String,
    /// Input of the handler (any JSON).
    payload: Option<Value>,
    /// Queue (letters, digits, `-`, `_`); defaults per kind.
    queue: Option<String>,
    /// `low`, `normal` (default) or `high`.
    priority: Option<String>,
    /// Attempts before the job fails for good (1..=100); defaults per kind.
    max_attempts: Option<u32>,
    /// Per-attempt deadline in milliseconds; defaults per kind.
    timeout_ms: Option<u64>,
    /// Run at this time (RFC 3339) instead of now; the job is `scheduled` until then.
    run_at: Option<String>,
    /// Run after this many milliseconds (instead of `run_at`).
    delay_ms: Option<u64>,
    /// The same key from the same owner yields the same job (or send an `Idempotency-Key` header).
    idempotency_key: Option<String>,
    /// Delay after the first failed attempt, ms (doubles per attempt, ±20 % jitter); defaults per kind.
    backoff_base_ms: Option<u64>,
    /// Longest delay between attempts, ms; defaults per kind.
    backoff_max_ms: Option<u64>,
}

/// A job as clients see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// Job id (UUIDv7).
    pub id: Uuid,
    /// Kind.
    pub kind: String,
    /// Queue.
    pub queue: String,
    /// Owner (`sub` of the submitter).
    pub owner: String,
    /// `scheduled`, `queued`, `running`, `retrying`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// Priority.
    pub priority: String,
    /// Input.
    pub payload: Value,
    /// Result, once succeeded.
    pub result: Option<Value>,
    /// Latest error.
    pub error: Option<String>,
    /// Latest attempt number (0 before the first).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Per-attempt deadline, ms.
    pub timeout_ms: u64,
    /// Latest progress, percent.
    pub progress: Option<u8>,
    /// Latest progress message.
    pub progress_message: Option<String>,
    /// Queued at.
    pub created_at: DateTime<Utc>,
    /// Latest attempt started at.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Latest change at.
    pub updated_at: DateTime<Utc>,
    /// Earliest run time of a delayed job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// The idempotency key it was submitted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Every failed attempt's error, oldest first (kept across retries).
    pub errors: Vec<AttemptErrorView>,
    /// When a cancellation was requested while the job ran (it ends `cancelled` once its handler stops).
    pub cancel_requested_at: Option<DateTime<Utc>>,
}

/// The error of one failed attempt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttemptErrorView {
    /// Attempt number.
    pub attempt: u32,
    /// What went wrong.
    pub error: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl From<&JobState> for JobView {
    fn from(s: &JobState) -> Self {
        JobView {
            id: s.id,
            kind: s.spec.kind.clone(),
            queue: s.spec.queue.to_string(),
            owner: s.spec.owner.clone(),
            status: s.status.as_str().to_owned(),
            priority: s.spec.priority.as_str().to_owned(),
            payload: s.spec.payload.clone(),
            result: s.result.clone(),
            error: s.error.clone(),
            attempt: s.attempt,
            max_attempts: s.spec.max_attempts,
            timeout_ms: s.spec.timeout_ms,
            progress: s.progress,
            progress_message: s.progress_message.clone(),
            created_at: s.created_at,
            started_at: s.started_at,
            finished_at: s.finished_at,
            updated_at: s.updated_at,
            run_at: s.spec.run_at,
            idempotency_key: s.spec.idempotency_key.clone(),
            errors: s
                .errors
                .iter()
                .map(|e| AttemptErrorView {
                    attempt: e.attempt,
                    error: e.error.clone(),
                    at: e.at,
                })
                .collect(),
            cancel_requested_at: s.cancel_requested_at,
        }
    }
}

pub(crate) fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-request-id").and_then(|v| v.to_str().ok())
}

/// Submit a job. Answers `202` once the `queued` event is stored in JetStream.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs", request_body = SubmitJob,
    responses(
        (status = 202, description = "Stored; runs soon (or `scheduled` until `run_at`)", body = JobView, headers(("Location" = String, description = "URL of the job"))),
        (status = 200, description = "The idempotency key was used before: the existing job", body = JobView),
        (status = 400, description = "Body is not a JSON object", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(job_id = tracing::field::Empty, kind = tracing::field::Empty), err(Debug, level = "info"))]
pub async fn submit_job(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson,
) -> Result<Response, ApiError> {
    let mut spec = parse_submission(body, &caller, &state.kinds)?;
    spec.idempotency_key = lifecycle::merge_key(&headers, spec.idempotency_key.take())?;
    let job_id = Uuid::now_v7();
    let span = tracing::Span::current();
    span.record("job_id", tracing::field::display(job_id));
    span.record("kind", spec.kind.as_str());
    let job = match lifecycle::store_job(&state, job_id, &spec, request_id(&headers)).await? {
        lifecycle::Stored::New(job) => *job,
        lifecycle::Stored::Existing(view) => {
            tracing::info!(existing = %view.id, "idempotency key used before: existing job returned");
            let location = format!("/v1/jobs/{}", view.id);
            return Ok(
                (StatusCode::OK, [(header::LOCATION, location)], Json(*view)).into_response(),
            );
        }
    };
    tracing::info!(status = job.status.as_str(), "job stored");
    let location = format!("/v1/jobs/{job_id}");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(JobView::from(&job)),
    )
        .into_response())
}

/// Validates a submission field by field, so every error names its field.
pub(crate) fn parse_submission(
    body: Value,
    caller: &Caller,
    kinds: &Catalogue,
) -> Result<JobSpec, ApiError> {
    let Value::Object(mut obj) = body else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    };
    let mut errors = Vec::new();
    let kind = match obj.remove("kind") {
        Some(Value::String(k)) => match kinds.find(&k) {
            Some(spec) => Some(spec),
            None => {
                let known = kinds.names();
                errors.push(catalogue::FieldError::new(
                    "kind",
                    format!("unknown kind {k:?}; known kinds: {}", known.join(", ")),
                ));
                None
            }
        },
        Some(_) => {
            errors.push(catalogue::FieldError::new("kind", "must be a string"));
            None
        }
        None => {
            errors.push(catalogue::FieldError::new("kind", "required"));
            None
        }
    };
    let payload = obj.remove("payload").unwrap_or(Value::Null);
    let queue = take_opt(&mut obj, "queue", &mut errors, |v| {
        let s = v.as_str().ok_or("must be a string")?;
        QueueName::parse(s).map_err(|e| e.to_string())
    });
    let priority = take_opt(&mut obj, "priority", &mut errors, |v| {
        v.as_str()
            .and_then(Priority::parse)
            .ok_or_else(|| "must be one of low, normal, high".to_owned())
    });
    let max_attempts = take_opt(&mut obj, "max_attempts", &mut errors, |v| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=MAX_ATTEMPTS_LIMIT).contains(n))
            .ok_or_else(|| format!("must be an integer from 1 to {MAX_ATTEMPTS_LIMIT}"))
    });
    let timeout_ms = take_opt(&mut obj, "timeout_ms", &mut errors, |v| {
        v.as_u64()
            .filter(|n| (1..=MAX_TIMEOUT_MS).contains(n))
            .ok_or_else(|| format!("must be an integer from 1 to {MAX_TIMEOUT_MS}"))
    });
    let extras = lifecycle::take_extras(&mut obj, &mut errors);
    let backoff_field = |v: &Value| {
        v.as_u64()
            .filter(|n| (1..=MAX_BACKOFF_MS).contains(n))
            .ok_or_else(|| format!("must be an integer from 1 to {MAX_BACKOFF_MS}"))
    };
    let backoff_base_ms = take_opt(&mut obj, "backoff_base_ms", &mut errors, backoff_field);
    let backoff_max_ms = take_opt(&mut obj, "backoff_max_ms", &mut errors, backoff_field);
    if let (Some(base), Some(max)) = (backoff_base_ms, backoff_max_ms)
        && base > max
    {
        errors.push(catalogue::FieldError::new(
            "backoff_max_ms",
            "must be at least backoff_base_ms",
        ));
    }
    for unknown in obj.keys() {
        errors.push(catalogue::FieldError::new(unknown.clone(), "unknown field"));
    }
    if let Some(k) = kind
        && let Err(e) = kinds.validate(&k.name, &payload)
    {
        errors.extend(e);
    }
    match kind {
        Some(k) if errors.is_empty() => Ok(JobSpec {
            kind: k.name.clone(),
            queue: queue.unwrap_or_else(|| {
                QueueName::parse(&k.queue).unwrap_or_else(|_| QueueName::default_queue())
            }),
            owner: caller.sub.clone(),
            payload,
            priority: priority.unwrap_or_default(),
            max_attempts: max_attempts.unwrap_or(k.max_attempts),
            timeout_ms: timeout_ms.unwrap_or(k.timeout_ms),
            run_at: extras.run_at,
            idempotency_key: extras.idempotency_key,
            result_ttl_ms: None,
            backoff: Some(RetryBackoff {
                base_ms: backoff_base_ms.unwrap_or(k.default_backoff.base_ms),
                max_ms: backoff_max_ms
                    .unwrap_or(k.default_backoff.max_ms)
                    .max(backoff_base_ms.unwrap_or(0)),
            }),
        }),
        _ => Err(ApiError::Unprocessable(errors)),
    }
}

/// Removes and parses an optional field; a parse failure is recorded against its name.
fn take_opt<T>(
    obj: &mut Map<String, Value>,
    field: &str,
    errors: &mut Vec<catalogue::FieldError>,
    parse: impl FnOnce(&Value) -> Result<T, String>,
) -> Option<T> {
    match obj.remove(field) {
        None | Some(Value::Null) => None,
        Some(v) => match parse(&v) {
            Ok(t) => Some(t),
            Err(message) => {
                errors.push(catalogue::FieldError::new(field, message));
                None
            }
        },
    }
}

/// Get one job. Right after submission it is read from the stream if the projection has not caught up.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, body = JobView), (status = 404, description = "No such job (or not yours)", body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(job_id = %id))]
pub async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam,
) -> Result<Json<JobView>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no job {id}"));
    let job_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let job = match queued_job::Entity::find_by_id(job_id.to_string())
        .one(&state.db)
        .await?
    {
        Some(row) => Some(JobState::try_from(row).map_err(anyhow::Error::from)?),
        // Read-your-writes: the projection may lag the stream by a few milliseconds.
        None => {
            let history = state.broker.job_history(job_id).await?;
            fold::fold_history(history.iter().map(|(seq, env)| (*seq, env)))
        }
    };
    match job {
        Some(job) if caller.may_see(&job.spec.owner) => Ok(Json(JobView::from(&job))),
        _ => Err(not_found()),
    }
}

/// Filters and cursor of a job list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this status.
    pub status: Option<String>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs of this queue.
    pub queue: Option<String>,
    /// Page size, 1..=500 (default 50).
    pub limit: Option<u64>,
    /// Page after this cursor (older jobs), from `next_cursor`.
    pub after: Option<String>,
    /// Page before this cursor (newer jobs), from `prev_cursor`.
    pub before: Option<String>,
}

/// A page of jobs, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    /// The jobs.
    pub items: Vec<JobView>,
    /// Cursor of the next (older) page, when there is one.
    pub next_cursor: Option<String>,
    /// Link to the next page.
    pub next: Option<String>,
    /// Cursor of the previous (newer) page.
    pub prev_cursor: Option<String>,
    /// Link to the previous page.
    pub prev: Option<String>,
}

/// The page size of a list request: 50 by default, 1..=[`MAX_PAGE`].
pub(crate) fn page_limit(limit: Option<u64>) -> Result<u64, ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!("must be from 1 to {MAX_PAGE}"),
        ));
    }
    Ok(limit)
}

/// A page cursor (`after` / `before`): an id returned by a previous page.
pub(crate) fn page_cursor(field: &'static str, v: &str) -> Result<String, ApiError> {
    Uuid::parse_str(v)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::field(field, "must be a cursor returned by a previous page"))
}

/// List jobs, newest first, with cursor pagination. Users see their own jobs; admins see all.
///
/// Ids are UUIDv7 (time-ordered), so the cursor is the id: pages stay stable while jobs are added.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobPage), (status = 422, body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let limit = page_limit(q.limit)?;
    let mut select = queued_job::Entity::find();
    if !caller.is_admin {
        select = select.filter(queued_job::Column::Owner.eq(caller.sub.as_str()));
    }
    if let Some(s) = &q.status {
        let status = JobStatus::parse(s).ok_or_else(|| {
            let all: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::field("status", format!("must be one of {}", all.join(", ")))
        })?;
        select = select.filter(queued_job::Column::Status.eq(status.as_str()));
    }
    if let Some(k) = &q.kind {
        select = select.filter(queued_job::Column::Kind.eq(k.as_str()));
    }
    if let Some(queue) = &q.queue {
        select = select.filter(queued_job::Column::Queue.eq(queue.as_str()));
    }
    let backwards = q.before.is_some();
    if let Some(after) = &q.after {
        select = select.filter(queued_job::Column::Id.lt(page_cursor("after", after)?));
    }
    if let Some(before) = &q.before {
        select = select.filter(queued_job::Column::Id.gt(page_cursor("before", before)?));
    }
    // One extra row tells whether another page follows.
    let order = if backwards {
        sea_orm::Order::Asc
    } else {
        sea_orm::Order::Desc
    };
    let mut rows = select
        .order_by(queued_job::Column::Id, order)
        .limit(limit + 1)
        .all(&state.db)
        .await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    if backwards {
        rows.reverse();
    }
    let items = rows
        .into_iter()
        .map(|r| JobState::try_from(r).map(|s| JobView::from(&s)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::from)?;
    let first = items.first().map(|j| j.id.to_string());
    let last = items.last().map(|j| j.id.to_string());
    let (has_next, has_prev) = if backwards {
        (true, more)
    } else {
        (more, q.after.is_some())
    };
    let next_cursor = if has_next { last } else { None };
    let prev_cursor = if has_prev { first } else { None };
    let link = |key: &str, c: &Option<String>| c.as_ref().map(|c| page_link(&q, limit, key, c));
    Ok(Json(JobPage {
        next: link("after", &next_cursor),
        prev: link("before", &prev_cursor),
        next_cursor,
        prev_cursor,
        items,
    }))
}

fn page_link(q: &ListQuery, limit: u64, key: &str, cursor: &str) -> String {
    let mut parts = vec![format!("limit={limit}"), format!("{key}={cursor}")];
    for (name, v) in [
        ("status", &q.status),
        ("kind", &q.kind),
        ("queue", &q.queue),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name}={}", url_encode(v)));
        }
    }
    format!("/v1/jobs?{}", parts.join("&"))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
