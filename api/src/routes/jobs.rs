//! `/v1/jobs`: submit, get and list jobs (HTTP glue over [`crate::jobs::JobService`]).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::page::link;
use crate::http::{
    ApiQuery, Body, ClientTrace, IdempotencyKey, Page, PageRequest, PathParam, RequestId,
};
use crate::jobs::{self, FilterParams, JobFilter, JobView, SubmitJob, Submitted};
use crate::state::AppState;
use crate::workflows::WorkflowService;

/// `/v1/jobs` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", get(list_jobs).post(submit_job))
        .route("/v1/jobs/{id}", get(get_job))
}

/// Submit a job. Answers `202` once the `queued` event is stored in JetStream.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs", request_body = SubmitJob,
    params(("traceparent" = Option<String>, Header, description = "W3C trace context: the job joins this trace (a malformed one is ignored; without one the job starts its own)")),
    responses(
        (status = 202, description = "Stored; runs soon (or `scheduled` until `run_at`)", body = JobView, headers(("Location" = String, description = "URL of the job"))),
        (status = 200, description = "The idempotency key was used before: the existing job", body = JobView),
        (status = 400, description = "Body is not a JSON object", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "A queue's backlog is over its bound; nothing stored, retry after `Retry-After` seconds", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(job_id = tracing::field::Empty, kind = tracing::field::Empty, trace_id = tracing::field::Empty), err(Debug, level = "info"))]
pub async fn submit_job(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    ClientTrace(trace): ClientTrace,
    IdempotencyKey(key): IdempotencyKey,
    Body(body): Body<SubmitJob>,
) -> Result<Response, ApiError> {
    let submitted = state
        .jobs()
        .submit(&caller, body, key, request_id.as_deref(), trace)
        .await?;
    let (status, job) = match submitted {
        Submitted::New(job) => {
            // At debug, like every per-job line of the worker and projector: at info it is
            // a formatted line and a write per job (about 5 % of the API's CPU under load).
            tracing::debug!(status = job.status.as_str(), "job stored");
            (StatusCode::ACCEPTED, job)
        }
        Submitted::Existing(job) => {
            tracing::info!(existing = %job.id, "idempotency key used before: existing job returned");
            (StatusCode::OK, job)
        }
    };
    let location = format!("/v1/jobs/{}", job.id);
    Ok((
        status,
        [(header::LOCATION, location)],
        Json(JobView::from(&*job)),
    )
        .into_response())
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
    let job = state.jobs().get(&caller, jobs::parse_id(&id)?).await?;
    let steps = WorkflowService::new(&state)
        .steps_of_jobs(&[job.id])
        .await?;
    Ok(Json(JobView::from(&job).with_step(steps.get(&job.id))))
}

/// Cursor of a job list (its filters are [`FilterParams`]).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1..=500 (default 50).
    pub limit: Option<u64>,
    /// Page after this cursor (older jobs), from `next_cursor`.
    pub after: Option<String>,
    /// Page before this cursor (newer jobs), from `prev_cursor`.
    pub before: Option<String>,
}

/// List jobs, newest first, with cursor pagination. Users see their own jobs; admins see all.
///
/// Filters combine: status, kind, queue, owner (admins), id prefix, a text match on
/// payload, result or error (`q`; it scans, so pair it with other filters on big tables),
/// and a created-time range.
///
/// Ids are UUIDv7 (time-ordered), so the cursor is the id: pages stay stable while jobs are added.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs", params(FilterParams, ListQuery),
    responses((status = 200, body = Page<JobView>), (status = 422, body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
    ApiQuery(params): ApiQuery<FilterParams>,
) -> Result<Json<Page<JobView>>, ApiError> {
    let page = PageRequest::parse(q.limit, q.after.as_deref(), q.before.as_deref())?;
    let filter = JobFilter::parse(&params)?;
    let (jobs, more) = state.jobs().list(&caller, &filter, &page).await?;
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let steps = WorkflowService::new(&state).steps_of_jobs(&ids).await?;
    let items = jobs
        .iter()
        .map(|j| JobView::from(j).with_step(steps.get(&j.id)))
        .collect();
    let filters = params.pairs();
    Ok(Json(Page::new(
        items,
        &page,
        more,
        |j: &JobView| j.id.to_string(),
        |key, cursor| link("/v1/jobs", page.limit, key, cursor, &filters),
    )))
}
