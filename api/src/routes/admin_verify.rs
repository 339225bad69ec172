//! `/v1/admin/verify`: ask the projector to compare its projection with a fresh fold of
//! the stream, and read the result (admins only).
//!
//! As with replay, the API runs nothing itself: it sends a verify command to the
//! projector, which runs one verify at a time in the background and publishes its state
//! (running, then the result or the error) into the replay bucket (see
//! [`jobstream_core::verify`]). Every API instance reads the same state. A verify is
//! refused (409) while a replay runs.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use jobstream_core::catalogue::FieldError;
use jobstream_core::replay::DEFAULT_PROJECTOR;
use jobstream_core::verify::{
    self as wire, Difference, RejectedEvent, VerifyCommand, VerifyReply, VerifyResult, VerifyState,
    VerifyStatus,
};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::http::OptionalBody;
use crate::input::{Field, Unknown, impl_body};
use crate::state::AppState;

/// `/v1/admin/verify` routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/verify", get(verify_status).post(start_verify))
}

/// OpenAPI of verify on request.
#[derive(OpenApi)]
#[openapi(
    paths(start_verify, verify_status),
    components(schemas(
        StartVerify,
        VerifyState,
        VerifyStatus,
        VerifyResult,
        Difference,
        RejectedEvent
    )),
    tags((name = "admin", description = "Operators"))
)]
pub struct VerifyDoc;

/// How the verify runs (the body is optional).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartVerify {
    /// Finished jobs older than this many seconds count as rightly swept (default: the
    /// projector's own job TTL).
    #[schema(value_type = Option<u64>)]
    pub job_ttl_secs: Option<Field<u64>>,
    /// Names sent that are not fields of a verify request.
    #[serde(skip)]
    pub unknown: Unknown,
}

impl_body!(StartVerify);

impl StartVerify {
    /// The command, or every bad field.
    fn validate(self) -> Result<VerifyCommand, Vec<FieldError>> {
        let mut errors = Vec::new();
        self.unknown.report(&mut errors);
        let job_ttl_secs = self.job_ttl_secs.and_then(|f| {
            f.check(
                "job_ttl_secs",
                "must be a whole number of seconds",
                &mut errors,
            )
        });
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(VerifyCommand { job_ttl_secs })
    }
}

/// Start a verify: the projector folds the stream afresh in memory, in the background,
/// and compares it with the projection.
#[utoipa::path(
    post, path = "/v1/admin/verify", tag = "admin", request_body(content = Option<StartVerify>),
    responses(
        (status = 202, description = "Started; poll GET for the result", body = VerifyState),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A verify or a replay is running", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad field", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No projector is running to execute it", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(sub = %caller.sub))]
pub async fn start_verify(
    State(state): State<AppState>,
    caller: Caller,
    OptionalBody(body): OptionalBody<StartVerify>,
) -> Result<(StatusCode, Json<VerifyState>), ApiError> {
    caller.require_admin()?;
    let command = body
        .unwrap_or_default()
        .validate()
        .map_err(ApiError::Unprocessable)?;
    let reply = wire::request(&state.broker, DEFAULT_PROJECTOR, &command)
        .await
        .map_err(|e| ApiError::Unavailable(format!("verify: {e}")))?;
    match reply {
        VerifyReply::Started(s) => {
            tracing::info!("verify requested over the admin API");
            Ok((StatusCode::ACCEPTED, Json(s)))
        }
        VerifyReply::Busy(s) => Err(ApiError::Conflict(format!(
            "a verify is already running (started {}); GET /v1/admin/verify shows its result when it ends",
            s.started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ))),
        VerifyReply::ReplayRunning(p) => Err(ApiError::Conflict(format!(
            "a replay is running ({} at sequence {} of {}); verify once it has finished",
            p.phase, p.position, p.target
        ))),
        VerifyReply::Failed { error } => Err(ApiError::Unavailable(format!(
            "the projector could not start the verify: {error}"
        ))),
    }
}

/// State of the running (or last) verify: `running`, or its result, or why it failed.
#[utoipa::path(
    get, path = "/v1/admin/verify", tag = "admin",
    responses(
        (status = 200, description = "The running or last verify", body = VerifyState),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No verify has run", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn verify_status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<VerifyState>, ApiError> {
    caller.require_admin()?;
    wire::read_state(&state.broker, DEFAULT_PROJECTOR)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound("no verify has run".into()))
}
