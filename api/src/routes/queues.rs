//! `/v1/queues` and `/v1/workers`: HTTP glue over [`crate::queues::QueueService`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::{PathParam, RequestId};
use crate::queues::{ConsumerCounts, QueueControlView, QueueView, WorkerView};
use crate::state::AppState;

/// Queue and worker routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/queues", get(list_queues))
        .route("/v1/queues/{name}/pause", post(pause_queue))
        .route("/v1/queues/{name}/resume", post(resume_queue))
        .route("/v1/workers", get(list_workers))
}

/// The queue and worker part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(list_queues, pause_queue, resume_queue, list_workers),
    components(schemas(QueueView, ConsumerCounts, QueueControlView, WorkerView)),
    tags((name = "queues", description = "Queues (pause / resume) and the workers registry"))
)]
pub struct QueuesDoc;

/// Every queue: unfinished jobs by status, the oldest waiting job's age, the pause
/// state, the NATS consumers' counts and the global limit. Admins only.
#[utoipa::path(
    get, path = "/v1/queues", tag = "queues",
    responses(
        (status = 200, body = [QueueView]),
        (status = 403, description = "Not an admin", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, err(Debug, level = "info"))]
pub async fn list_queues(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<QueueView>>, ApiError> {
    Ok(Json(state.queues().list(&caller).await?))
}

/// Pause a queue: its workers take no new jobs (running ones finish). Stored as an
/// event in the stream, so it survives restarts and replays. Admins only.
#[utoipa::path(
    post, path = "/v1/queues/{name}/pause", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 202, description = "Pause stored; workers stop taking jobs of the queue", body = QueueControlView),
        (status = 403, description = "Not an admin", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a valid queue name", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(queue = %name), err(Debug, level = "info"))]
pub async fn pause_queue(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    PathParam(name): PathParam,
) -> Result<(StatusCode, Json<QueueControlView>), ApiError> {
    set_paused(&state, &caller, &request_id, &name, true).await
}

/// Resume a paused queue: its workers take jobs again. Admins only.
#[utoipa::path(
    post, path = "/v1/queues/{name}/resume", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 202, description = "Resume stored; workers take jobs of the queue again", body = QueueControlView),
        (status = 403, description = "Not an admin", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a valid queue name", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(queue = %name), err(Debug, level = "info"))]
pub async fn resume_queue(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    PathParam(name): PathParam,
) -> Result<(StatusCode, Json<QueueControlView>), ApiError> {
    set_paused(&state, &caller, &request_id, &name, false).await
}

/// Pause or resume: `202` with the stored state.
async fn set_paused(
    state: &AppState,
    caller: &Caller,
    request_id: &RequestId,
    name: &str,
    paused: bool,
) -> Result<(StatusCode, Json<QueueControlView>), ApiError> {
    let view = state
        .queues()
        .set_paused(caller, name, paused, request_id.as_deref())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// Every worker that sent a heartbeat recently: id, host, queues, concurrency, jobs in
/// flight, start time, last heartbeat; `stale` when it missed several. Admins only.
#[utoipa::path(
    get, path = "/v1/workers", tag = "queues",
    responses(
        (status = 200, body = [WorkerView]),
        (status = 403, description = "Not an admin", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, err(Debug, level = "info"))]
pub async fn list_workers(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<WorkerView>>, ApiError> {
    Ok(Json(state.queues().workers(&caller).await?))
}
