//! `/v1/admin/replay`: start a replay of the stream into the live projection and
//! watch its progress (admins only). The replay runs in this API process with the
//! projector's own fold; see [`jobstream_projector::replay`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use jobstream_projector::replay::{self, Progress, ProgressSnapshot, ReplayOptions, ReplayStart};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::http::OptionalJson;
use crate::state::AppState;

/// The replay this process runs or ran last.
#[derive(Clone, Default)]
pub struct ReplayControl {
    current: Arc<Mutex<Option<Arc<Progress>>>>,
}

impl ReplayControl {
    fn get(&self) -> Option<Arc<Progress>> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Registers a new replay unless one is running.
    fn begin(&self) -> Option<Arc<Progress>> {
        let mut guard = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.as_ref().is_some_and(|p| !p.snapshot().finished) {
            return None;
        }
        let p = Arc::new(Progress::default());
        *guard = Some(p.clone());
        Some(p)
    }
}

/// `/v1/admin/replay` routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/replay", get(replay_status).post(start_replay))
}

/// Where the replay starts (at most one of `from_seq` and `since`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartReplay {
    /// Start at this stream sequence.
    pub from_seq: Option<u64>,
    /// Start at the first event stored at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Finished jobs older than this many seconds are swept from the result (default 86400).
    pub job_ttl_secs: Option<u64>,
    /// Discard an interrupted replay's shadow instead of resuming it.
    #[serde(default)]
    pub fresh: bool,
}

/// A replay request, each field checked on its own so that a bad one is named.
fn parse_start(body: serde_json::Value) -> Result<StartReplay, ApiError> {
    let serde_json::Value::Object(obj) = body else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    };
    let mut req = StartReplay::default();
    for (field, v) in obj {
        let bad = |m: &str| ApiError::field(field.clone(), m.to_owned());
        if v.is_null() {
            continue;
        }
        match field.as_str() {
            "from_seq" => {
                req.from_seq = Some(
                    v.as_u64()
                        .ok_or_else(|| bad("must be an integer of at least 1"))?,
                );
            }
            "job_ttl_secs" => {
                req.job_ttl_secs = Some(
                    v.as_u64()
                        .ok_or_else(|| bad("must be a whole number of seconds"))?,
                );
            }
            "since" => {
                req.since = Some(
                    serde_json::from_value(v)
                        .map_err(|_| bad("must be an RFC 3339 time like 2026-01-02T15:04:05Z"))?,
                );
            }
            "fresh" => req.fresh = v.as_bool().ok_or_else(|| bad("must be true or false"))?,
            _ => return Err(bad("unknown field")),
        }
    }
    Ok(req)
}

fn admin_only(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden("replay is for admins only".into()))
    }
}

/// Start a replay into the live projection (runs in the background).
#[utoipa::path(
    post, path = "/v1/admin/replay", tag = "admin", request_body = StartReplay,
    responses(
        (status = 202, description = "Started; poll GET for progress"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A replay is already running", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(sub = %caller.sub))]
pub async fn start_replay(
    State(state): State<AppState>,
    caller: Caller,
    OptionalJson(body): OptionalJson,
) -> Result<Response, ApiError> {
    admin_only(&caller)?;
    let req = match body {
        None => StartReplay::default(),
        Some(v) => parse_start(v)?,
    };
    let start = match (req.from_seq, req.since) {
        (Some(_), Some(_)) => {
            return Err(ApiError::field("since", "give from_seq or since, not both"));
        }
        (Some(0), None) => return Err(ApiError::field("from_seq", "must be at least 1")),
        (Some(s), None) => ReplayStart::Seq(s),
        (None, Some(t)) => ReplayStart::Since(t),
        (None, None) => ReplayStart::Beginning,
    };
    let opts = ReplayOptions {
        start,
        job_ttl: Duration::from_secs(req.job_ttl_secs.unwrap_or(24 * 3600)),
        fresh: req.fresh,
        ..ReplayOptions::default()
    };
    let Some(progress) = state.replay.begin() else {
        let body = Problem {
            kind: "about:blank",
            title: "Conflict",
            status: 409,
            detail: "a replay is already running; GET /v1/admin/replay shows its progress".into(),
            errors: Vec::new(),
        };
        let mut res = (StatusCode::CONFLICT, Json(body)).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        return Ok(res);
    };
    tracing::info!(?start, "replay started over the admin API");
    let (broker, db, cancel, p) = (
        state.broker.clone(),
        state.db.clone(),
        state.live.closing(),
        progress.clone(),
    );
    tokio::spawn(async move {
        match replay::replay_live(&broker, &db, &opts, &p, &cancel).await {
            Ok(s) => tracing::info!(?s, "replay finished"),
            Err(e) => tracing::error!(error = %e, "replay failed"),
        }
    });
    Ok((StatusCode::ACCEPTED, Json(progress.snapshot())).into_response())
}

/// Progress of the running (or last) replay.
#[utoipa::path(
    get, path = "/v1/admin/replay", tag = "admin",
    responses(
        (status = 200, description = "Phase, position, target, events/s, ETA, summary"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No replay has run in this process", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn replay_status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ProgressSnapshot>, ApiError> {
    admin_only(&caller)?;
    state
        .replay
        .get()
        .map(|p| Json(p.snapshot()))
        .ok_or_else(|| ApiError::NotFound("no replay has run in this API process".into()))
}
