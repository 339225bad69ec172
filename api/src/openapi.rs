//! The OpenAPI document, generated from the handlers' annotations.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_swagger_ui::SwaggerUi;

use crate::http::Page;
use crate::jobs::{AttemptErrorView, BatchAccepted, CancelJob, JobView, SubmitBatch, SubmitJob};
use crate::routes::{batch, files, health, job_actions, jobs, kinds, schedules};
use crate::state::AppState;

/// The API description served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "jobstream", description = "Event-sourced background jobs on NATS JetStream."),
    paths(health::livez, health::healthz, health::readyz, jobs::submit_job, jobs::get_job, jobs::list_jobs,
        job_actions::cancel_job, job_actions::retry_job,
        batch::submit_batch, schedules::create_schedule, schedules::list_schedules, schedules::delete_schedule, schedules::run_schedule, schedules::pause_schedule, schedules::resume_schedule,
        kinds::list_kinds, kinds::get_kind, files::upload_file, files::download_file),
    components(schemas(SubmitJob, JobView, AttemptErrorView, CancelJob, Page<JobView>,
        crate::error::Problem, crate::error::ProblemField,
        SubmitBatch, BatchAccepted, schedules::CreateSchedule, schedules::ScheduleView,
        kinds::KindView, kinds::KindDefaults, kinds::KindList, files::FileView)),
    modifiers(&BearerAuth),
    tags((name = "jobs", description = "Submit and read jobs"), (name = "health", description = "Probes"),
        (name = "schedules", description = "Periodic jobs, fired by JetStream message schedules"),
        (name = "kinds", description = "The catalogue of job kinds"), (name = "files", description = "Uploads and thumbnails"))
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

/// The whole document: the jobs API and the modules that keep their own.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::routes::users::UsersDoc::openapi());
    doc.merge(crate::routes::events::EventsDoc::openapi());
    doc.merge(crate::routes::admin_rejected::RejectedDoc::openapi());
    doc.merge(crate::routes::admin_verify::VerifyDoc::openapi());
    doc.merge(crate::routes::queues::QueuesDoc::openapi());
    doc.merge(crate::routes::workflows::WorkflowsDoc::openapi());
    doc
}

/// `/openapi.json`.
pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(|| async { Json(document()) }))
}

/// `/docs`: Swagger UI on `/openapi.json`, its files compiled into the binary (the
/// `vendored` feature: the build downloads nothing). "Authorize" takes a bearer token,
/// and "Try it out" sends it.
pub fn docs() -> Router<AppState> {
    let ui = SwaggerUi::new("/docs").config(
        utoipa_swagger_ui::Config::from("/openapi.json")
            .persist_authorization(false)
            .try_it_out_enabled(true),
    );
    Router::<AppState>::from(ui).layer(axum::middleware::map_response(docs_headers))
}

/// CSP on the docs: this origin only (Swagger UI draws its icons from `data:` URIs).
async fn docs_headers(mut res: axum::response::Response) -> axum::response::Response {
    res.headers_mut().insert(
        "content-security-policy",
        axum::http::HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    res
}
