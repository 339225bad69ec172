//! `/v1/kinds`: the catalogue of job kinds (the seeds' `Job` model): what each
//! kind does, its defaults and the JSON Schema its payload must match.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use jobstream_core::kinds::KindDef;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::PathParam;
use crate::state::AppState;

/// `/v1/kinds` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/kinds", get(list_kinds))
        .route("/v1/kinds/{name}", get(get_kind))
}

/// A kind as clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct KindView {
    /// Stable name, the `kind` of a submission.
    pub name: String,
    /// What the kind does.
    pub description: String,
    /// Used when a submission does not say otherwise.
    pub defaults: KindDefaults,
    /// JSON Schema (2020-12) the payload must match; submissions are checked against it.
    pub payload_schema: Value,
    /// `builtin` (run by jobstream's worker) or `custom` (declared in a kinds file).
    pub source: String,
}

/// Defaults of a kind.
#[derive(Debug, Serialize, ToSchema)]
pub struct KindDefaults {
    /// Queue.
    pub queue: String,
    /// Attempts before the job fails for good.
    pub max_attempts: u32,
    /// Per-attempt deadline, ms.
    pub timeout_ms: u64,
}

/// Every kind.
#[derive(Debug, Serialize, ToSchema)]
pub struct KindList {
    /// The kinds, by name.
    pub items: Vec<KindView>,
}

impl From<&KindDef> for KindView {
    fn from(k: &KindDef) -> Self {
        KindView {
            name: k.name.clone(),
            description: k.description.clone(),
            defaults: KindDefaults {
                queue: k.queue.clone(),
                max_attempts: k.max_attempts,
                timeout_ms: k.timeout_ms,
            },
            payload_schema: k.payload_schema.clone(),
            source: match k.source {
                jobstream_core::kinds::KindSource::Builtin => "builtin",
                jobstream_core::kinds::KindSource::Custom => "custom",
            }
            .to_owned(),
        }
    }
}

/// List the job kinds a caller may submit, with defaults and payload schemas.
#[utoipa::path(
    get, path = "/v1/kinds", tag = "kinds",
    responses((status = 200, body = KindList)),
    security(("bearer" = []))
)]
pub async fn list_kinds(State(state): State<AppState>, _caller: Caller) -> Json<KindList> {
    Json(KindList {
        items: state.kinds.kinds().map(KindView::from).collect(),
    })
}

/// One job kind.
#[utoipa::path(
    get, path = "/v1/kinds/{name}", tag = "kinds",
    params(("name" = String, Path, description = "Kind name")),
    responses((status = 200, body = KindView), (status = 404, body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn get_kind(
    State(state): State<AppState>,
    _caller: Caller,
    PathParam(name): PathParam,
) -> Result<Json<KindView>, ApiError> {
    state
        .kinds
        .find(&name)
        .map(|k| Json(KindView::from(k)))
        .ok_or_else(|| ApiError::NotFound(format!("no kind {name:?}")))
}
