//! `/v1/jobs/{id}/cancel` and `/v1/jobs/{id}/retry`: requests appended as events
//! (see [`crate::jobs::JobService::cancel`] and [`crate::jobs::JobService::retry`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::{OptionalBody, PathParam, RequestId};
use crate::jobs::{self, CancelJob, JobView};
use crate::state::AppState;

/// Cancel and retry routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/jobs/{id}/retry", post(retry_job))
}

/// Cancel a job. A queued or retrying job is cancelled at once and never starts; a
/// running job's handler is told to stop and the job ends `cancelled` when it has.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "jobs", request_body(content = Option<CancelJob>),
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 202, description = "Cancellation stored (the job is `cancelled`, or `running` until its handler stops)", body = JobView),
        (status = 404, description = "No such job (or not yours)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has already finished", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(job_id = %id), err(Debug, level = "info"))]
pub async fn cancel_job(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    PathParam(id): PathParam,
    OptionalBody(body): OptionalBody<CancelJob>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let id = jobs::parse_id(&id)?;
    let job = state
        .jobs()
        .cancel(&caller, id, body.unwrap_or_default(), request_id.as_deref())
        .await?;
    tracing::info!(status = job.status.as_str(), "cancellation requested");
    Ok((StatusCode::ACCEPTED, Json(JobView::from(&job))))
}

/// Run a failed or cancelled job again, with a fresh set of attempts. The
/// `retry_requested` event stays in its history; the errors of earlier attempts are kept.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 202, description = "Retry stored; the job is `queued` again", body = JobView),
        (status = 404, description = "No such job (or not yours)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job is not failed or cancelled", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(job_id = %id), err(Debug, level = "info"))]
pub async fn retry_job(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    PathParam(id): PathParam,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let id = jobs::parse_id(&id)?;
    let job = state
        .jobs()
        .retry(&caller, id, request_id.as_deref())
        .await?;
    tracing::info!("retry requested");
    Ok((StatusCode::ACCEPTED, Json(JobView::from(&job))))
}
