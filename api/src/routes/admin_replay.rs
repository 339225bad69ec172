//! `/v1/admin/replay`: ask the projector to replay the stream into the live projection,
//! and read its progress (admins only).
//!
//! The API runs no replay itself: it sends a replay command to the projector, which
//! runs one replay at a time and publishes its progress into a key-value bucket
//! (see [`jobstream_core::replay`]). Every API instance reads the same progress.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use jobstream_core::catalogue::FieldError;
use jobstream_core::replay::{
    self as wire, DEFAULT_PROJECTOR, ProgressSnapshot, ReplayCommand, ReplayReply, ReplayStart,
    RequestError,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::http::OptionalBody;
use crate::input::{Field, Unknown, impl_body};
use crate::state::AppState;

/// `/v1/admin/replay` routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/replay", get(replay_status).post(start_replay))
}

/// Where the replay starts (at most one of `from_seq` and `since`).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartReplay {
    /// Start at this stream sequence (at least 1).
    #[schema(value_type = Option<u64>)]
    pub from_seq: Option<Field<u64>>,
    /// Start at the first event stored at or after this time (RFC 3339).
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub since: Option<Field<DateTime<Utc>>>,
    /// Finished jobs older than this many seconds are swept from the result (default 86400).
    #[schema(value_type = Option<u64>)]
    pub job_ttl_secs: Option<Field<u64>>,
    /// Discard an interrupted replay's shadow instead of resuming it.
    #[schema(value_type = Option<bool>)]
    pub fresh: Option<Field<bool>>,
    /// Names sent that are not fields of a replay request.
    #[serde(skip)]
    pub unknown: Unknown,
}

impl_body!(StartReplay);

impl StartReplay {
    /// The command, or every bad field.
    fn validate(self) -> Result<ReplayCommand, Vec<FieldError>> {
        let mut errors = Vec::new();
        self.unknown.report(&mut errors);
        let from_seq = self
            .from_seq
            .and_then(|f| f.check("from_seq", "must be an integer of at least 1", &mut errors));
        let since = self.since.and_then(|f| {
            f.check(
                "since",
                "must be an RFC 3339 time like 2026-01-02T15:04:05Z",
                &mut errors,
            )
        });
        let job_ttl_secs = self.job_ttl_secs.and_then(|f| {
            f.check(
                "job_ttl_secs",
                "must be a whole number of seconds",
                &mut errors,
            )
        });
        let fresh = self
            .fresh
            .and_then(|f| f.check("fresh", "must be true or false", &mut errors));
        let start = match (from_seq, since) {
            (Some(_), Some(_)) => {
                errors.push(FieldError::new("since", "give from_seq or since, not both"));
                ReplayStart::Beginning
            }
            (Some(0), None) => {
                errors.push(FieldError::new("from_seq", "must be at least 1"));
                ReplayStart::Beginning
            }
            (Some(s), None) => ReplayStart::Seq(s),
            (None, Some(t)) => ReplayStart::Since(t),
            (None, None) => ReplayStart::Beginning,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ReplayCommand {
            start,
            job_ttl_secs: job_ttl_secs.unwrap_or(jobstream_core::replay::DEFAULT_JOB_TTL.as_secs()),
            fresh: fresh.unwrap_or(false),
        })
    }
}

fn admin_only(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden("replay is for admins only".into()))
    }
}

/// Start a replay into the live projection: the projector runs it in the background.
#[utoipa::path(
    post, path = "/v1/admin/replay", tag = "admin", request_body(content = Option<StartReplay>),
    responses(
        (status = 202, description = "Started; poll GET for progress"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A replay is already running", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad field", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No projector is running to execute it", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(sub = %caller.sub))]
pub async fn start_replay(
    State(state): State<AppState>,
    caller: Caller,
    OptionalBody(body): OptionalBody<StartReplay>,
) -> Result<(StatusCode, Json<ProgressSnapshot>), ApiError> {
    admin_only(&caller)?;
    let command = body
        .unwrap_or_default()
        .validate()
        .map_err(ApiError::Unprocessable)?;
    let reply = wire::request(&state.broker, DEFAULT_PROJECTOR, &command)
        .await
        .map_err(|e| match e {
            RequestError::NoProjector | RequestError::Unanswered(_) => {
                ApiError::Unavailable(format!("replay: {e}"))
            }
        })?;
    match reply {
        ReplayReply::Started(progress) => {
            tracing::info!(?command.start, "replay requested over the admin API");
            Ok((StatusCode::ACCEPTED, Json(progress)))
        }
        ReplayReply::Busy(p) => Err(ApiError::Conflict(format!(
            "a replay is already running ({} at sequence {} of {}); GET /v1/admin/replay shows its progress",
            p.phase, p.position, p.target
        ))),
        ReplayReply::Failed { error } => Err(ApiError::Unavailable(format!(
            "the projector could not start the replay: {error}"
        ))),
    }
}

/// Progress of the running (or last) replay.
#[utoipa::path(
    get, path = "/v1/admin/replay", tag = "admin",
    responses(
        (status = 200, description = "Phase, position, target, events/s, ETA, summary"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No replay has run", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn replay_status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ProgressSnapshot>, ApiError> {
    admin_only(&caller)?;
    wire::read_progress(&state.broker, DEFAULT_PROJECTOR)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound("no replay has run".into()))
}
