//! `/ui/jobs/{id}`: one job, its timeline from the stream, cancel and retry; live.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use jobstream_core::{JobState, JobStatus};
use serde_json::Value;

use super::{span, when, when_opt};
use crate::jobs::bulk::BulkAction;
use crate::jobs::{self, CancelJob, HistoryEvent, JobsError};
use crate::state::AppState;
use crate::ui::form::Action;
use crate::ui::{Chrome, Session, UiError, render};

/// Longest event detail shown in the timeline.
const DETAIL_CHARS: usize = 300;

struct ErrorRow {
    attempt: u32,
    at: String,
    error: String,
}

/// The job as the page shows it.
struct JobDetail {
    id: String,
    short_id: String,
    status: &'static str,
    cancel_requested: bool,
    kind: String,
    queue: String,
    priority: &'static str,
    owner: String,
    attempt: u32,
    max_attempts: u32,
    progress: Option<u8>,
    progress_message: String,
    created: String,
    finished: String,
    files: Vec<String>,
    can_cancel: bool,
    can_retry: bool,
    payload: String,
    result: Option<String>,
    errors: Vec<ErrorRow>,
}

/// One event in the timeline.
struct Step {
    seq: u64,
    event_type: String,
    at: String,
    after: String,
    attempt: u32,
    worker: String,
    details: String,
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    chrome: Chrome,
    job: JobDetail,
    timeline: Vec<Step>,
}

/// Ids of stored files a job names (`file_id` in its payload or result): the thumbnail
/// kind's input and output.
fn file_ids(job: &JobState) -> Vec<String> {
    [Some(&job.spec.payload), job.result.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("file_id").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

impl From<&JobState> for JobDetail {
    fn from(j: &JobState) -> Self {
        let id = j.id.to_string();
        JobDetail {
            short_id: id
                .chars()
                .rev()
                .take(12)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect(),
            id,
            status: j.status.as_str(),
            cancel_requested: j.cancel_requested(),
            kind: j.spec.kind.clone(),
            queue: j.spec.queue.to_string(),
            priority: j.spec.priority.as_str(),
            owner: j.spec.owner.clone(),
            attempt: j.attempt,
            max_attempts: j.spec.max_attempts,
            progress: j.progress,
            progress_message: j.progress_message.clone().unwrap_or_default(),
            created: when(j.created_at),
            finished: when_opt(j.finished_at),
            files: file_ids(j),
            can_cancel: !j.status.is_terminal() && !j.cancel_requested(),
            can_retry: matches!(j.status, JobStatus::Failed | JobStatus::Cancelled),
            payload: pretty(&j.spec.payload),
            result: j.result.as_ref().map(pretty),
            errors: j
                .errors
                .iter()
                .map(|e| ErrorRow {
                    attempt: e.attempt,
                    at: when(e.at),
                    error: e.error.clone(),
                })
                .collect(),
        }
    }
}

/// The timeline: each event with the time since the one before.
fn timeline(events: &[jobs::StoredEvent]) -> Vec<Step> {
    let mut previous = None;
    events
        .iter()
        .map(|e| {
            let h = HistoryEvent::from(e);
            let worker = h
                .data
                .get("worker")
                .or_else(|| h.run.as_ref().and_then(|r| r.get("worker")))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let mut details = h.data.to_string();
            if details.chars().count() > DETAIL_CHARS {
                details = details.chars().take(DETAIL_CHARS).collect::<String>() + "…";
            }
            let after = previous.map_or_else(String::new, |p| span(h.at - p));
            previous = Some(h.at);
            Step {
                seq: h.seq,
                event_type: h.event_type,
                at: h.at.format("%H:%M:%S%.3f").to_string(),
                after,
                attempt: h.attempt,
                worker,
                details,
            }
        })
        .collect()
}

/// `GET /ui/jobs/{id}`.
#[tracing::instrument(skip_all, fields(sub = %session.sub, job_id = %id))]
pub(super) async fn page(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Html<String>, UiError> {
    let caller = session.caller();
    let service = state.jobs();
    let id = jobs::parse_id(&id)?;
    let job = service.get(&caller, id).await?;
    let events = match service.history(&caller, id).await {
        Ok(events) => events,
        // Its events have expired from the stream: the projection still has the job.
        Err(JobsError::NotFound(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    render(&JobPage {
        chrome: Chrome::new(&session, &state.console, "jobs"),
        job: JobDetail::from(&job),
        timeline: timeline(&events),
    })
}

/// `POST /ui/jobs/{id}/cancel` and `POST /ui/jobs/{id}/retry`; back to the job page.
#[tracing::instrument(skip_all, fields(sub = %action.session.sub, job_id = %id, action = %verb))]
pub(super) async fn act(
    State(state): State<AppState>,
    Path((id, verb)): Path<(String, String)>,
    action: Action,
) -> Result<Redirect, UiError> {
    let job_id = jobs::parse_id(&id)?;
    let caller = action.session.caller();
    let request_id = action.request_id.as_deref();
    let service = state.jobs();
    match BulkAction::parse(&verb)? {
        BulkAction::Cancel => {
            service
                .cancel(&caller, job_id, CancelJob::default(), request_id)
                .await?
        }
        BulkAction::Retry => service.retry(&caller, job_id, request_id).await?,
    };
    tracing::info!("requested from the console");
    Ok(Redirect::to(&format!("/ui/jobs/{job_id}")))
}

/// `GET /ui/files/{id}`: a file the session's user may see (a thumbnail, its source).
pub(super) async fn file(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    crate::routes::files::file_response(&state, &session.caller(), &id)
        .await
        .into_response()
}
