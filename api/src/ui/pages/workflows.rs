//! `/ui/workflows`: the workflow list, and one workflow with its steps laid out by
//! level (a step's level is one more than its deepest dependency's, so each level's
//! steps can run side by side), each with its status, job and result; cancel and retry.
//! Everything goes through [`WorkflowService`]: users see their own, admins all.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::response::{Html, Redirect};
use jobstream_core::workflow::{STEP_PENDING, STEP_SKIPPED, WorkflowState, WorkflowStatus};
use serde::Deserialize;

use super::{when, when_opt};
use crate::http::PageRequest;
use crate::http::page::link;
use crate::jobs::JobsError;
use crate::jobs::bulk::BulkAction;
use crate::state::AppState;
use crate::ui::form::Action;
use crate::ui::{Chrome, Session, UiError, render};
use crate::workflows::{self, WorkflowService};

/// Rows per page.
const PAGE: u64 = 50;
/// Longest result shown in a step's box.
const RESULT_CHARS: usize = 200;

/// The status filter and cursor in the URL.
#[derive(Debug, Deserialize)]
pub(super) struct WorkflowsQuery {
    status: Option<String>,
    after: Option<String>,
    before: Option<String>,
}

/// One row of the list.
struct WorkflowRow {
    id: String,
    name: String,
    owner: String,
    status: &'static str,
    steps: i32,
    created: String,
    updated: String,
}

#[derive(Template)]
#[template(path = "workflows.html")]
struct WorkflowsPage {
    chrome: Chrome,
    statuses: Vec<(&'static str, bool)>,
    workflows: Vec<WorkflowRow>,
    self_url: String,
    prev: Option<String>,
    next: Option<String>,
}

/// `GET /ui/workflows`.
#[tracing::instrument(skip_all, fields(sub = %session.sub))]
pub(super) async fn list(
    State(state): State<AppState>,
    session: Session,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<WorkflowsQuery>,
) -> Result<Html<String>, UiError> {
    let status_param = q.status.filter(|s| !s.is_empty());
    let status = status_param
        .as_deref()
        .map(|s| {
            WorkflowStatus::parse(s).ok_or_else(|| {
                JobsError::field(
                    "status",
                    "must be one of running, succeeded, failed, cancelled",
                )
            })
        })
        .transpose()?;
    let page = PageRequest::parse(Some(PAGE), q.after.as_deref(), q.before.as_deref())?;
    let (rows, more) = WorkflowService::new(&state)
        .list(&session.caller(), status, &page)
        .await?;
    let (has_next, has_prev) = if page.backwards() {
        (true, more)
    } else {
        (more, page.after.is_some())
    };
    let filters = [("status", &status_param)];
    let neighbour = |key: &str, row: Option<&jobstream_entity::workflow::Model>| {
        row.map(|w| link("/ui/workflows", PAGE, key, &w.id, &filters))
    };
    render(&WorkflowsPage {
        chrome: Chrome::new(&session, &state.console, "workflows"),
        statuses: WorkflowStatus::ALL
            .iter()
            .map(|s| (s.as_str(), status == Some(*s)))
            .collect(),
        self_url: uri.to_string(),
        prev: has_prev
            .then(|| neighbour("before", rows.first()))
            .flatten(),
        next: has_next.then(|| neighbour("after", rows.last())).flatten(),
        workflows: rows
            .into_iter()
            .map(|w| WorkflowRow {
                status: WorkflowStatus::parse(&w.status).map_or("?", WorkflowStatus::as_str),
                created: when(w.created_at),
                updated: when(w.updated_at),
                steps: w.step_count,
                id: w.id,
                name: w.name,
                owner: w.owner,
            })
            .collect(),
    })
}

/// One step in its level.
struct StepBox {
    id: String,
    kind: String,
    status: String,
    /// Its job, once it has one (a pending or skipped step has none yet).
    job_id: Option<String>,
    after: String,
    result: Option<String>,
    error: Option<String>,
}

/// Steps that can run side by side: those whose deepest dependency is one level up.
struct Level {
    number: usize,
    steps: Vec<StepBox>,
}

#[derive(Template)]
#[template(path = "workflow.html")]
struct WorkflowPage {
    chrome: Chrome,
    id: String,
    name: String,
    owner: String,
    status: &'static str,
    generation: u32,
    created: String,
    finished: String,
    step_count: usize,
    can_cancel: bool,
    can_retry: bool,
    levels: Vec<Level>,
    /// Every dependency as `(from, to)`.
    edges: Vec<(String, String)>,
}

/// The steps of `wf` by level; steps come in dependency order, so one pass suffices.
fn levels(wf: &WorkflowState) -> Vec<Level> {
    let mut level_of: HashMap<&str, usize> = HashMap::new();
    let mut levels: Vec<Level> = Vec::new();
    for s in &wf.steps {
        let level = s
            .after
            .iter()
            .filter_map(|d| level_of.get(d.as_str()))
            .map(|l| l + 1)
            .max()
            .unwrap_or(0);
        level_of.insert(&s.step_id, level);
        while levels.len() <= level {
            levels.push(Level {
                number: levels.len() + 1,
                steps: Vec::new(),
            });
        }
        let mut result = s.result.as_ref().map(|r| r.to_string());
        if let Some(r) = &mut result
            && r.chars().count() > RESULT_CHARS
        {
            *r = r.chars().take(RESULT_CHARS).collect::<String>() + "…";
        }
        levels[level].steps.push(StepBox {
            id: s.step_id.clone(),
            kind: s.spec.kind.clone(),
            status: s.status.clone(),
            job_id: (s.status != STEP_PENDING && s.status != STEP_SKIPPED || s.has_job)
                .then(|| s.job_id.to_string()),
            after: s.after.join(", "),
            result,
            error: s.error.clone(),
        });
    }
    levels
}

/// `GET /ui/workflows/{id}`.
#[tracing::instrument(skip_all, fields(sub = %session.sub, workflow_id = %id))]
pub(super) async fn page(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Html<String>, UiError> {
    let wf = WorkflowService::new(&state)
        .get(&session.caller(), workflows::parse_id(&id)?)
        .await?;
    render(&WorkflowPage {
        chrome: Chrome::new(&session, &state.console, "workflows"),
        id: wf.id.to_string(),
        name: wf.name.clone(),
        owner: wf.owner.clone(),
        status: wf.status.as_str(),
        generation: wf.generation,
        created: when(wf.created_at),
        finished: when_opt(wf.finished_at),
        step_count: wf.steps.len(),
        can_cancel: wf.status == WorkflowStatus::Running,
        can_retry: matches!(
            wf.status,
            WorkflowStatus::Failed | WorkflowStatus::Cancelled
        ),
        levels: levels(&wf),
        edges: wf
            .steps
            .iter()
            .flat_map(|s| s.after.iter().map(|d| (d.clone(), s.step_id.clone())))
            .collect(),
    })
}

/// `POST /ui/workflows/{id}/cancel` and `POST /ui/workflows/{id}/retry`; back to the workflow.
#[tracing::instrument(skip_all, fields(sub = %action.session.sub, workflow_id = %id, action = %verb))]
pub(super) async fn act(
    State(state): State<AppState>,
    Path((id, verb)): Path<(String, String)>,
    action: Action,
) -> Result<Redirect, UiError> {
    let id = workflows::parse_id(&id)?;
    let caller = action.session.caller();
    let request_id = action.request_id.as_deref();
    let service = WorkflowService::new(&state);
    match BulkAction::parse(&verb)? {
        BulkAction::Cancel => service.cancel(&caller, id, request_id).await?,
        BulkAction::Retry => service.retry(&caller, id, request_id).await?,
    };
    tracing::info!("requested from the console");
    Ok(Redirect::to(&format!("/ui/workflows/{id}")))
}
