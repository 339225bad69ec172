//! `/v1/jobs/{id}/cancel` and `/v1/jobs/{id}/retry`: requests appended as events.
//!
//! Both decide from the job's events in the stream (folded with the same state
//! machine as the projector), never from the SQL projection, and append their
//! event only if nothing happened to the job since that fold (JetStream
//! optimistic concurrency on the job's subjects). If something did, they fold
//! again and decide again.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use jobstream_core::broker::BrokerError;
use jobstream_core::event::{Envelope, Event};
use jobstream_core::{JobState, JobStatus, fold};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{OptionalJson, PathParam};
use crate::routes::jobs::{JobView, request_id};
use crate::state::AppState;

/// Longest cancellation reason kept.
pub const MAX_REASON_LEN: usize = 1_000;
/// How often a request folds again when the job keeps changing under it.
const MAX_CONFLICTS: usize = 8;

/// Cancel and retry routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/jobs/{id}/retry", post(retry_job))
}

/// Optional body of a cancellation.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // Documents the body; it is parsed field by field.
pub struct CancelJob {
    /// Why (kept as the job's error), at most 1,000 characters.
    reason: Option<String>,
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
    headers: HeaderMap,
    PathParam(id): PathParam,
    OptionalJson(body): OptionalJson,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let job_id = parse_id(&id)?;
    let reason = parse_reason(body)?;
    let job = append_after_fold(&state, &caller, &headers, job_id, |job| {
        if job.status.is_terminal() {
            return Err(ApiError::Conflict(format!(
                "job {job_id} is already {}; only unfinished jobs can be cancelled",
                job.status.as_str()
            )));
        }
        if job.cancel_requested() {
            // Asked before; its worker is stopping it.
            return Ok(None);
        }
        Ok(Some(Event::CancelRequested {
            reason: reason.clone(),
            by: Some(caller.sub.clone()),
        }))
    })
    .await?;
    if job.status == JobStatus::Cancelled && job.spec.run_at.is_some() {
        // A delayed job cancelled before it fired: drop its timer so it never fires. Best
        // effort: a timer that fires anyway is ignored by the fold and by the workers.
        if let Err(e) = state.broker.cancel_timer(&job.spec.queue, job_id).await {
            tracing::warn!(error = %e, "cancelled delayed job: timer not purged");
        }
    }
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
    headers: HeaderMap,
    PathParam(id): PathParam,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let job_id = parse_id(&id)?;
    let job = append_after_fold(&state, &caller, &headers, job_id, |job| {
        if !matches!(job.status, JobStatus::Failed | JobStatus::Cancelled) {
            return Err(ApiError::Conflict(format!(
                "job {job_id} is {}; only failed or cancelled jobs can be retried",
                job.status.as_str()
            )));
        }
        Ok(Some(Event::RetryRequested {
            priority: job.spec.priority,
            by: Some(caller.sub.clone()),
        }))
    })
    .await?;
    tracing::info!("retry requested");
    Ok((StatusCode::ACCEPTED, Json(JobView::from(&job))))
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::NotFound(format!("no job {id}")))
}

/// The optional `{"reason": "..."}` body of a cancellation.
fn parse_reason(body: Option<Value>) -> Result<Option<String>, ApiError> {
    let Some(value) = body else {
        return Ok(None);
    };
    let Value::Object(mut obj) = value else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    };
    let reason = match obj.remove("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) if r.chars().count() <= MAX_REASON_LEN => Some(r),
        Some(_) => {
            return Err(ApiError::field(
                "reason",
                format!("must be a string of at most {MAX_REASON_LEN} characters"),
            ));
        }
    };
    if let Some(unknown) = obj.keys().next() {
        return Err(ApiError::field(unknown.clone(), "unknown field"));
    }
    Ok(reason)
}

/// Folds the job's history, lets `decide` choose an event (or none, or refuse),
/// and appends it only if the job has no newer event; on a conflict, starts over.
/// Returns the job's state including the appended event.
async fn append_after_fold(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    job_id: Uuid,
    decide: impl Fn(&JobState) -> Result<Option<Event>, ApiError>,
) -> Result<JobState, ApiError> {
    for _ in 0..MAX_CONFLICTS {
        let history = state.broker.job_history(job_id).await?;
        let mut job = fold::fold_history(history.iter().map(|(seq, env)| (*seq, env)))
            .filter(|job| caller.may_see(&job.spec.owner))
            .ok_or_else(|| ApiError::NotFound(format!("no job {job_id}")))?;
        let Some(event) = decide(&job)? else {
            return Ok(job);
        };
        // A retry request opens a fresh set of attempts: attempt 0, like `queued`.
        let attempt = match event {
            Event::RetryRequested { .. } => 0,
            _ => job.attempt,
        };
        let env = Envelope::new(job_id, attempt, event);
        match state
            .broker
            .publish_if_last(&env, &job.spec.queue, request_id(headers), job.last_seq)
            .await
        {
            Ok(seq) => {
                job.apply(&env, seq)
                    .map_err(|e| anyhow::anyhow!("stored event does not fold: {e}"))?;
                tracing::info!(
                    stream_seq = seq,
                    event = env.event_type().as_str(),
                    "event appended"
                );
                return Ok(job);
            }
            Err(BrokerError::Conflict { .. }) => {
                tracing::debug!("job changed while deciding; folding again");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Unavailable(format!(
        "job {job_id} keeps changing; retry the request"
    )))
}
