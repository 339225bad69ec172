//! `/v1/workflows`: submit, get, list, cancel and retry workflows (HTTP glue over
//! [`crate::workflows::WorkflowService`]).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jobstream_core::workflow::WorkflowStatus;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::page::link;
use crate::http::{ApiQuery, Body, Page, PageRequest, PathParam, RequestId};
use crate::state::AppState;
use crate::workflows::{self, SubmitWorkflow, WorkflowService, WorkflowView};

/// `/v1/workflows` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/workflows", get(list_workflows).post(submit_workflow))
        .route("/v1/workflows/{id}", get(get_workflow))
        .route(
            "/v1/workflows/{id}/cancel",
            action_route(WorkflowAction::Cancel),
        )
        .route(
            "/v1/workflows/{id}/retry",
            action_route(WorkflowAction::Retry),
        )
        .route("/v1/workflows/{id}/events", get(workflow_events))
}

/// The workflow routes' part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(submit_workflow, get_workflow, list_workflows, workflow_action, workflow_events),
    components(schemas(SubmitWorkflow, WorkflowView, workflows::StepView, Page<WorkflowView>, WorkflowAction)),
    tags((name = "workflows", description = "DAGs of jobs: chains, groups, chords"))
)]
pub struct WorkflowsDoc;

/// Submit a workflow. Answers `202` once its one `workflow.submitted` event is stored;
/// an invalid workflow (unknown kind, bad payload, dangling reference, cycle, more than
/// 1,000 steps) is a `422` naming each step at fault, and nothing is stored.
#[utoipa::path(
    post, path = "/v1/workflows", tag = "workflows", request_body = SubmitWorkflow,
    responses(
        (status = 202, description = "Stored; its first steps run soon", body = WorkflowView, headers(("Location" = String, description = "URL of the workflow"))),
        (status = 422, description = "A step or field is invalid", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(workflow_id = tracing::field::Empty), err(Debug, level = "info"))]
pub async fn submit_workflow(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Body(body): Body<SubmitWorkflow>,
) -> Result<Response, ApiError> {
    let wf = WorkflowService::new(&state)
        .submit(&caller, body, request_id.as_deref())
        .await?;
    tracing::Span::current().record("workflow_id", tracing::field::display(wf.id));
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/workflows/{}", wf.id))],
        Json(WorkflowView::from(&wf)),
    )
        .into_response())
}

/// Get one workflow with every step: status, job id, result.
#[utoipa::path(
    get, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = Uuid, Path, description = "Workflow id")),
    responses((status = 200, body = WorkflowView), (status = 404, description = "No such workflow (or not yours)", body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(workflow_id = %id))]
pub async fn get_workflow(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam,
) -> Result<Json<WorkflowView>, ApiError> {
    let wf = WorkflowService::new(&state)
        .get(&caller, workflows::parse_id(&id)?)
        .await?;
    Ok(Json(WorkflowView::from(&wf)))
}

/// Filters and cursor of a workflow list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only workflows in this status.
    pub status: Option<String>,
    /// Page size, 1..=500 (default 50).
    pub limit: Option<u64>,
    /// Page after this cursor (older workflows).
    pub after: Option<String>,
    /// Page before this cursor (newer workflows).
    pub before: Option<String>,
}

/// List workflows (without their steps), newest first. Users see their own; admins see all.
#[utoipa::path(
    get, path = "/v1/workflows", tag = "workflows", params(ListQuery),
    responses((status = 200, body = Page<WorkflowView>), (status = 422, body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn list_workflows(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<WorkflowView>>, ApiError> {
    let page = PageRequest::parse(q.limit, q.after.as_deref(), q.before.as_deref())?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            WorkflowStatus::parse(s).ok_or_else(|| {
                ApiError::field(
                    "status",
                    "must be one of running, succeeded, failed, cancelled",
                )
            })
        })
        .transpose()?;
    let (rows, more) = WorkflowService::new(&state)
        .list(&caller, status, &page)
        .await?;
    let filters = [("status", &q.status)];
    Ok(Json(Page::new(
        rows.iter().map(WorkflowView::from).collect(),
        &page,
        more,
        |w: &WorkflowView| w.id.to_string(),
        |key, cursor| link("/v1/workflows", page.limit, key, cursor, &filters),
    )))
}

/// What `POST /v1/workflows/{id}/{action}` asks for.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowAction {
    /// A running workflow: pending steps never start, running ones are stopped.
    Cancel,
    /// A failed or cancelled workflow: its failed, cancelled and skipped steps run again,
    /// then the steps after them; succeeded steps keep their results.
    Retry,
}

/// Cancel a running workflow, or retry a failed or cancelled one (`action`: `cancel` or
/// `retry`). A cancel skips the pending steps and stops the running ones; a retry runs
/// the failed, cancelled and skipped steps again, then the steps after them, while
/// succeeded steps keep their results.
#[utoipa::path(
    post, path = "/v1/workflows/{id}/{action}", tag = "workflows",
    params(("id" = Uuid, Path, description = "Workflow id"), ("action" = WorkflowAction, Path, description = "`cancel` or `retry`")),
    responses(
        (status = 202, description = "Request stored", body = WorkflowView),
        (status = 404, description = "No such workflow (or not yours)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The workflow's status does not allow it", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip(state, caller, request_id), fields(workflow_id = %id), err(Debug, level = "info"))]
pub async fn workflow_action(
    state: AppState,
    caller: Caller,
    request_id: RequestId,
    id: String,
    action: WorkflowAction,
) -> Result<(StatusCode, Json<WorkflowView>), ApiError> {
    let service = WorkflowService::new(&state);
    let id = workflows::parse_id(&id)?;
    let rid = request_id.as_deref();
    let wf = match action {
        WorkflowAction::Cancel => service.cancel(&caller, id, rid).await?,
        WorkflowAction::Retry => service.retry(&caller, id, rid).await?,
    };
    Ok((StatusCode::ACCEPTED, Json(WorkflowView::from(&wf))))
}

/// The route of one [`WorkflowAction`].
fn action_route(action: WorkflowAction) -> axum::routing::MethodRouter<AppState> {
    post(
        move |State(state): State<AppState>,
              caller: Caller,
              request_id: RequestId,
              PathParam(id): PathParam| {
            workflow_action(state, caller, request_id, id, action)
        },
    )
}

/// How often a workflow stream looks at the projection when no step job event arrives.
const WORKFLOW_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// What a workflow stream last sent: the workflow's and each step's status.
fn transitions_key(wf: &WorkflowView) -> Vec<String> {
    std::iter::once(wf.status.clone())
        .chain(wf.steps.iter().map(|s| format!("{}={}", s.id, s.status)))
        .collect()
}

/// Server-sent events of one workflow's transitions: `event: workflow` with the workflow
/// (as `GET /v1/workflows/{id}`) each time its status or a step's status changes, first
/// as it is now; the stream ends after the workflow has ended (`succeeded`, `failed` or
/// `cancelled`). Step jobs' own events are on `GET /v1/events?job=<job_id>`.
#[utoipa::path(
    get, path = "/v1/workflows/{id}/events", tag = "workflows",
    params(("id" = Uuid, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "`text/event-stream` of `workflow` events", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such workflow (or not yours)", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(workflow_id = %id))]
pub async fn workflow_events(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    use futures::StreamExt;
    let id = workflows::parse_id(&id)?;
    let service = WorkflowService::new(&state);
    // Refuses another user's workflow before the stream opens.
    let first = service.get(&caller, id).await?;
    let jobs: std::collections::HashSet<uuid::Uuid> =
        first.steps.iter().map(|s| s.job_id).collect();
    let hub = state.live.clone();
    let live = hub.subscribe().await?;
    let init = (service, caller, live, Vec::<String>::new(), false);
    let events = futures::stream::unfold(init, move |(service, caller, mut live, last, ended)| {
        let jobs = jobs.clone();
        async move {
            if ended {
                return None;
            }
            loop {
                let view = match service.get(&caller, id).await {
                    Ok(wf) => WorkflowView::from(&wf),
                    Err(e) => {
                        tracing::warn!(error = %e, "workflow stream: cannot read the workflow");
                        return None;
                    }
                };
                let key = transitions_key(&view);
                if key != last {
                    let done = view.status != WorkflowStatus::Running.as_str();
                    let ev = SseEvent::default()
                        .event("workflow")
                        .data(serde_json::to_string(&view).unwrap_or_default());
                    return Some((
                        Ok::<_, std::convert::Infallible>(ev),
                        (service, caller, live, key, done),
                    ));
                }
                // Wait for a step job's event (then the projection catches up) or the poll.
                let _ = tokio::time::timeout(WORKFLOW_POLL, async {
                    loop {
                        match live.recv().await {
                            Ok(ev) if jobs.contains(&ev.job_id) => break,
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                })
                .await;
            }
        }
    })
    // Graceful shutdown must not wait for open streams (tokio-rs/axum#2673).
    .take_until(hub.closing().cancelled_owned());
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(hub.config().keep_alive))
        .into_response())
}
