//! `POST /v1/jobs/batch`: up to 1,000 jobs stored all together or not at all.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use jobstream_core::catalogue::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::lifecycle;
use crate::routes::jobs::parse_submission;
use crate::state::AppState;

/// Most jobs in one batch.
pub const MAX_BATCH: usize = 1000;

/// `/v1/jobs/batch`.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/jobs/batch", post(submit_batch))
}

/// A batch submission.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // Documents the body; parsing is done job by job to name the bad field.
pub struct SubmitBatch {
    /// 1 to 1,000 jobs, each as for `POST /v1/jobs` (without `idempotency_key`:
    /// send an `Idempotency-Key` header for the whole batch).
    jobs: Vec<crate::routes::jobs::SubmitJob>,
}

/// The stored batch.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchAccepted {
    /// Ids of the jobs, in the order they were given.
    pub ids: Vec<Uuid>,
}

fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-request-id").and_then(|v| v.to_str().ok())
}

/// Submit up to 1,000 jobs atomically (JetStream atomic batch publish): `202` once all
/// are stored; any invalid job → `422` naming `jobs[i].field`, and nothing is stored.
/// With an `Idempotency-Key` header, repeating the request returns the same ids with `200`.
#[utoipa::path(
    post, path = "/v1/jobs/batch", tag = "jobs", request_body = SubmitBatch,
    responses(
        (status = 202, description = "All stored", body = BatchAccepted),
        (status = 200, description = "The idempotency key was used before: the same ids", body = BatchAccepted),
        (status = 400, description = "Body is not a JSON object", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A job is invalid, or the batch is empty or too large; nothing stored", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(jobs = tracing::field::Empty), err(Debug, level = "info"))]
pub async fn submit_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson,
) -> Result<Response, ApiError> {
    let Value::Object(mut obj) = body else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    };
    let key = lifecycle::header_key(&headers)?;
    let jobs = match obj.remove("jobs") {
        Some(Value::Array(jobs)) => jobs,
        Some(_) => return Err(ApiError::field("jobs", "must be an array of jobs")),
        None => return Err(ApiError::field("jobs", "required")),
    };
    if let Some(unknown) = obj.keys().next() {
        return Err(ApiError::field(unknown.clone(), "unknown field"));
    }
    if jobs.is_empty() || jobs.len() > MAX_BATCH {
        return Err(ApiError::field(
            "jobs",
            format!("must hold 1 to {MAX_BATCH} jobs (found {})", jobs.len()),
        ));
    }
    tracing::Span::current().record("jobs", jobs.len());
    let mut errors = Vec::new();
    let mut specs = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.into_iter().enumerate() {
        let prefix = |field: &str| format!("jobs[{i}].{field}");
        if job.get("idempotency_key").is_some_and(|v| !v.is_null()) {
            errors.push(FieldError::new(
                prefix("idempotency_key"),
                "not supported per job in a batch; send an Idempotency-Key header for the whole batch",
            ));
            continue;
        }
        match parse_submission(job, &caller, &state.kinds) {
            Ok(spec) => specs.push(spec),
            Err(ApiError::Unprocessable(errs)) => errors.extend(
                errs.into_iter()
                    .map(|e| FieldError::new(prefix(&e.field), e.message)),
            ),
            Err(ApiError::BadRequest(_)) => {
                errors.push(FieldError::new(
                    format!("jobs[{i}]"),
                    "must be a JSON object",
                ));
            }
            Err(other) => return Err(other),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Unprocessable(errors));
    }
    let rid = request_id(&headers);
    let mut ids = Vec::with_capacity(specs.len());
    let mut msgs = Vec::with_capacity(specs.len());
    for spec in &specs {
        let id = Uuid::now_v7();
        ids.push(id);
        msgs.extend(lifecycle::job_messages(id, spec, rid).1);
    }
    if let Some(existing) =
        lifecycle::publish_guarded(&state, &caller.sub, key.as_deref(), ids.clone(), msgs).await?
    {
        tracing::info!(
            jobs = existing.len(),
            "idempotency key used before: existing batch returned"
        );
        return Ok((StatusCode::OK, Json(BatchAccepted { ids: existing })).into_response());
    }
    tracing::info!(jobs = ids.len(), "batch stored");
    Ok((StatusCode::ACCEPTED, Json(BatchAccepted { ids })).into_response())
}
