//! `/v1/jobs/{id}/events` (a job's full history, read from the stream) and
//! `/v1/jobs/{id}/wait` (a bounded long-poll until the job finishes).

use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use jobstream_core::event::Event;
use jobstream_core::{JobState, fold, stream_read};
use jobstream_entity::queued_job;
use sea_orm::EntityTrait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiQuery, PathParam};
use crate::routes::jobs::JobView;
use crate::state::AppState;

/// Longest `wait` (the API's request timeout is 60 s).
pub const MAX_WAIT: Duration = Duration::from_secs(55);
/// `wait` without `timeout`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs/{id}/events", get(job_history))
        .route("/v1/jobs/{id}/wait", get(wait_job))
}

/// One stored event of a job.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryEvent {
    /// Stream sequence.
    pub seq: u64,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Attempt it belongs to.
    pub attempt: u32,
    /// Event id.
    pub event_id: Uuid,
    /// The event's own fields.
    pub data: Value,
}

/// A job's history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobHistory {
    /// The job.
    pub job_id: Uuid,
    /// Its events, in stream order.
    pub events: Vec<HistoryEvent>,
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::NotFound(format!("no job {id}")))
}

/// The owner of a job from the projection (when its `queued` event has expired from the stream).
async fn projected(state: &AppState, id: Uuid) -> Result<Option<JobState>, ApiError> {
    match queued_job::Entity::find_by_id(id.to_string())
        .one(&state.db)
        .await?
    {
        Some(row) => Ok(Some(JobState::try_from(row).map_err(anyhow::Error::from)?)),
        None => Ok(None),
    }
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
    let job_id = parse_id(&id)?;
    let events = stream_read::job_events(&state.broker, job_id).await?;
    let owner = match events.iter().find_map(|(_, e)| match &e.event {
        Event::Queued(spec) => Some(spec.owner.clone()),
        _ => None,
    }) {
        Some(o) => Some(o),
        None => projected(&state, job_id).await?.map(|j| j.spec.owner),
    };
    match owner {
        Some(o) if caller.may_see(&o) && !events.is_empty() => {}
        _ => return Err(ApiError::NotFound(format!("no job {id}"))),
    }
    let events = events
        .into_iter()
        .map(|(msg, env)| {
            let mut data = serde_json::to_value(&env.event).unwrap_or(Value::Null);
            if let Value::Object(o) = &mut data {
                o.remove("type");
            }
            HistoryEvent {
                seq: msg.seq,
                event_type: env.event_type().as_str().to_owned(),
                at: env.at,
                attempt: env.attempt,
                event_id: env.event_id,
                data,
            }
        })
        .collect();
    Ok(Json(JobHistory { job_id, events }))
}

/// How long to wait.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// `500ms`, `30s`, `1m` (a bare number is seconds); default 30 s, at most 1 min; waits end at 55 s.
    pub timeout: Option<String>,
}

fn parse_timeout(s: Option<&str>) -> Result<Duration, ApiError> {
    let Some(s) = s.map(str::trim) else {
        return Ok(DEFAULT_WAIT);
    };
    let bad = || {
        ApiError::field(
            "timeout",
            format!(
                "must be a duration like 500ms, 30s or 1m, at most 1m (waits end at {}s)",
                MAX_WAIT.as_secs()
            ),
        )
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(bad()),
    };
    // Up to a minute (`1m`, as the docs offer) is accepted and answered at MAX_WAIT with
    // the job's current state, as any timeout is; a longer ask is a mistake worth naming.
    if d > Duration::from_secs(60) {
        return Err(bad());
    }
    Ok(d.min(MAX_WAIT))
}

/// The job's state folded from the stream (the source of truth, complete up to now);
/// the projection when its events have expired from the stream.
async fn current(state: &AppState, id: Uuid) -> Result<Option<JobState>, ApiError> {
    let events = stream_read::job_events(&state.broker, id).await?;
    match fold::fold_history(events.iter().map(|(m, e)| (m.seq, e))) {
        Some(s) => Ok(Some(s)),
        None => projected(state, id).await,
    }
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
    let timeout = parse_timeout(q.timeout.as_deref())?;
    let job_id = parse_id(&id)?;
    let deadline = tokio::time::Instant::now() + timeout;
    // Subscribe before reading the state: a completion stored in between is not missed.
    let mut rx = state.live.subscribe();
    let closing = state.live.closing();
    let mut job = current(&state, job_id)
        .await?
        .filter(|j| caller.may_see(&j.spec.owner))
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    while !job.status.is_terminal() {
        let refresh = tokio::select! {
            () = closing.cancelled() => break,
            () = tokio::time::sleep_until(deadline) => break,
            r = rx.recv() => match r {
                Ok(ev) => ev.job_id == job_id && ev.seq > job.last_seq,
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => break,
            },
        };
        if refresh && let Some(j) = current(&state, job_id).await? {
            job = j;
        }
    }
    Ok(Json(JobView::from(&job)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_and_are_bounded() {
        assert_eq!(parse_timeout(None).unwrap(), DEFAULT_WAIT);
        assert_eq!(
            parse_timeout(Some("500ms")).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_timeout(Some("2")).unwrap(), Duration::from_secs(2));
        assert_eq!(parse_timeout(Some("1m")).unwrap(), MAX_WAIT);
        assert!(parse_timeout(Some("10m")).is_err());
        assert!(parse_timeout(Some("soon")).is_err());
    }
}
