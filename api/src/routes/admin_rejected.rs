//! `/v1/admin/rejected`: the projector's dead letters (admins only). An event the
//! projection cannot hold (e.g. a NUL character on PostgreSQL) is recorded there instead
//! of stopping the fold; see [`rejected_event::list`].

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use jobstream_entity::rejected_event;

use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::state::AppState;

/// Most dead letters per page.
const MAX_LIMIT: u64 = 500;
/// Name of the projector whose dead letters are listed.
const PROJECTOR: &str = jobstream_core::replay::DEFAULT_PROJECTOR;

/// `/v1/admin/rejected` routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/rejected", get(list_rejected))
}

/// OpenAPI of the dead-letter listing.
#[derive(OpenApi)]
#[openapi(
    paths(list_rejected),
    components(schemas(RejectedView, RejectedPage)),
    tags((name = "admin", description = "Operators"))
)]
pub struct RejectedDoc;

/// Paging of the listing.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RejectedQuery {
    /// Only events with a stream sequence above this (the previous page's `next_after`).
    pub after: Option<u64>,
    /// Page size, 1 to 500 (default 100).
    pub limit: Option<u64>,
}

/// One event the projection could not hold.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedView {
    /// Stream sequence of the event.
    pub seq: u64,
    /// Subject it was stored under.
    pub subject: String,
    /// The job (or schedule key, or user id) it belongs to, when it decoded.
    pub job_id: Option<String>,
    /// Event type, when it decoded.
    pub event_type: Option<String>,
    /// Why the database refused it.
    pub error: String,
    /// When the projector rejected it.
    pub rejected_at: DateTime<Utc>,
}

/// One page of dead letters, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedPage {
    /// The dead letters.
    pub items: Vec<RejectedView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<u64>,
}

/// List the events the projector rejected (admins only).
#[utoipa::path(
    get, path = "/v1/admin/rejected", tag = "admin", params(RejectedQuery),
    responses(
        (status = 200, description = "A page of dead letters", body = RejectedPage),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad query parameter", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(sub = %caller.sub))]
pub async fn list_rejected(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<RejectedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RejectedPage>, ApiError> {
    if !caller.is_admin {
        return Err(ApiError::Forbidden(
            "rejected events are for admins only".into(),
        ));
    }
    let Query(q) = query.map_err(|e| ApiError::field("query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!("must be 1 to {MAX_LIMIT}"),
        ));
    }
    // One more than asked tells whether there is a next page.
    let mut rows =
        rejected_event::list(&state.db, PROJECTOR, q.after.unwrap_or(0), limit + 1).await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let seq = |r: &rejected_event::Model| u64::try_from(r.seq).unwrap_or(0);
    let next_after = more.then(|| rows.last().map(seq)).flatten();
    Ok(Json(RejectedPage {
        items: rows
            .into_iter()
            .map(|r| RejectedView {
                seq: seq(&r),
                subject: r.subject,
                job_id: r.job_id,
                event_type: r.event_type,
                error: r.error,
                rejected_at: r.rejected_at,
            })
            .collect(),
        next_after,
    }))
}
