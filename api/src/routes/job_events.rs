//! `/v1/jobs/{id}/events` (a job's full history, read from the stream) and
//! `/v1/jobs/{id}/wait` (a bounded long-poll until the job finishes).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::{ApiQuery, PathParam};
use crate::jobs::{self, HistoryEvent, JobHistory, JobView};
use crate::state::AppState;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs/{id}/events", get(job_history))
        .route("/v1/jobs/{id}/wait", get(wait_job))
}

/// A job's full event history, from the stream.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/events", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, body = JobHistory), (status = 404, description = "No such job (or not yours)", body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(job_id = %id))]
pub async fn job_history(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam,
) -> Result<Json<JobHistory>, ApiError> {
    let job_id = jobs::parse_id(&id)?;
    let events = state.jobs().history(&caller, job_id).await?;
    Ok(Json(JobHistory {
        job_id,
        events: events.iter().map(HistoryEvent::from).collect(),
    }))
}

/// How long to wait.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// `500ms`, `30s`, `1m` (a bare number is seconds); default 30 s, at most 1 min; waits end at 55 s.
    pub timeout: Option<String>,
}

/// Wait until the job is finished (or the timeout passes) and return it.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/wait", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id"), WaitQuery),
    responses(
        (status = 200, description = "The job: finished, or its current state at the timeout", body = JobView),
        (status = 404, description = "No such job (or not yours)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad timeout", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(job_id = %id))]
pub async fn wait_job(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> Result<Json<JobView>, ApiError> {
    let timeout = jobs::wait_timeout(q.timeout.as_deref())?;
    let job_id = jobs::parse_id(&id)?;
    let job = state.jobs().wait(&caller, job_id, timeout).await?;
    Ok(Json(JobView::from(&job)))
}
