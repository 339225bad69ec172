//! Liveness and readiness probes.
//!
//! `/livez` (and its older name `/healthz`) only says the process answers. `/readyz`
//! says whether the *system* behind this API can do its work: it is what a load
//! balancer or an operator asks, so it must never say "ready" while jobs cannot
//! move. Every check reads state that lives in NATS or in the database (consumer
//! info, the projector's checkpoint row), never this process's memory, so every API
//! instance gives the same answer.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use jobstream_entity::projector_checkpoint;
use sea_orm::{ConnectionTrait, EntityTrait};
use serde::Serialize;
use serde_json::{Value, json};

use crate::state::AppState;

/// `/livez`, `/healthz` and `/readyz`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/livez", get(livez))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// Bounds beyond which the system is reported not ready.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// The projector whose checkpoint is watched (its durable consumer name).
    pub projector: String,
    /// Stream messages the projection may trail the stream by.
    pub max_projector_lag: u64,
    /// How long the projection may trail the stream without its checkpoint moving.
    pub projector_stall: Duration,
    /// Bound on each check's round trips: a probe that hangs is a failed probe.
    pub probe_timeout: Duration,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            projector: "projector".to_owned(),
            max_projector_lag: 100_000,
            projector_stall: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(2),
        }
    }
}

/// The process answers (liveness: restart it only if this fails).
#[utoipa::path(get, path = "/livez", tag = "health", responses((status = 200, description = "Alive")))]
pub async fn livez() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The process answers: the older name of [`livez`].
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Json<Value> {
    livez().await
}

/// One failed check: which, and why.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct Failure {
    check: &'static str,
    reason: String,
}

/// Ready when NATS is connected, the stream exists and accepts writes, the database
/// answers, the projection keeps up with the stream, and no worker consumer has
/// pending jobs without progress for longer than its heartbeat window.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "Ready: every check passed"),
    (status = 503, description = "Not ready: a problem+json body names each failed check", content_type = "application/problem+json")
))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let failures = check_all(&state, &state.readiness).await;
    if failures.is_empty() {
        return Json(json!({ "status": "ready", "nats": true, "stream": true, "database": true }))
            .into_response();
    }
    let detail = failures
        .iter()
        .map(|f| format!("{}: {}", f.check, f.reason))
        .collect::<Vec<_>>()
        .join("; ");
    let body = json!({
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": detail,
        "checks": failures,
    });
    let mut res = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    res
}

async fn check_all(state: &AppState, limits: &Readiness) -> Vec<Failure> {
    let mut failures = Vec::new();
    let fail = |check, reason: String| Failure { check, reason };
    let nats = state.broker.client().connection_state() == async_nats::connection::State::Connected;
    if !nats {
        failures.push(fail("nats", "not connected to NATS".into()));
    }
    let db = bounded(limits, state.db.execute_unprepared("SELECT 1")).await;
    if let Err(e) = &db {
        failures.push(fail(
            "database",
            format!("the database does not answer: {e}"),
        ));
    }
    if !nats {
        return failures;
    }
    let js = state.broker.jetstream();
    let info = match bounded(limits, stream_info(js, state.broker.stream_name())).await {
        Ok(info) => info,
        Err(e) => {
            failures.push(fail("stream", e));
            return failures;
        }
    };
    if let Err(e) = bounded(limits, probe_write(js, &info)).await {
        failures.push(fail("stream_writes", e));
    }
    if db.is_ok() {
        match projection_lag(state, info.state.last_sequence, limits).await {
            Ok(Some(reason)) => failures.push(fail("projector", reason)),
            Ok(None) => {}
            Err(e) => failures.push(fail("projector", e)),
        }
    }
    match bounded(limits, stalled_worker_consumers(state)).await {
        Ok(stalled) => failures.extend(stalled.into_iter().map(|r| fail("workers", r))),
        Err(e) => failures.push(fail("workers", e)),
    }
    failures
}

/// Why the projection is not keeping up with a stream whose last sequence is `stream_last`.
async fn projection_lag(
    state: &AppState,
    stream_last: u64,
    limits: &Readiness,
) -> Result<Option<String>, String> {
    let checkpoint = bounded(limits, projector_checkpoint(state, &limits.projector)).await?;
    let lag = stream_last.saturating_sub(checkpoint);
    if lag == 0 {
        return Ok(None);
    }
    let oldest = bounded(limits, oldest_unapplied_age(state, checkpoint, Utc::now())).await?;
    Ok(projector_behind(lag, oldest, limits))
}

/// Runs a probe with the readiness timeout; a hung probe fails.
async fn bounded<T, E: std::fmt::Display>(
    limits: &Readiness,
    probe: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limits.probe_timeout, probe).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "no answer within {} ms",
            limits.probe_timeout.as_millis()
        )),
    }
}

pub(crate) async fn stream_info(
    js: &jetstream::Context,
    name: &str,
) -> Result<stream::Info, String> {
    let mut s = js
        .get_stream(name)
        .await
        .map_err(|e| format!("stream {name} unavailable: {e}"))?;
    s.info()
        .await
        .cloned()
        .map_err(|e| format!("stream {name} info: {e}"))
}

/// Whether JetStream stores a write right now. Reading the stream's or the account's
/// numbers cannot tell (a server-wide store limit or a full disk is in neither), so
/// this stores one tiny message in a probe stream beside the job stream, on the same
/// server(s), storage and replicas, that keeps only its latest message. A refusal
/// there (insufficient resources, no leader) is what a submission would meet too.
async fn probe_write(js: &jetstream::Context, jobs: &stream::Info) -> Result<(), String> {
    let name = format!("{}_PROBE", jobs.config.name);
    let subject = format!("jobstream.probe.{}", jobs.config.name);
    js.get_or_create_stream(stream::Config {
        name: name.clone(),
        description: Some("jobstream /readyz: a write probe; keeps one message".to_owned()),
        subjects: vec![subject.clone()],
        storage: stream::StorageType::File,
        num_replicas: jobs.config.num_replicas,
        max_messages_per_subject: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("probe stream {name}: {e}"))?;
    js.publish(subject, bytes::Bytes::from_static(b"ready?"))
        .await
        .map_err(|e| e.to_string())?
        .await
        .map(|_| ())
        .map_err(|e| format!("the stream refuses writes: {e}"))
}

/// The projector's checkpoint: the last stream sequence committed to SQL (0 if none yet).
pub(crate) async fn projector_checkpoint(
    state: &AppState,
    name: &str,
) -> Result<u64, sea_orm::DbErr> {
    Ok(projector_checkpoint::Entity::find_by_id(name.to_owned())
        .one(&state.db)
        .await?
        .map_or(0, |c| u64::try_from(c.last_seq).unwrap_or(0)))
}

/// How old the oldest event not yet in the projection is (`None` when there is none).
async fn oldest_unapplied_age(
    state: &AppState,
    checkpoint: u64,
    now: DateTime<Utc>,
) -> Result<Option<Duration>, String> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let stream = state.broker.stream().await.map_err(|e| e.to_string())?;
    match stream
        .get_first_raw_message_by_subject(">", checkpoint + 1)
        .await
    {
        Ok(msg) => {
            let at = DateTime::<Utc>::from_timestamp(msg.time.unix_timestamp(), 0).unwrap_or(now);
            Ok(Some((now - at).to_std().unwrap_or_default()))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(format!("reading the stream after the checkpoint: {e}")),
    }
}

/// Why the projection is not keeping up with the stream, if it is not: too many
/// events behind, or an event waiting for longer than the stall bound.
fn projector_behind(
    lag: u64,
    oldest_unapplied: Option<Duration>,
    limits: &Readiness,
) -> Option<String> {
    if lag > limits.max_projector_lag {
        return Some(format!(
            "the projection is {lag} events behind the stream (bound {})",
            limits.max_projector_lag
        ));
    }
    let age = oldest_unapplied?;
    (age > limits.projector_stall).then(|| {
        format!(
            "the projection is {lag} events behind and the oldest of them has waited {} s (bound {} s)",
            age.as_secs(),
            limits.projector_stall.as_secs()
        )
    })
}

/// Worker consumers with runnable jobs waiting and nothing delivered or acked for
/// longer than the consumer's `ack_wait` (the worker's heartbeat window). A queue at
/// its global limit (every token of its slots consumer out) is full, not stalled.
async fn stalled_worker_consumers(state: &AppState) -> Result<Vec<String>, String> {
    let js = state.broker.jetstream();
    let stream = js
        .get_stream_no_info(state.broker.stream_name())
        .await
        .map_err(|e| e.to_string())?;
    let mut consumers = stream.consumers();
    let now = Utc::now();
    let mut stalled = Vec::new();
    while let Some(info) = consumers.next().await {
        let info = info.map_err(|e| format!("listing consumers: {e}"))?;
        if !jobstream_core::subject::is_lane_consumer(&info.name) {
            continue;
        }
        if let Some(idle) = stalled_for(&info, now)
            && !queue_at_limit(js, state.broker.stream_name(), &info.name).await
        {
            stalled.push(format!(
                "consumer {} has {} jobs waiting and no progress for {} s (heartbeat window {} s)",
                info.name,
                info.num_pending,
                idle.as_secs(),
                info.config.ack_wait.as_secs()
            ));
        }
    }
    Ok(stalled)
}

/// How long a consumer with pending messages has made no progress, when that is
/// longer than its heartbeat window.
fn stalled_for(info: &consumer::Info, now: DateTime<Utc>) -> Option<Duration> {
    if info.num_pending == 0 {
        return None;
    }
    let last = [
        info.delivered.last_active,
        info.ack_floor.last_active,
        Some(info.created),
    ]
    .into_iter()
    .flatten()
    .filter_map(|t| {
        let nanos = t.unix_timestamp_nanos();
        DateTime::<Utc>::from_timestamp(
            i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?,
            u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?,
        )
    })
    .max()?;
    let idle = (now - last).to_std().unwrap_or_default();
    (idle > info.config.ack_wait).then_some(idle)
}

/// Every concurrency token of the lane's queue is handed out (see the worker's `limit` module).
async fn queue_at_limit(js: &jetstream::Context, job_stream: &str, lane: &str) -> bool {
    let Some((_, queue)) = lane.split_once('-') else {
        return false;
    };
    let Ok(slots) = js
        .get_stream_no_info(jobstream_core::subject::slots_stream(job_stream))
        .await
    else {
        return false;
    };
    match slots
        .consumer_info(jobstream_core::subject::slots_consumer(queue))
        .await
    {
        Ok(info) => info.num_pending == 0 && info.num_ack_pending > 0,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projection_that_keeps_up_is_ready() {
        let limits = Readiness::default();
        assert_eq!(projector_behind(0, None, &limits), None);
        // Behind, but its oldest waiting event is recent.
        assert_eq!(
            projector_behind(500, Some(Duration::from_secs(1)), &limits),
            None
        );
    }

    #[test]
    fn a_projection_far_behind_or_stalled_is_not_ready() {
        let limits = Readiness {
            max_projector_lag: 1000,
            projector_stall: Duration::from_secs(10),
            ..Readiness::default()
        };
        let far = projector_behind(5000, Some(Duration::ZERO), &limits).unwrap();
        assert!(far.contains("5000 events behind"), "{far}");
        let stalled = projector_behind(3, Some(Duration::from_secs(11)), &limits).unwrap();
        assert!(stalled.contains("has waited 11 s"), "{stalled}");
    }
}
