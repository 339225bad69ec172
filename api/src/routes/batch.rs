//! `POST /v1/jobs/batch`: up to 1,000 jobs stored all together or not at all.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::{Body, ClientTrace, IdempotencyKey, RequestId};
use crate::jobs::{BatchAccepted, SubmitBatch};
use crate::state::AppState;

/// `/v1/jobs/batch`.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/jobs/batch", post(submit_batch))
}

/// Submit up to 1,000 jobs atomically (JetStream atomic batch publish): `202` once all
/// are stored; any invalid job → `422` naming `jobs[i].field`, and nothing is stored.
/// With an `Idempotency-Key` header, repeating the request returns the same ids with `200`.
#[utoipa::path(
    post, path = "/v1/jobs/batch", tag = "jobs", request_body = SubmitBatch,
    params(("traceparent" = Option<String>, Header, description = "W3C trace context: every job of the batch joins this trace (without one each job starts its own)")),
    responses(
        (status = 202, description = "All stored", body = BatchAccepted),
        (status = 200, description = "The idempotency key was used before: the same ids", body = BatchAccepted),
        (status = 400, description = "Body is not a JSON object", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A job is invalid, or the batch is empty or too large; nothing stored", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "A queue's backlog is over its bound; nothing stored, retry after `Retry-After` seconds", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(jobs = tracing::field::Empty), err(Debug, level = "info"))]
pub async fn submit_batch(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    ClientTrace(trace): ClientTrace,
    IdempotencyKey(key): IdempotencyKey,
    Body(body): Body<SubmitBatch>,
) -> Result<Response, ApiError> {
    let stored = state
        .jobs()
        .submit_batch(&caller, body, key, request_id.as_deref(), trace)
        .await?;
    let jobs = stored.ids.len();
    let (status, ids) = if stored.existing {
        tracing::info!(jobs, "idempotency key used before: existing batch returned");
        (StatusCode::OK, stored.ids)
    } else {
        tracing::info!(jobs, "batch stored");
        (StatusCode::ACCEPTED, stored.ids)
    };
    Ok((status, Json(BatchAccepted { ids })).into_response())
}
