//! `/ui/queues` and `/ui/workers` (admins): the queues service's views, with pause and
//! resume buttons. Nothing here counts or decides: [`crate::queues::QueueService`] does,
//! for `GET /v1/queues`, `GET /v1/workers` and the terminal client alike.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{Html, Redirect};
use chrono::Utc;

use super::{span, when};
use crate::jobs::JobsError;
use crate::queues::{QueueView, WorkerView};
use crate::state::AppState;
use crate::ui::form::Action;
use crate::ui::{Chrome, Session, UiError, render};

/// The statuses a queue's depth counts, in the order of the table's columns.
const DEPTH: [&str; 4] = ["scheduled", "queued", "retrying", "running"];

/// One queue's row.
struct QueueRow {
    name: String,
    paused: bool,
    changed: String,
    depth: Vec<u64>,
    oldest_waiting: String,
    pending: String,
    ack_pending: String,
    redelivered: String,
    limit: String,
}

impl From<QueueView> for QueueRow {
    fn from(q: QueueView) -> Self {
        let count = |f: fn(&crate::queues::ConsumerCounts) -> u64| {
            q.consumer
                .as_ref()
                .map_or_else(|| "–".to_owned(), |c| f(c).to_string())
        };
        QueueRow {
            depth: DEPTH
                .iter()
                .map(|s| q.depth.get(*s).copied().unwrap_or(0))
                .collect(),
            oldest_waiting: q.oldest_waiting_ms.map_or_else(
                || "–".to_owned(),
                |ms| {
                    span(chrono::Duration::milliseconds(
                        i64::try_from(ms).unwrap_or(i64::MAX),
                    ))
                },
            ),
            pending: count(|c| c.pending),
            ack_pending: count(|c| c.ack_pending),
            redelivered: count(|c| c.redelivered),
            limit: q
                .global_limit
                .map_or_else(|| "none".to_owned(), |l| l.to_string()),
            changed: match (&q.changed_by, q.changed_at) {
                (Some(by), Some(at)) => format!("by {by} at {}", when(at)),
                _ => String::new(),
            },
            paused: q.paused,
            name: q.name,
        }
    }
}

#[derive(Template)]
#[template(path = "queues.html")]
struct QueuesPage {
    chrome: Chrome,
    depth: [&'static str; 4],
    queues: Vec<QueueRow>,
}

/// `GET /ui/queues` (admins): depth, consumer counts, limit and pause state, live.
#[tracing::instrument(skip_all, fields(sub = %session.sub))]
pub(super) async fn page(
    State(state): State<AppState>,
    session: Session,
) -> Result<Html<String>, UiError> {
    session.require_admin()?;
    let queues = state.queues().list(&session.caller()).await?;
    render(&QueuesPage {
        chrome: Chrome::new(&session, &state.console, "queues"),
        depth: DEPTH,
        queues: queues.into_iter().map(QueueRow::from).collect(),
    })
}

/// `POST /ui/queues/{name}/{pause|resume}` (admins): the same operation as
/// `POST /v1/queues/{name}/pause`; back to the queues page.
#[tracing::instrument(skip_all, fields(sub = %action.session.sub, queue = %name, verb = %verb))]
pub(super) async fn act(
    State(state): State<AppState>,
    Path((name, verb)): Path<(String, String)>,
    action: Action,
) -> Result<Redirect, UiError> {
    let paused = match verb.as_str() {
        "pause" => true,
        "resume" => false,
        _ => {
            return Err(JobsError::NotFound(format!("no queue action {verb:?}")).into());
        }
    };
    state
        .queues()
        .set_paused(
            &action.session.caller(),
            &name,
            paused,
            action.request_id.as_deref(),
        )
        .await?;
    tracing::info!("requested from the console");
    Ok(Redirect::to("/ui/queues"))
}

/// One worker's row.
struct WorkerRow {
    id: String,
    host: String,
    pid: u32,
    queues: String,
    concurrency: usize,
    in_flight: usize,
    started: String,
    heartbeat: String,
    stale: bool,
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage {
    chrome: Chrome,
    workers: Vec<WorkerRow>,
}

/// `GET /ui/workers` (admins): the workers registry, stale workers marked.
#[tracing::instrument(skip_all, fields(sub = %session.sub))]
pub(super) async fn workers(
    State(state): State<AppState>,
    session: Session,
) -> Result<Html<String>, UiError> {
    session.require_admin()?;
    let now = Utc::now();
    let workers = state.queues().workers(&session.caller()).await?;
    render(&WorkersPage {
        chrome: Chrome::new(&session, &state.console, "workers"),
        workers: workers
            .into_iter()
            .map(|WorkerView { worker: w, stale }| WorkerRow {
                queues: w.queues.join(", "),
                started: when(w.started_at),
                heartbeat: format!("{} ago", span(now - w.heartbeat_at)),
                id: w.id,
                host: w.host,
                pid: w.pid,
                concurrency: w.concurrency,
                in_flight: w.in_flight,
                stale,
            })
            .collect(),
    })
}
