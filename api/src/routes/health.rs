//! Liveness and readiness probes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::state::AppState;

/// `/healthz` and `/readyz`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// NATS and the database are reachable and the stream exists.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "Ready"), (status = 503, description = "A dependency is down")))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let nats = state.broker.client().connection_state() == async_nats::connection::State::Connected;
    let stream = nats
        && state
            .broker
            .jetstream()
            .get_stream(state.broker.stream_name())
            .await
            .is_ok();
    let db = state.db.execute_unprepared("SELECT 1").await.is_ok();
    let ready = nats && stream && db;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(
            json!({ "status": if ready { "ready" } else { "unavailable" }, "nats": nats, "stream": stream, "database": db }),
        ),
    )
}
