//! `/ui/events`: the event stream, newest last, with the filters of `GET /v1/events`
//! (the same [`Filter`], so the same visibility rules); live at the tail, resumable
//! from any sequence (`?from=`).

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Html;
use jobstream_core::{stream_read, subject};
use serde::{Deserialize, Serialize};

use super::when;
use crate::live::LiveEvent;
use crate::routes::events::{EventsQuery, Filter};
use crate::state::AppState;
use crate::ui::{Chrome, Session, UiError, render};

/// Events read from the stream per page view.
const WINDOW: usize = 500;
/// Events shown.
const SHOWN: usize = 100;

/// The page's query: where to start and the filters.
#[derive(Debug, Default, Deserialize, Serialize)]
pub(super) struct EventsPageQuery {
    from: Option<u64>,
    job_id: Option<String>,
    kind: Option<String>,
    queue: Option<String>,
    #[serde(rename = "type")]
    types: Option<String>,
}

struct EventRow {
    seq: u64,
    at: String,
    event_type: &'static str,
    job_id: String,
    attempt: u32,
    kind: String,
    queue: String,
    owner: String,
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    chrome: Chrome,
    q: EventsPageQuery,
    events: Vec<EventRow>,
    /// Following the end of the stream (refreshed live) or reading from a sequence.
    tail: bool,
    /// The filters, to refresh the same view.
    self_query: String,
    next: Option<String>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// `GET /ui/events`.
pub(super) async fn page(
    State(state): State<AppState>,
    session: Session,
    Query(mut q): Query<EventsPageQuery>,
) -> Result<Html<String>, UiError> {
    q.job_id = non_empty(q.job_id);
    q.kind = non_empty(q.kind);
    q.queue = non_empty(q.queue);
    q.types = non_empty(q.types);
    let filter = Filter::parse(&EventsQuery {
        job_id: q.job_id.clone(),
        kind: q.kind.clone(),
        queue: q.queue.clone(),
        types: q.types.clone(),
        last_event_id: None,
        ticket: None,
    })?;
    let broker = &state.broker;
    let tail = q.from.is_none();
    let start = match q.from {
        Some(from) => from.max(1),
        None => {
            let info = crate::routes::health::stream_info(broker.jetstream(), broker.stream_name())
                .await
                .map_err(|e| UiError::Unexpected(anyhow::anyhow!(e)))?;
            info.state
                .last_sequence
                .saturating_sub(WINDOW as u64 - 1)
                .max(1)
        }
    };
    let messages = stream_read::read_from(broker, &subject::all_events(), start, WINDOW)
        .await
        .map_err(|e| UiError::Unexpected(e.into()))?;
    let caller = session.caller();
    let mut rows = Vec::new();
    for msg in &messages {
        let Some(env) = stream_read::decode_or_log(msg) else {
            continue;
        };
        let meta = state
            .live
            .directory()
            .resolve(broker, &env)
            .await
            .unwrap_or_default();
        let ev = LiveEvent::new(msg, &env, meta);
        if !filter.admits(&caller, &ev) {
            continue;
        }
        let (kind, queue, owner) = ev
            .meta
            .as_ref()
            .map(|m| (m.kind.clone(), m.queue.clone(), m.owner.clone()))
            .unwrap_or_default();
        rows.push(EventRow {
            seq: ev.seq,
            at: when(env.at),
            event_type: ev.event_type.as_str(),
            job_id: ev.job_id.to_string(),
            attempt: env.attempt,
            kind,
            queue,
            owner,
        });
        if !tail && rows.len() == SHOWN {
            break;
        }
    }
    if tail && rows.len() > SHOWN {
        rows.drain(..rows.len() - SHOWN);
    }
    let after = rows
        .last()
        .map(|r| r.seq)
        .or(messages.last().map(|m| m.seq));
    let next = (!tail).then_some(()).and(after).map(|seq| {
        let next_q = EventsPageQuery {
            from: Some(seq + 1),
            job_id: q.job_id.clone(),
            kind: q.kind.clone(),
            queue: q.queue.clone(),
            types: q.types.clone(),
        };
        format!("/ui/events?{}", query_string(&next_q))
    });
    render(&EventsPage {
        chrome: Chrome::new(&session, &state.console, "events"),
        self_query: query_string(&q),
        q,
        events: rows,
        tail,
        next,
    })
}

/// The query string of a page query (set fields only).
fn query_string(q: &EventsPageQuery) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    if let Some(from) = q.from {
        s.append_pair("from", &from.to_string());
    }
    for (k, v) in [
        ("job_id", &q.job_id),
        ("kind", &q.kind),
        ("queue", &q.queue),
        ("type", &q.types),
    ] {
        if let Some(v) = v {
            s.append_pair(k, v);
        }
    }
    s.finish()
}
