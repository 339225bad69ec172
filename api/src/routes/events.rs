//! `/v1/events`: every job event the caller may see, live, over Server-Sent Events.
//!
//! `id:` is the event's stream sequence, `event:` its type, `data:` the event as
//! stored. With `Last-Event-ID` (or `?last_event_id=`) the connection first reads the
//! events after that sequence straight from the stream (catch-up), then hands over to
//! the process's live tail ([`EventHub`]) without gap or duplicate (deduplicated by
//! sequence). A requested sequence older than the stream's retention yields an
//! `event: reset` first, never a silent skip. A connection that falls too far behind
//! the live tail gets `event: lagged` and is closed; it resumes with its last id.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use jobstream_core::event::EventType;
use jobstream_core::metrics::{self, InProgress};
use jobstream_core::stream_read;
use jobstream_core::subject::{self, QueueName};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::{self, error::RecvError};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::ApiQuery;
use crate::live::{EventHub, LiveEvent};
use crate::state::AppState;
use crate::tickets;

/// Events read from the stream per catch-up page (bounds a connection's buffer).
const CATCH_UP_PAGE: usize = 256;

/// OpenAPI description of live events, history, wait and admin replay (merged into `/openapi.json`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        stream_events,
        create_ticket,
        crate::routes::job_events::job_history,
        crate::routes::job_events::wait_job,
        crate::routes::admin_replay::start_replay,
        crate::routes::admin_replay::replay_status
    ),
    components(schemas(
        Ticket,
        crate::jobs::JobHistory,
        crate::jobs::HistoryEvent,
        crate::routes::admin_replay::StartReplay
    )),
    tags(
        (name = "events", description = "Live events (SSE)"),
        (name = "admin", description = "Operators")
    )
)]
pub struct EventsDoc;

/// `/v1/events` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(stream_events))
        .route("/v1/events/ticket", post(create_ticket))
}

/// Filters of the event stream (all optional; combined with AND).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this job's events.
    pub job_id: Option<String>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs on this queue.
    pub queue: Option<String>,
    /// Only these event types, comma-separated (e.g. `succeeded,failed,cancelled`).
    #[serde(rename = "type")]
    pub types: Option<String>,
    /// Resume after this stream sequence (for clients that cannot send `Last-Event-ID`).
    pub last_event_id: Option<String>,
    /// A single-use ticket from `POST /v1/events/ticket` (browsers' `EventSource`).
    pub ticket: Option<String>,
}

/// Which events a connection wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    job_id: Option<Uuid>,
    kind: Option<String>,
    queue: Option<QueueName>,
    types: Option<Vec<EventType>>,
}

impl Filter {
    /// Parses the query, naming the bad field.
    pub fn parse(q: &EventsQuery) -> Result<Self, ApiError> {
        let job_id = q
            .job_id
            .as_deref()
            .map(|s| Uuid::parse_str(s).map_err(|_| ApiError::field("job_id", "must be a UUID")))
            .transpose()?;
        let queue = q
            .queue
            .as_deref()
            .map(|s| QueueName::parse(s).map_err(|e| ApiError::field("queue", e.to_string())))
            .transpose()?;
        let types = q
            .types
            .as_deref()
            .map(|s| {
                s.split(',')
                    .map(|t| {
                        EventType::parse(t.trim()).ok_or_else(|| {
                            let all: Vec<&str> =
                                EventType::ALL.iter().map(|t| t.as_str()).collect();
                            ApiError::field(
                                "type",
                                format!("unknown event type {t:?}; one of {}", all.join(", ")),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(Filter {
            job_id,
            kind: q.kind.clone(),
            queue,
            types,
        })
    }

    /// The narrowest stream subject filter for catch-up reads.
    fn subject(&self) -> String {
        let single_type = match self.types.as_deref() {
            Some([t]) => Some(t.as_str()),
            _ => None,
        };
        if self.job_id.is_none() && self.queue.is_none() && single_type.is_none() {
            return stream_read::EVERYTHING.to_owned();
        }
        format!(
            "{}.{}.{}.{}",
            subject::PREFIX,
            self.queue.as_ref().map_or("*", QueueName::as_str),
            self.job_id
                .map_or_else(|| "*".to_owned(), |id| id.to_string()),
            single_type.unwrap_or("*")
        )
    }

    /// Whether `caller` may see `ev` and wants it.
    pub fn admits(&self, caller: &Caller, ev: &LiveEvent) -> bool {
        let visible = caller.is_admin || ev.meta.as_ref().is_some_and(|m| m.owner == caller.sub);
        visible
            && self.job_id.is_none_or(|id| id == ev.job_id)
            && self
                .types
                .as_ref()
                .is_none_or(|ts| ts.contains(&ev.event_type))
            && self
                .kind
                .as_ref()
                .is_none_or(|k| ev.meta.as_ref().is_some_and(|m| &m.kind == k))
            && self
                .queue
                .as_ref()
                .is_none_or(|q| ev.meta.as_ref().is_some_and(|m| m.queue == q.as_str()))
    }
}

fn sse_of(ev: &LiveEvent) -> SseEvent {
    SseEvent::default()
        .id(ev.seq.to_string())
        .event(ev.event_type.as_str())
        .data(ev.data.as_ref())
}

fn notice(event: &str, body: &serde_json::Value) -> SseEvent {
    SseEvent::default().event(event).data(body.to_string())
}

/// One SSE connection: catch-up from the stream, then the live tail.
struct Connection {
    hub: EventHub,
    caller: Caller,
    filter: Filter,
    subject: String,
    rx: broadcast::Receiver<Arc<LiveEvent>>,
    /// Every sequence up to here has been sent or filtered out.
    last_seen: u64,
    catching_up: bool,
    /// No live event delivered since the last catch-up: a lag now comes from the catch-up itself.
    just_caught_up: bool,
    pending: VecDeque<SseEvent>,
    done: bool,
}

impl Connection {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if self.done {
                return None;
            }
            if self.catching_up {
                self.catch_up_page().await;
                continue;
            }
            match self.rx.recv().await {
                Ok(ev) => {
                    if ev.seq <= self.last_seen {
                        continue;
                    }
                    self.last_seen = ev.seq;
                    self.just_caught_up = false;
                    if self.filter.admits(&self.caller, &ev) {
                        return Some(sse_of(&ev));
                    }
                }
                Err(RecvError::Lagged(missed)) if self.just_caught_up => {
                    // Live events piled up while the backlog was read: read them from the stream too.
                    tracing::debug!(missed, "lagged during catch-up; reading on from the stream");
                    self.rx = self.rx.resubscribe();
                    self.catching_up = true;
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::info!(sub = %self.caller.sub, missed, last_seen = self.last_seen, "SSE client too slow; disconnected");
                    self.done = true;
                    return Some(notice(
                        "lagged",
                        &serde_json::json!({
                            "reason": "the client fell too far behind; reconnect with Last-Event-ID to resume",
                            "missed": missed,
                        }),
                    ));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Reads the next page of the backlog from the stream.
    async fn catch_up_page(&mut self) {
        let broker = self.hub.broker().clone();
        let page = match stream_read::read_from(
            &broker,
            &self.subject,
            self.last_seen + 1,
            CATCH_UP_PAGE,
        )
        .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "SSE catch-up failed");
                self.done = true;
                // Not `error`: that name is EventSource's own connection-error event.
                self.pending.push_back(notice(
                    "unavailable",
                    &serde_json::json!({"reason": "the event stream is unreachable; reconnect with Last-Event-ID to resume"}),
                ));
                return;
            }
        };
        if page.is_empty() {
            self.catching_up = false;
            self.just_caught_up = true;
            return;
        }
        for msg in page {
            self.last_seen = msg.seq;
            let Some(env) = stream_read::decode_or_log(&msg) else {
                continue;
            };
            let meta = self
                .hub
                .directory()
                .resolve(&broker, &env)
                .await
                .unwrap_or_default();
            let ev = LiveEvent::new(&msg, &env, meta);
            if self.filter.admits(&self.caller, &ev) {
                self.pending.push_back(sse_of(&ev));
            }
        }
    }
}

/// The caller: the bearer token if there is one, else a single-use ticket.
async fn authenticate(
    hub: &EventHub,
    bearer: Result<Caller, ApiError>,
    ticket: Option<&str>,
) -> Result<Caller, ApiError> {
    match (bearer, ticket) {
        (Ok(c), _) => Ok(c),
        (Err(_), Some(t)) => tickets::redeem(hub, t).await?.ok_or_else(|| {
            ApiError::Unauthorized("the ticket is invalid, expired or already used".into())
        }),
        (Err(e), None) => Err(e),
    }
}

fn last_event_id(headers: &HeaderMap, q: &EventsQuery) -> Result<Option<u64>, ApiError> {
    let header = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("x").trim().to_owned());
    match header.or_else(|| q.last_event_id.clone()) {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => s.parse::<u64>().map(Some).map_err(|_| {
            ApiError::field(
                "last_event_id",
                "must be the id (a stream sequence) of an event received earlier",
            )
        }),
    }
}

/// Live job events (`text/event-stream`).
#[utoipa::path(
    get, path = "/v1/events", tag = "events", params(EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event id")),
    responses(
        (status = 200, description = "An endless `text/event-stream`; `id` = stream sequence, `event` = type, `data` = the event JSON; also `reset` and `lagged` notices", content_type = "text/event-stream"),
        (status = 401, description = "No valid token or ticket", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A filter is invalid", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(last_event_id = tracing::field::Empty))]
pub async fn stream_events(
    State(state): State<AppState>,
    bearer: Result<Caller, ApiError>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let hub = state.live.clone();
    let caller = authenticate(&hub, bearer, q.ticket.as_deref()).await?;
    let filter = Filter::parse(&q)?;
    let last = last_event_id(&headers, &q)?;
    // Subscribe before reading anything, so the hand-over from catch-up misses nothing.
    let rx = hub.subscribe().await?;
    let mut conn = Connection {
        subject: filter.subject(),
        hub: hub.clone(),
        caller,
        filter,
        rx,
        last_seen: 0,
        catching_up: false,
        just_caught_up: false,
        pending: VecDeque::new(),
        done: false,
    };
    if let Some(last) = last {
        tracing::Span::current().record("last_event_id", last);
        let bounds = stream_read::bounds(hub.broker()).await?;
        conn.catching_up = true;
        conn.last_seen = last;
        if last.saturating_add(1) < bounds.first {
            conn.pending.push_back(notice(
                "reset",
                &serde_json::json!({
                    "reason": "events after the requested id have expired from the stream; continuing from the oldest stored event",
                    "requested_after": last,
                    "first_available": bounds.first,
                }),
            ));
            conn.last_seen = bounds.first - 1;
        } else if last > bounds.last {
            conn.pending.push_back(notice(
                "reset",
                &serde_json::json!({
                    "reason": "the requested id is beyond the end of the stream (was the stream recreated?); continuing with new events",
                    "requested_after": last,
                    "last_stored": bounds.last,
                }),
            ));
            conn.last_seen = bounds.last;
        }
    }
    // The guard lives as long as the stream: `sse_connections` counts open streams.
    let open = InProgress::enter(metrics::SSE_CONNECTIONS);
    let events = futures::stream::unfold((conn, open), |(mut c, open)| async move {
        c.next().await.map(|e| (Ok::<_, Infallible>(e), (c, open)))
    })
    // Graceful shutdown must not wait for endless streams (tokio-rs/axum#2673).
    .take_until(hub.closing().cancelled_owned());
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(hub.config().keep_alive))
        .into_response())
}

/// A single-use ticket for `GET /v1/events?ticket=…`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ticket {
    /// The ticket (redeemable once).
    pub ticket: String,
    /// Seconds it stays redeemable.
    pub expires_in: u64,
    /// Ready-to-use URL for `EventSource` (append filters as needed).
    pub url: String,
}

/// Issue a short-lived, single-use ticket so a browser's `EventSource` can open `/v1/events`
/// without putting a token in a URL.
#[utoipa::path(
    post, path = "/v1/events/ticket", tag = "events",
    responses((status = 201, body = Ticket), (status = 401, body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
pub async fn create_ticket(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let ticket = tickets::issue(&state.live, &caller).await?;
    let url = format!("/v1/events?ticket={ticket}");
    Ok((
        StatusCode::CREATED,
        Json(Ticket {
            ticket,
            expires_in: tickets::TICKET_TTL.as_secs(),
            url,
        }),
    )
        .into_response())
}
