//! The console's list pages: schedules, kinds, users, operations. Each calls the REST
//! route's own function with the session's caller, so the rules (who sees what, what an
//! admin may do) are the API's, written once.

use askama::Template;
use axum::Json;
use axum::extract::{Path, State};
use axum::response::{Html, Redirect};

use super::{when, when_opt};
use crate::http::{ApiQuery, OptionalBody, PathParam};
use crate::jobs::JobsError;
use crate::routes::{admin_replay, admin_verify, kinds, schedules, users};
use crate::state::AppState;
use crate::ui::form::Action;
use crate::ui::{Chrome, Session, UiError, render};

struct ScheduleRow {
    name: String,
    owner: String,
    timing: String,
    kind: String,
    queue: String,
    created: String,
    paused: bool,
    next: String,
    last: String,
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct SchedulesPage {
    chrome: Chrome,
    schedules: Vec<ScheduleRow>,
}

/// `GET /ui/schedules`.
pub(super) async fn schedules(
    State(state): State<AppState>,
    session: Session,
) -> Result<Html<String>, UiError> {
    let Json(list) = schedules::list_schedules(
        State(state.clone()),
        session.caller(),
        ApiQuery(schedules::OwnerQuery { owner: None }),
    )
    .await?;
    render(&SchedulesPage {
        chrome: Chrome::new(&session, &state.console, "schedules"),
        schedules: list
            .into_iter()
            .map(|s| ScheduleRow {
                timing: s
                    .cron
                    .map(|c| format!("cron {c}"))
                    .or(s.every.map(|e| format!("every {e}")))
                    .unwrap_or_default(),
                name: s.name,
                owner: s.owner,
                kind: s.kind,
                queue: s.queue,
                created: when(s.created_at),
                paused: s.paused,
                next: when_opt(s.next_fire_at),
                last: when_opt(s.last_fired_at),
            })
            .collect(),
    })
}

/// `POST /ui/schedules/{name}/delete` (`owner` in the form for an admin deleting another's).
pub(super) async fn delete_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
    action: Action,
) -> Result<Redirect, UiError> {
    let owner = action.form.get("owner").map(str::to_owned);
    schedules::delete_schedule(
        State(state),
        action.session.caller(),
        PathParam(name),
        ApiQuery(schedules::OwnerQuery { owner }),
    )
    .await?;
    Ok(Redirect::to("/ui/schedules"))
}

/// `POST /ui/schedules/{name}/pause` (`owner` in the form for an admin pausing another's):
/// the same operation as `POST /v1/schedules/{name}/pause`.
pub(super) async fn pause_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
    action: Action,
) -> Result<Redirect, UiError> {
    let caller = action.session.caller();
    schedules::set_paused(&state, &caller, &name, action.form.get("owner"), true).await?;
    Ok(Redirect::to("/ui/schedules"))
}

/// `POST /ui/schedules/{name}/resume`: the same operation as `POST /v1/schedules/{name}/resume`.
pub(super) async fn resume_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
    action: Action,
) -> Result<Redirect, UiError> {
    let caller = action.session.caller();
    schedules::set_paused(&state, &caller, &name, action.form.get("owner"), false).await?;
    Ok(Redirect::to("/ui/schedules"))
}

/// A form body as the REST route's typed body: the same parsing, the same validation.
fn typed_body<T: crate::input::Body>(value: serde_json::Value) -> Result<T, UiError> {
    crate::input::parse_object(value).map_err(|e| {
        UiError::Jobs(match e {
            crate::input::BodyError::NotObject => JobsError::field("form", "not an object"),
            crate::input::BodyError::Fields(errors) => JobsError::Invalid(errors),
        })
    })
}

/// `POST /ui/schedules`: creates (or replaces) a schedule through `POST /v1/schedules`.
pub(super) async fn create_schedule(
    State(state): State<AppState>,
    action: Action,
) -> Result<Redirect, UiError> {
    let form = &action.form;
    let payload: serde_json::Value = match form.get("payload") {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| JobsError::field("payload", format!("not JSON: {e}")))?,
        None => serde_json::json!({}),
    };
    let timing = match form.get("timing") {
        Some("cron") => "cron",
        _ => "every",
    };
    let mut body = serde_json::json!({
        "name": form.get("name").unwrap_or_default(),
        "kind": form.get("kind").unwrap_or_default(),
        "payload": payload,
    });
    body[timing] = serde_json::json!(form.get("when").unwrap_or_default());
    if let Some(queue) = form.get("queue") {
        body["queue"] = serde_json::json!(queue);
    }
    schedules::create_schedule(
        State(state),
        action.session.caller(),
        crate::http::Body(typed_body(body)?),
    )
    .await?;
    Ok(Redirect::to("/ui/schedules"))
}

/// `POST /ui/schedules/{name}/run`: one job now with the schedule's settings, submitted
/// by the session's user: the same operation as `POST /v1/schedules/{name}/run`.
pub(super) async fn run_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
    action: Action,
) -> Result<Redirect, UiError> {
    let job = schedules::run_now(
        &state,
        &action.session.caller(),
        &name,
        action.form.get("owner"),
        action.request_id.as_deref(),
    )
    .await?;
    tracing::info!(schedule = %name, job_id = %job.id, "schedule run now from the console");
    Ok(Redirect::to(&format!("/ui/jobs/{}", job.id)))
}

struct KindRow {
    name: String,
    description: String,
    queue: String,
    max_attempts: u32,
    timeout_ms: u64,
    source: String,
    schema: String,
}

#[derive(Template)]
#[template(path = "kinds.html")]
struct KindsPage {
    chrome: Chrome,
    kinds: Vec<KindRow>,
}

/// `GET /ui/kinds`: the catalogue, with defaults and payload schemas.
pub(super) async fn kinds(
    State(state): State<AppState>,
    session: Session,
) -> Result<Html<String>, UiError> {
    let Json(list) = kinds::list_kinds(State(state.clone()), session.caller()).await;
    render(&KindsPage {
        chrome: Chrome::new(&session, &state.console, "kinds"),
        kinds: list
            .items
            .into_iter()
            .map(|k| KindRow {
                schema: serde_json::to_string_pretty(&k.payload_schema).unwrap_or_default(),
                name: k.name,
                description: k.description,
                queue: k.defaults.queue,
                max_attempts: k.defaults.max_attempts,
                timeout_ms: k.defaults.timeout_ms,
                source: k.source,
            })
            .collect(),
    })
}

struct UserRow {
    id: String,
    sub: String,
    email: String,
    name: String,
    created: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<UserRow>,
    next: Option<String>,
}

/// The cursor of the users page.
#[derive(Debug, serde::Deserialize)]
pub(super) struct UsersQuery {
    after: Option<String>,
}

/// `GET /ui/users` (admins).
pub(super) async fn users(
    State(state): State<AppState>,
    session: Session,
    axum::extract::Query(q): axum::extract::Query<UsersQuery>,
) -> Result<Html<String>, UiError> {
    session.require_admin()?;
    let Json(page) = users::list_users(
        State(state.clone()),
        session.caller(),
        ApiQuery(users::UserListQuery {
            limit: Some(100),
            after: q.after,
            before: None,
            email: None,
        }),
    )
    .await?;
    render(&UsersPage {
        chrome: Chrome::new(&session, &state.console, "users"),
        next: page.next_cursor.map(|c| format!("/ui/users?after={c}")),
        users: page
            .items
            .into_iter()
            .map(|u| UserRow {
                id: u.id.to_string(),
                sub: u.sub.unwrap_or_default(),
                email: u.email.unwrap_or_default(),
                name: u.name.unwrap_or_default(),
                created: when(u.created_at),
            })
            .collect(),
    })
}

#[derive(Template)]
#[template(path = "operations.html")]
struct OperationsPage {
    chrome: Chrome,
    replay: Option<ReplayView>,
    /// A replay is in progress: the page polls its progress (and only then).
    running: bool,
    verify: Option<VerifyView>,
    /// A verify is in progress: the page polls its state (and only then).
    verifying: bool,
    message: Option<String>,
}

/// A verify's state as the operations page shows it.
struct VerifyView {
    /// `running`, `done` or `failed`.
    status: &'static str,
    started: String,
    finished: String,
    error: String,
    result: Option<VerifyResultView>,
}

struct VerifyResultView {
    clean: bool,
    checkpoint: u64,
    projected: u64,
    folded: u64,
    swept: u64,
    difference_count: u64,
    /// Job (or workflow row) and what differs, the first ones.
    differences: Vec<(String, String)>,
    /// Not every difference is listed.
    more_differences: bool,
    rejected_count: u64,
    /// Sequence, job and why, the first ones.
    rejected: Vec<(u64, String, String)>,
    /// Not every rejected event is listed.
    more_rejected: bool,
}

impl From<jobstream_core::verify::VerifyState> for VerifyView {
    fn from(s: jobstream_core::verify::VerifyState) -> Self {
        use jobstream_core::verify::VerifyStatus;
        VerifyView {
            status: match s.status {
                VerifyStatus::Running => "running",
                VerifyStatus::Done => "done",
                VerifyStatus::Failed => "failed",
            },
            started: when(s.started_at),
            finished: when_opt(s.finished_at),
            error: s.error.unwrap_or_default(),
            result: s.result.map(|r| VerifyResultView {
                more_differences: r.difference_count > r.differences.len() as u64,
                more_rejected: r.rejected_count > r.rejected.len() as u64,
                clean: r.clean,
                checkpoint: r.checkpoint,
                projected: r.projected,
                folded: r.folded,
                swept: r.swept,
                difference_count: r.difference_count,
                differences: r
                    .differences
                    .into_iter()
                    .map(|d| (d.job_id, d.fields.join("; ")))
                    .collect(),
                rejected_count: r.rejected_count,
                rejected: r
                    .rejected
                    .into_iter()
                    .map(|e| (e.seq, e.job_id.unwrap_or_default(), e.error))
                    .collect(),
            }),
        }
    }
}

struct ReplayView {
    phase: String,
    position: u64,
    target: u64,
    percent: u64,
    events_per_sec: String,
    eta: String,
    finished: bool,
    error: String,
    summary: String,
    updated: String,
}

/// `GET /ui/operations` (admins): the replay's progress and the verify's state, live.
pub(super) async fn operations(
    State(state): State<AppState>,
    session: Session,
) -> Result<Html<String>, UiError> {
    session.require_admin()?;
    operations_page(&state, &session, None).await
}

async fn operations_page(
    state: &AppState,
    session: &Session,
    message: Option<String>,
) -> Result<Html<String>, UiError> {
    let replay = match admin_replay::replay_status(State(state.clone()), session.caller()).await {
        Ok(Json(p)) => Some(ReplayView {
            percent: (p.position * 100)
                .checked_div(p.target)
                .unwrap_or(0)
                .min(100),
            phase: p.phase,
            position: p.position,
            target: p.target,
            events_per_sec: format!("{:.0}", p.events_per_sec),
            eta: p.eta_secs.map_or_else(String::new, |s| format!("{s:.0} s")),
            finished: p.finished,
            error: p.error.unwrap_or_default(),
            summary: p
                .summary
                .and_then(|s| serde_json::to_string(&s).ok())
                .unwrap_or_default(),
            updated: when_opt(p.updated_at),
        }),
        Err(crate::error::ApiError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let verify = match admin_verify::verify_status(State(state.clone()), session.caller()).await {
        Ok(Json(s)) => Some(VerifyView::from(s)),
        Err(crate::error::ApiError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    render(&OperationsPage {
        chrome: Chrome::new(session, &state.console, "operations"),
        running: replay.as_ref().is_some_and(|r| !r.finished),
        replay,
        verifying: verify.as_ref().is_some_and(|v| v.status == "running"),
        verify,
        message,
    })
}

/// `POST /ui/operations/replay` (admins): asks the projector to rebuild the projection.
pub(super) async fn start_replay(
    State(state): State<AppState>,
    action: Action,
) -> Result<Html<String>, UiError> {
    action.session.require_admin()?;
    let message = match admin_replay::start_replay(
        State(state.clone()),
        action.session.caller(),
        OptionalBody(None),
    )
    .await
    {
        Ok(_) => "Replay started.".to_owned(),
        Err(e @ (crate::error::ApiError::Conflict(_) | crate::error::ApiError::Unavailable(_))) => {
            e.to_string()
        }
        Err(e) => return Err(e.into()),
    };
    operations_page(&state, &action.session, Some(message)).await
}

/// `POST /ui/operations/verify` (admins): asks the projector to compare the projection
/// with a fresh fold of the stream.
pub(super) async fn start_verify(
    State(state): State<AppState>,
    action: Action,
) -> Result<Html<String>, UiError> {
    action.session.require_admin()?;
    let message = match admin_verify::start_verify(
        State(state.clone()),
        action.session.caller(),
        OptionalBody(None),
    )
    .await
    {
        Ok(_) => "Verify started.".to_owned(),
        Err(e @ (crate::error::ApiError::Conflict(_) | crate::error::ApiError::Unavailable(_))) => {
            e.to_string()
        }
        Err(e) => return Err(e.into()),
    };
    operations_page(&state, &action.session, Some(message)).await
}
