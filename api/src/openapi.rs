//! The OpenAPI document, generated from the handlers' annotations.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use crate::routes::{health, jobs};
use crate::state::AppState;

/// The API description served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "jobstream", description = "Event-sourced background jobs on NATS JetStream."),
    paths(health::healthz, health::readyz, jobs::submit_job, jobs::get_job, jobs::list_jobs),
    components(schemas(jobs::SubmitJob, jobs::JobView, jobs::JobPage, crate::error::Problem, crate::error::ProblemField)),
    modifiers(&BearerAuth),
    tags((name = "jobs", description = "Submit and read jobs"), (name = "health", description = "Probes"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// `/openapi.json`.
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/openapi.json",
        get(|| async {
            let mut doc = ApiDoc::openapi();
            doc.merge(crate::routes::events::EventsDoc::openapi());
            Json(doc)
        }),
    )
}
