//! `/v1/schedules`: periodic jobs fired by JetStream message schedules (no beat process).
//!
//! Creating a schedule stores its record on `schedules.<key>` with `Nats-Schedule`
//! (cron or `@every`): nats-server produces one `queued` message per firing, however
//! many API and worker processes run. Deleting stores a `schedule_deleted` record that
//! rolls the active one up. Pausing stores a `schedule_paused` record that rolls it up the
//! same way but keeps the spec (without the schedule headers it does not fire); resuming
//! stores `schedule_resumed` with them again. The list is read from the `schedules`
//! projection, with the next firing computed as nats-server schedules it. "Run now"
//! submits one job with a schedule's settings through the jobs service, as
//! `POST /v1/jobs` does: an ordinary `queued` event, so replay rebuilds it like any job.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, SubsecRound, Utc};
use jobstream_core::atomic::{
    EXPECTED_LAST_SUBJECT_SEQUENCE, Outgoing, ROLLUP_HEADER, SCHEDULE_HEADER,
    SCHEDULE_TARGET_HEADER, TTL_HEADER,
};
use jobstream_core::catalogue::FieldError;
use jobstream_core::schedule::{self, ScheduleEvent, ScheduleRecord, ScheduleSpec, Timing};
use jobstream_core::subject::{self, validate_token};
use jobstream_entity::schedule as schedule_row;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::{ApiQuery, Body, PathParam};
use crate::input::{self, Field, Unknown};
use crate::jobs::SubmitJob;
use crate::state::AppState;

input::impl_body!(CreateSchedule);

/// `/v1/schedules` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/schedules", get(list_schedules).post(create_schedule))
        .route("/v1/schedules/{name}", delete(delete_schedule))
        .route("/v1/schedules/{name}/run", post(run_schedule))
        .route("/v1/schedules/{name}/pause", post(pause_schedule))
        .route("/v1/schedules/{name}/resume", post(resume_schedule))
}

/// A schedule to create (or replace, when the caller already has one of that name).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// Name, unique per owner: letters, digits, `-`, `_` (1-64).
    #[schema(value_type = String, required = true)]
    pub name: Option<Field<String>>,
    /// 6-field cron (seconds first, UTC), or `@hourly`, `@daily`, …; give `cron` or `every`.
    #[schema(value_type = Option<String>)]
    pub cron: Option<Field<String>>,
    /// Interval like `30s`, `5m`, `1h30m` (at least 1s).
    #[schema(value_type = Option<String>)]
    pub every: Option<Field<String>>,
    /// Kind of job each firing produces.
    #[schema(value_type = String, required = true)]
    pub kind: Option<Field<String>>,
    /// Its payload.
    #[schema(value_type = Option<Value>)]
    pub payload: Option<Value>,
    /// Its queue.
    #[schema(value_type = Option<String>)]
    pub queue: Option<Field<String>>,
    /// Its priority.
    #[schema(value_type = Option<String>)]
    pub priority: Option<Field<String>>,
    /// Its attempts.
    #[schema(value_type = Option<u32>)]
    pub max_attempts: Option<Field<u64>>,
    /// Its per-attempt deadline, ms.
    #[schema(value_type = Option<u64>)]
    pub timeout_ms: Option<Field<u64>>,
    /// Its delay after the first failed attempt, ms; defaults per kind.
    #[schema(value_type = Option<u64>)]
    pub backoff_base_ms: Option<Field<u64>>,
    /// Its longest delay between attempts, ms; defaults per kind.
    #[schema(value_type = Option<u64>)]
    pub backoff_max_ms: Option<Field<u64>>,
    /// Names sent that are not fields of a schedule.
    #[serde(skip)]
    pub unknown: Unknown,
}

/// A schedule as clients see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    /// Name.
    pub name: String,
    /// Owner.
    pub owner: String,
    /// Cron expression, if a cron schedule.
    pub cron: Option<String>,
    /// Interval, if an `every` schedule (normalized to seconds, e.g. `90s`).
    pub every: Option<String>,
    /// Kind of the jobs it produces.
    pub kind: String,
    /// Their queue.
    pub queue: String,
    /// Their payload.
    pub payload: Value,
    /// Their priority.
    pub priority: String,
    /// Their attempts.
    pub max_attempts: u32,
    /// Their per-attempt deadline, ms.
    pub timeout_ms: u64,
    /// When this definition was created.
    pub created_at: DateTime<Utc>,
    /// Paused: it does not fire until resumed.
    pub paused: bool,
    /// When it fires next (computed as nats-server schedules it); none while paused.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// When it last fired, if it has (kept when its jobs are swept).
    pub last_fired_at: Option<DateTime<Utc>>,
}

impl ScheduleView {
    /// The view of `spec` stored at `stored` (the time its firing counts from).
    fn from_spec(
        spec: &ScheduleSpec,
        created_at: DateTime<Utc>,
        stored: DateTime<Utc>,
        paused: bool,
        last_fired_at: Option<DateTime<Utc>>,
    ) -> Self {
        let (cron, every) = match &spec.timing {
            Timing::Cron(c) => (Some(c.clone()), None),
            Timing::Every(e) => (None, Some(e.clone())),
        };
        let next_fire_at = (!paused)
            .then(|| schedule::next_firing(&spec.timing, stored, last_fired_at, Utc::now()))
            .flatten();
        ScheduleView {
            name: spec.name.clone(),
            owner: spec.owner.clone(),
            cron,
            every,
            kind: spec.job.kind.clone(),
            queue: spec.job.queue.to_string(),
            payload: spec.job.payload.clone(),
            priority: spec.job.priority.as_str().to_owned(),
            max_attempts: spec.job.max_attempts,
            timeout_ms: spec.job.timeout_ms,
            created_at,
            paused,
            next_fire_at,
            last_fired_at,
        }
    }
}

impl From<schedule_row::Model> for ScheduleView {
    fn from(m: schedule_row::Model) -> Self {
        let timing = match (&m.cron, &m.every) {
            (Some(c), _) => Some(Timing::Cron(c.clone())),
            (None, Some(e)) => Some(Timing::Every(e.clone())),
            (None, None) => None,
        };
        let next_fire_at = timing
            .filter(|_| !m.paused)
            .and_then(|t| schedule::next_firing(&t, m.updated_at, m.last_fired_at, Utc::now()));
        ScheduleView {
            name: m.name,
            owner: m.owner,
            cron: m.cron,
            every: m.every,
            kind: m.kind,
            queue: m.queue,
            payload: m.payload,
            priority: m.priority,
            max_attempts: u32::try_from(m.max_attempts).unwrap_or(0),
            timeout_ms: u64::try_from(m.timeout_ms).unwrap_or(0),
            created_at: m.created_at,
            paused: m.paused,
            next_fire_at,
            last_fired_at: m.last_fired_at,
        }
    }
}

/// Validates a schedule body into its spec, naming every bad field.
fn parse_schedule(
    body: CreateSchedule,
    caller: &Caller,
    kinds: &jobstream_core::kinds::Catalogue,
) -> Result<ScheduleSpec, ApiError> {
    let mut errors = Vec::new();
    let name = match body.name {
        Some(Field::Valid(n)) => match validate_token(&n) {
            Ok(()) => Some(n),
            Err(e) => {
                errors.push(FieldError::new("name", e.to_string()));
                None
            }
        },
        Some(Field::Invalid(_)) => {
            errors.push(FieldError::new("name", "must be a string"));
            None
        }
        None => {
            errors.push(FieldError::new("name", "required"));
            None
        }
    };
    let cron = body
        .cron
        .and_then(|c| c.check("cron", "must be a string", &mut errors));
    let every = body
        .every
        .and_then(|e| e.check("every", "must be a string", &mut errors));
    let timing = match (cron, every) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                "every",
                "give either cron or every, not both",
            ));
            None
        }
        (Some(c), None) => match schedule::validate_cron(&c) {
            Ok(()) => Some(Timing::Cron(c.trim().to_owned())),
            Err(m) => {
                errors.push(FieldError::new("cron", m));
                None
            }
        },
        (None, Some(e)) => match schedule::parse_every(&e) {
            Ok(norm) => Some(Timing::Every(norm)),
            Err(m) => {
                errors.push(FieldError::new("every", m));
                None
            }
        },
        (None, None) => {
            errors.push(FieldError::new("cron", "give cron or every"));
            None
        }
    };
    // The job each firing produces is checked as a submission is (a schedule's unknown
    // names, including the submission fields it may not carry, are reported with it).
    let job = SubmitJob {
        kind: body.kind,
        payload: body.payload,
        queue: body.queue,
        priority: body.priority,
        max_attempts: body.max_attempts,
        timeout_ms: body.timeout_ms,
        backoff_base_ms: body.backoff_base_ms,
        backoff_max_ms: body.backoff_max_ms,
        unknown: body.unknown,
        ..SubmitJob::default()
    };
    let job = match job.validate(&caller.sub, kinds) {
        Ok(job) => Some(job),
        Err(errs) => {
            errors.extend(errs);
            None
        }
    };
    match (name, timing, job) {
        (Some(name), Some(timing), Some(job)) if errors.is_empty() => Ok(ScheduleSpec {
            name,
            owner: caller.sub.clone(),
            timing,
            job,
        }),
        _ => Err(ApiError::Unprocessable(errors)),
    }
}

/// Create (or replace) a periodic schedule. `201` when new, `200` when it replaced the
/// caller's schedule of the same name; both once its record is stored in JetStream.
#[utoipa::path(
    post, path = "/v1/schedules", tag = "schedules", request_body = CreateSchedule,
    responses(
        (status = 201, description = "Created", body = ScheduleView),
        (status = 200, description = "Replaced the schedule of the same name", body = ScheduleView),
        (status = 422, description = "A field is invalid (e.g. a cron that does not parse)", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(schedule = tracing::field::Empty), err(Debug, level = "info"))]
pub async fn create_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<CreateSchedule>,
) -> Result<Response, ApiError> {
    let spec = parse_schedule(body, &caller, &state.kinds)?;
    tracing::Span::current().record("schedule", spec.name.as_str());
    let key = subject::schedule_key(&spec.owner, &spec.name);
    let replaced = matches!(active_record(&state, &key).await?, Some((_, true)));
    let timing = spec.timing.header_value();
    // Fired jobs land on the priority lane of the schedule's job.
    let target = subject::schedule_target(&spec.job.queue, &key, spec.job.priority);
    let rec = ScheduleRecord::new(key.clone(), ScheduleEvent::Created(Box::new(spec.clone())));
    let msg = Outgoing::new(subject::schedule(&key), rec.to_bytes())
        .with_header("Nats-Msg-Id", &rec.event_id.to_string())
        .with_header(SCHEDULE_HEADER, &timing)
        .with_header(SCHEDULE_TARGET_HEADER, &target)
        // A schedule lives until deleted: the stream's max_age must never drop it.
        .with_header(TTL_HEADER, "never");
    if let Err(e) = state.broker.publish_atomic(vec![msg]).await {
        if let Some(reason) = e.refusal() {
            let field = match spec.timing {
                Timing::Cron(_) => "cron",
                Timing::Every(_) => "every",
            };
            return Err(ApiError::field(
                field,
                format!("refused by nats-server: {reason}"),
            ));
        }
        return Err(e.into());
    }
    tracing::info!(%key, %timing, replaced, "schedule stored");
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let view = ScheduleView::from_spec(&spec, rec.at, rec.at, false, None);
    Ok((status, Json(view)).into_response())
}

/// The sequence of the latest record on a schedule's subject, and whether it is live
/// (created, paused or resumed: not deleted).
async fn active_record(state: &AppState, key: &str) -> Result<Option<(u64, bool)>, ApiError> {
    let Some(msg) = state
        .broker
        .last_on_subject(&subject::schedule(key))
        .await?
    else {
        return Ok(None);
    };
    match ScheduleRecord::decode(&msg.payload) {
        Ok(rec) => Ok(Some((
            msg.sequence,
            !matches!(rec.event, ScheduleEvent::Deleted { .. }),
        ))),
        // Stored by an older API that let too deep a payload through: no reader decodes
        // it, so it is treated as a live schedule that may be replaced or deleted.
        Err(e) => {
            tracing::warn!(seq = msg.sequence, error = %e, "undecodable schedule record");
            Ok(Some((msg.sequence, true)))
        }
    }
}

/// Filters of a schedule list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OwnerQuery {
    /// Admins only: whose schedule (default: the caller's).
    pub owner: Option<String>,
}

/// List schedules (the caller's; an admin sees all), by name.
#[utoipa::path(
    get, path = "/v1/schedules", tag = "schedules", params(OwnerQuery),
    responses((status = 200, body = [ScheduleView])),
    security(("bearer" = []))
)]
pub async fn list_schedules(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<OwnerQuery>,
) -> Result<Json<Vec<ScheduleView>>, ApiError> {
    let mut select = schedule_row::Entity::find();
    if !caller.is_admin {
        select = select.filter(schedule_row::Column::Owner.eq(caller.sub.as_str()));
    } else if let Some(owner) = &q.owner {
        select = select.filter(schedule_row::Column::Owner.eq(owner.as_str()));
    }
    let rows = select
        .order_by_asc(schedule_row::Column::Name)
        .order_by_asc(schedule_row::Column::Owner)
        .all(&state.db)
        .await?;
    Ok(Json(rows.into_iter().map(ScheduleView::from).collect()))
}

/// Delete a schedule: it fires no more. `204`; `404` when there is no such schedule.
/// An admin may delete another user's schedule with `?owner=`.
#[utoipa::path(
    delete, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name"), OwnerQuery),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such schedule", body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(schedule = %name), err(Debug, level = "info"))]
pub async fn delete_schedule(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(name): PathParam,
    ApiQuery(q): ApiQuery<OwnerQuery>,
) -> Result<StatusCode, ApiError> {
    let owner = match (&q.owner, caller.is_admin) {
        (Some(o), true) => o.clone(),
        _ => caller.sub.clone(),
    };
    let not_found = || ApiError::NotFound(format!("no schedule {name:?}"));
    let key = subject::schedule_key(&owner, &name);
    let Some((seq, true)) = active_record(&state, &key).await? else {
        return Err(not_found());
    };
    let rec = ScheduleRecord::new(
        key.clone(),
        ScheduleEvent::Deleted {
            name: name.clone(),
            owner,
        },
    );
    // Rolls the active record up (the scheduler stops); only if nobody changed it meanwhile.
    let msg = Outgoing::new(subject::schedule(&key), rec.to_bytes())
        // A retried publish (outcome unknown) is then a duplicate, not a wrong sequence.
        .with_header("Nats-Msg-Id", &rec.event_id.to_string())
        .with_header(ROLLUP_HEADER, "sub")
        .with_header(EXPECTED_LAST_SUBJECT_SEQUENCE, &seq.to_string());
    match state.broker.publish_atomic(vec![msg]).await {
        Ok(_) => {
            tracing::info!(%key, "schedule deleted");
            Ok(StatusCode::NO_CONTENT)
        }
        Err(e) if e.is_wrong_last_sequence() => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}

/// Run a schedule now: one job with the schedule's kind, queue, payload, priority,
/// attempts and deadline, submitted (and owned) by the caller, outside its timing.
/// `202` with the job; `404` when there is no such schedule. An admin may run another
/// user's schedule with `?owner=`.
#[utoipa::path(
    post, path = "/v1/schedules/{name}/run", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name"), OwnerQuery),
    responses(
        (status = 202, description = "Job submitted", body = crate::jobs::JobView),
        (status = 404, description = "No such schedule", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(schedule = %name), err(Debug, level = "info"))]
pub async fn run_schedule(
    State(state): State<AppState>,
    caller: Caller,
    request_id: crate::http::RequestId,
    PathParam(name): PathParam,
    ApiQuery(q): ApiQuery<OwnerQuery>,
) -> Result<Response, ApiError> {
    let job = run_now(
        &state,
        &caller,
        &name,
        q.owner.as_deref(),
        request_id.as_deref(),
    )
    .await?;
    let location = format!("/v1/jobs/{}", job.id);
    Ok((
        StatusCode::ACCEPTED,
        [(axum::http::header::LOCATION, location)],
        Json(crate::jobs::JobView::from(&job)),
    )
        .into_response())
}

/// The one "run now" of the REST route and the console: finds the schedule (the
/// caller's, or `owner`'s for an admin) and submits one job with its settings as the
/// caller, through the jobs service.
pub async fn run_now(
    state: &AppState,
    caller: &Caller,
    name: &str,
    owner: Option<&str>,
    request_id: Option<&str>,
) -> Result<jobstream_core::JobState, ApiError> {
    let owner = match (owner, caller.is_admin) {
        (Some(o), true) => o,
        _ => caller.sub.as_str(),
    };
    let row = schedule_row::Entity::find_by_id(subject::schedule_key(owner, name))
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no schedule {name:?}")))?;
    let s = ScheduleView::from(row);
    let job = serde_json::json!({
        "kind": s.kind, "queue": s.queue, "payload": s.payload, "priority": s.priority,
        "max_attempts": s.max_attempts, "timeout_ms": s.timeout_ms,
    });
    let body: SubmitJob = input::parse_object(job).map_err(|e| match e {
        input::BodyError::NotObject => {
            ApiError::Unexpected(anyhow::anyhow!("a schedule's job is not an object"))
        }
        input::BodyError::Fields(errors) => ApiError::Unprocessable(errors),
    })?;
    let submitted = state
        .jobs()
        .submit(caller, body, None, request_id, None)
        .await?;
    let (crate::jobs::Submitted::New(job) | crate::jobs::Submitted::Existing(job)) = submitted;
    tracing::info!(schedule = %name, %owner, job_id = %job.id, "schedule run now");
    Ok(*job)
}

/// Pause a schedule: it fires no more until resumed, and keeps its definition. `200`
/// with the schedule (also when it was already paused: pausing is idempotent); `404`
/// when there is no such schedule. An admin may pause another user's with `?owner=`.
#[utoipa::path(
    post, path = "/v1/schedules/{name}/pause", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name"), OwnerQuery),
    responses(
        (status = 200, description = "Paused (or already paused)", body = ScheduleView),
        (status = 404, description = "No such schedule", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Changed by another request meanwhile", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(schedule = %name), err(Debug, level = "info"))]
pub async fn pause_schedule(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(name): PathParam,
    ApiQuery(q): ApiQuery<OwnerQuery>,
) -> Result<Json<ScheduleView>, ApiError> {
    set_paused(&state, &caller, &name, q.owner.as_deref(), true)
        .await
        .map(Json)
}

/// Resume a paused schedule: it fires again, its interval counted from now. `200` with
/// the schedule (also when it was not paused: resuming is idempotent); `404` when there
/// is no such schedule. An admin may resume another user's with `?owner=`.
#[utoipa::path(
    post, path = "/v1/schedules/{name}/resume", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name"), OwnerQuery),
    responses(
        (status = 200, description = "Resumed (or was not paused)", body = ScheduleView),
        (status = 404, description = "No such schedule", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Changed by another request meanwhile", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(schedule = %name), err(Debug, level = "info"))]
pub async fn resume_schedule(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(name): PathParam,
    ApiQuery(q): ApiQuery<OwnerQuery>,
) -> Result<Json<ScheduleView>, ApiError> {
    set_paused(&state, &caller, &name, q.owner.as_deref(), false)
        .await
        .map(Json)
}

/// The one pause/resume of the REST routes and the console: finds the schedule (the
/// caller's, or `owner`'s for an admin) in the stream and stores a `schedule_paused`
/// (rolling the firing record up, without the schedule headers) or `schedule_resumed`
/// (with them) record. Already in that state: nothing is stored.
pub async fn set_paused(
    state: &AppState,
    caller: &Caller,
    name: &str,
    owner: Option<&str>,
    pause: bool,
) -> Result<ScheduleView, ApiError> {
    let owner = match (owner, caller.is_admin) {
        (Some(o), true) => o,
        _ => caller.sub.as_str(),
    };
    let not_found = || ApiError::NotFound(format!("no schedule {name:?}"));
    let key = subject::schedule_key(owner, name);
    let Some(msg) = state
        .broker
        .last_on_subject(&subject::schedule(&key))
        .await?
    else {
        return Err(not_found());
    };
    let current = ScheduleRecord::decode(&msg.payload).map_err(|e| {
        tracing::warn!(seq = msg.sequence, error = %e, "undecodable schedule record");
        ApiError::Conflict(format!(
            "schedule {name:?} was stored by an older version and cannot be paused; create it again"
        ))
    })?;
    let (spec, created_at, carried) = match &current.event {
        ScheduleEvent::Deleted { .. } => return Err(not_found()),
        ScheduleEvent::Created(spec) => (spec.as_ref(), current.at, None),
        ScheduleEvent::Paused(u) | ScheduleEvent::Resumed(u) => {
            (&u.spec, u.created_at, u.last_fired_at)
        }
    };
    let row = schedule_row::Entity::find_by_id(key.clone())
        .one(&state.db)
        .await?;
    let projected_last = row.as_ref().and_then(|r| r.last_fired_at);
    let paused = matches!(current.event, ScheduleEvent::Paused(_));
    if paused == pause {
        return Ok(ScheduleView::from_spec(
            spec,
            created_at,
            current.at,
            paused,
            projected_last.max(carried),
        ));
    }
    // The record rolls up the earlier ones: it carries the last firing, read from the
    // stream (the last fired message) and the projection (which keeps it past max_age).
    let target = subject::schedule_target(&spec.job.queue, &key, spec.job.priority);
    let mut update = schedule::ScheduleUpdate {
        spec: spec.clone(),
        created_at,
        last_fired_at: last_fired(state, &target, msg.sequence)
            .await?
            .max(projected_last)
            .max(carried),
    };
    let (mut rec, mut seq) = store_state(state, &key, &target, msg.sequence, pause, &update)
        .await
        .map_err(|e| conflict_or(e, name))?;
    // A firing stored between that read and the pause is not in the record: once paused
    // nothing fires, so one more read is final, and a corrected record replaces it.
    if pause {
        let fired = last_fired(state, &target, msg.sequence).await?;
        if fired > update.last_fired_at {
            update.last_fired_at = fired;
            (rec, seq) = store_state(state, &key, &target, seq, pause, &update)
                .await
                .map_err(|e| conflict_or(e, name))?;
        }
    }
    tracing::info!(%key, %owner, seq, event = rec.event.type_name(), "schedule state stored");
    Ok(ScheduleView::from_spec(
        &update.spec,
        created_at,
        rec.at,
        pause,
        update.last_fired_at,
    ))
}

/// The stored time of the last message on `target` (a schedule's last firing), if it is
/// stored after `record` (the schedule's current record: an earlier firing is in the time
/// that record carries, or belongs to a definition it replaced).
async fn last_fired(
    state: &AppState,
    target: &str,
    record: u64,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let last = state.broker.last_on_subject(target).await?;
    Ok(last.filter(|m| m.sequence > record).map(|m| {
        // As the fired job's `at` (see `Envelope::from_stored`).
        jobstream_core::stored::StoredMessage::from_raw(&m)
            .time
            .trunc_subsecs(6)
    }))
}

/// Stores a `schedule_paused` (rolling the firing record up, without the schedule
/// headers) or `schedule_resumed` (with them) record of `update`, only if the latest
/// record of the schedule is still at `expected`. Returns it and its sequence.
async fn store_state(
    state: &AppState,
    key: &str,
    target: &str,
    expected: u64,
    pause: bool,
    update: &schedule::ScheduleUpdate,
) -> Result<(ScheduleRecord, u64), jobstream_core::broker::BrokerError> {
    let rec = ScheduleRecord::new(
        key.to_owned(),
        if pause {
            ScheduleEvent::Paused(Box::new(update.clone()))
        } else {
            ScheduleEvent::Resumed(Box::new(update.clone()))
        },
    );
    let out = Outgoing::new(subject::schedule(key), rec.to_bytes())
        // A retried publish (outcome unknown) is then a duplicate, not a wrong sequence.
        .with_header("Nats-Msg-Id", &rec.event_id.to_string())
        // Only if nobody changed the schedule meanwhile.
        .with_header(EXPECTED_LAST_SUBJECT_SEQUENCE, &expected.to_string())
        // A paused schedule lives until deleted too.
        .with_header(TTL_HEADER, "never");
    let out = if pause {
        // Replaces the firing record, so nats-server stops firing it.
        out.with_header(ROLLUP_HEADER, "sub")
    } else {
        // Like a created one: nats-server fires the latest scheduled message of the subject.
        out.with_header(SCHEDULE_HEADER, &update.spec.timing.header_value())
            .with_header(SCHEDULE_TARGET_HEADER, target)
    };
    let ack = state.broker.publish_atomic(vec![out]).await?;
    Ok((rec, ack.last_seq))
}

/// A failed store of a schedule record as the client sees it: changed meanwhile (deleted,
/// replaced, paused or resumed by another request) is a conflict.
fn conflict_or(e: jobstream_core::broker::BrokerError, name: &str) -> ApiError {
    if e.is_wrong_last_sequence() {
        ApiError::Conflict(format!("schedule {name:?} changed meanwhile; try again"))
    } else {
        e.into()
    }
}
