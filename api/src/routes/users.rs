//! `/v1/users`: the seeds' users flows. `GET /v1/users/me`, `GET /v1/users` (admins),
//! `POST /v1/users` (admins, or anyone with open registration), which registers the
//! user and enqueues the `email.registration` job.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use jobstream_core::JobState;
use jobstream_core::atomic::Outgoing;
use jobstream_core::catalogue::FieldError;
use jobstream_core::event::REQUEST_ID_HEADER;
use jobstream_core::event::{Envelope, Event, JobSpec, Priority};
use jobstream_core::subject::QueueName;
use jobstream_core::user::{self, UserEnvelope, UserEvent, UserProfile, UserState};
use jobstream_entity::user as user_row;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::auth::{Caller, MAX_SUB_LEN};
use crate::error::ApiError;
use crate::http::page::link;
use crate::http::{ApiQuery, Body, Page, PageRequest, RequestId};
use crate::input::{self, Field, Unknown};
use crate::jobs::JobView;
use crate::state::AppState;
use crate::users::{normalize_email, register_caller};

input::impl_body!(UpdateUser, CreateUser);

/// Kind of the registration e-mail job (payload `{"to", "name", "user_id"}`).
pub const REGISTRATION_KIND: &str = "email.registration";
/// Queue of the registration e-mail job.
pub const REGISTRATION_QUEUE: &str = "default";
/// Attempts of the registration e-mail job (SMTP servers fail transiently).
pub const REGISTRATION_MAX_ATTEMPTS: u32 = 5;
/// Per-attempt deadline of the registration e-mail job.
pub const REGISTRATION_TIMEOUT_MS: u64 = 60_000;
/// Longest display name.
pub const MAX_NAME_LEN: usize = 200;
/// Longest e-mail address (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// `/v1/users` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users", get(list_users).post(create_user))
        .route("/v1/users/me", get(me).patch(update_me))
}

/// The users part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(me, update_me, list_users, create_user),
    components(schemas(UserView, Page<UserView>, CreateUser, CreatedUser, UpdateUser)),
    tags((name = "users", description = "Users and registration"))
)]
pub struct UsersDoc;

/// A user as clients see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    /// User id.
    pub id: Uuid,
    /// Identity provider subject, when known.
    pub sub: Option<String>,
    /// E-mail address (lower case).
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Who created the user; `null` when they registered by signing in.
    pub created_by: Option<String>,
    /// Registered at.
    pub created_at: DateTime<Utc>,
    /// Latest change at.
    pub updated_at: DateTime<Utc>,
}

impl From<&UserState> for UserView {
    fn from(s: &UserState) -> Self {
        UserView {
            id: s.id,
            sub: s.profile.sub.clone(),
            email: s.profile.email.clone(),
            name: s.profile.name.clone(),
            created_by: s.created_by.clone(),
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

fn view_of_row(row: user_row::Model) -> Result<UserView, ApiError> {
    UserState::try_from(row)
        .map(|s| UserView::from(&s))
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e)))
}

/// The caller's own user, folded from the stream (read-your-writes: right after the first
/// request or an update, whatever the projection's lag).
#[utoipa::path(
    get, path = "/v1/users/me", tag = "users",
    responses((status = 200, body = UserView), (status = 401, body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, err(Debug, level = "info"))]
pub async fn me(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
) -> Result<Json<UserView>, ApiError> {
    // The extractor registered the caller; if that failed (NATS hiccup), this retries and reports it.
    let id = register_caller(&state, &caller, request_id.as_deref()).await?;
    // A user's history is a handful of events: fold it from the stream, so the answer
    // includes the caller's own latest registration or update even if the projection lags.
    match state.broker.user_from_stream(id).await? {
        Some(s) => Ok(Json(UserView::from(&s))),
        None => Err(ApiError::Unexpected(anyhow::anyhow!(
            "user {id} registered but not found in the stream"
        ))),
    }
}

/// Changes to the caller's own profile.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// New display name.
    #[schema(value_type = Option<String>)]
    pub name: Option<Field<String>>,
    /// New e-mail address.
    #[schema(value_type = Option<String>)]
    pub email: Option<Field<String>>,
    /// Names sent that are not fields of an update.
    #[serde(skip)]
    pub unknown: Unknown,
}

/// Change the caller's name or e-mail address (a `user.updated` event).
#[utoipa::path(
    patch, path = "/v1/users/me", tag = "users", request_body = UpdateUser,
    responses(
        (status = 200, description = "Updated", body = UserView),
        (status = 409, description = "E-mail address taken", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(user_id = tracing::field::Empty), err(Debug, level = "info"))]
pub async fn update_me(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Body(body): Body<UpdateUser>,
) -> Result<Json<UserView>, ApiError> {
    let mut errors = Vec::new();
    let mut check = |field: &str,
                     v: Option<Field<String>>,
                     parse: fn(Field<String>) -> Result<String, String>| {
        v.and_then(|v| {
            parse(v)
                .map_err(|m| errors.push(FieldError::new(field, m)))
                .ok()
        })
    };
    let name = check("name", body.name, parse_name);
    let email = check("email", body.email, parse_email);
    body.unknown.report(&mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Unprocessable(errors));
    }
    if name.is_none() && email.is_none() {
        return Err(ApiError::field("name", "give name and/or email to change"));
    }
    let rid = request_id.as_deref();
    let id = register_caller(&state, &caller, rid).await?;
    tracing::Span::current().record("user_id", tracing::field::display(id));
    if let Some(e) = &email {
        let taken = user_row::Entity::find()
            .filter(user_row::Column::Email.eq(e.as_str()))
            .filter(user_row::Column::Id.ne(id.to_string()))
            .one(&state.db)
            .await?;
        if taken.is_some() {
            return Err(ApiError::Conflict(format!(
                "another user has the e-mail address {e}"
            )));
        }
    }
    let env = UserEnvelope::new(id, UserEvent::Updated { email, name });
    state.broker.publish_user_event(&env, rid).await?;
    tracing::info!("user updated");
    match state.broker.user_from_stream(id).await? {
        Some(s) => Ok(Json(UserView::from(&s))),
        None => Err(ApiError::Unexpected(anyhow::anyhow!(
            "user {id} updated but not found in the stream"
        ))),
    }
}

/// Cursor of a user list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    /// Page size, 1..=500 (default 50).
    pub limit: Option<u64>,
    /// Page after this cursor, from `next_cursor`.
    pub after: Option<String>,
    /// Page before this cursor, from `prev_cursor`.
    pub before: Option<String>,
    /// Only the user with this e-mail address.
    pub email: Option<String>,
}

/// List users (admins only), ordered by id, with cursor pagination.
#[utoipa::path(
    get, path = "/v1/users", tag = "users", params(UserListQuery),
    responses(
        (status = 200, body = Page<UserView>),
        (status = 403, description = "Not an admin", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, err(Debug, level = "info"))]
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UserListQuery>,
) -> Result<Json<Page<UserView>>, ApiError> {
    caller.require_admin()?;
    let page = PageRequest::parse(q.limit, q.after.as_deref(), q.before.as_deref())?;
    let mut select = user_row::Entity::find();
    if let Some(email) = &q.email {
        select = select.filter(user_row::Column::Email.eq(normalize_email(email)));
    }
    if let Some(after) = &page.after {
        select = select.filter(user_row::Column::Id.gt(after.as_str()));
    }
    if let Some(before) = &page.before {
        select = select.filter(user_row::Column::Id.lt(before.as_str()));
    }
    let order = if page.backwards() {
        sea_orm::Order::Desc
    } else {
        sea_orm::Order::Asc
    };
    let rows = select
        .order_by(user_row::Column::Id, order)
        .limit(page.fetch())
        .all(&state.db)
        .await?;
    let (rows, more) = page.trim(rows);
    let items = rows
        .into_iter()
        .map(view_of_row)
        .collect::<Result<Vec<_>, _>>()?;
    let filters = [("email", &q.email)];
    Ok(Json(Page::new(
        items,
        &page,
        more,
        |u: &UserView| u.id.to_string(),
        |key, cursor| link("/v1/users", page.limit, key, cursor, &filters),
    )))
}

/// A user to create.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// E-mail address; the registration mail goes there.
    #[schema(value_type = String, required = true)]
    pub email: Option<Field<String>>,
    /// Display name.
    #[schema(value_type = String, required = true)]
    pub name: Option<Field<String>>,
    /// The identity provider's subject, when the user will sign in with it.
    #[schema(value_type = Option<String>)]
    pub sub: Option<Field<String>>,
    /// Names sent that are not fields of a new user.
    #[serde(skip)]
    pub unknown: Unknown,
}

/// The created user and its registration e-mail job.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedUser {
    /// The user.
    pub user: UserView,
    /// The `email.registration` job (follow it at `/v1/jobs/{id}`).
    pub registration_job: JobView,
}

/// Checks an e-mail address: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn validate_email(email: &str) -> Result<String, String> {
    let e = normalize_email(email);
    if e.is_empty() {
        return Err("required".into());
    }
    if e.len() > MAX_EMAIL_LEN {
        return Err(format!("must be at most {MAX_EMAIL_LEN} characters"));
    }
    let valid = match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..")
                && !e.chars().any(|c| {
                    c.is_whitespace() || c.is_control() || c == ',' || c == '<' || c == '>'
                })
        }
        None => false,
    };
    if valid {
        Ok(e)
    } else {
        Err("must be an e-mail address like name@example.com".into())
    }
}

/// A display name: a non-empty string of at most [`MAX_NAME_LEN`] characters, trimmed.
fn parse_name(v: Field<String>) -> Result<String, String> {
    match v {
        Field::Valid(s) if s.trim().is_empty() => Err("must not be empty".into()),
        Field::Valid(s) if s.trim().chars().count() > MAX_NAME_LEN => {
            Err(format!("must be at most {MAX_NAME_LEN} characters"))
        }
        Field::Valid(s) => Ok(s.trim().to_owned()),
        Field::Invalid(_) => Err("must be a string".into()),
    }
}

/// An e-mail address field (see [`validate_email`]).
fn parse_email(v: Field<String>) -> Result<String, String> {
    match v {
        Field::Valid(e) => validate_email(&e),
        Field::Invalid(_) => Err("must be a string".into()),
    }
}

struct NewUser {
    email: String,
    name: String,
    sub: Option<String>,
}

fn parse_new_user(body: CreateUser) -> Result<NewUser, ApiError> {
    let mut errors = Vec::new();
    let mut required =
        |field: &str,
         v: Option<Field<String>>,
         parse: fn(Field<String>) -> Result<String, String>| match v {
            Some(v) => parse(v)
                .map_err(|m| errors.push(FieldError::new(field, m)))
                .ok(),
            None => {
                errors.push(FieldError::new(field, "required"));
                None
            }
        };
    let email = required("email", body.email, parse_email);
    let name = required("name", body.name, parse_name);
    let sub = match body.sub {
        None => None,
        Some(Field::Valid(s)) if !s.trim().is_empty() && s.len() <= MAX_SUB_LEN => Some(s),
        Some(_) => {
            errors.push(FieldError::new(
                "sub",
                format!("must be a non-empty string of at most {MAX_SUB_LEN} bytes"),
            ));
            None
        }
    };
    body.unknown.report(&mut errors);
    match (email, name) {
        (Some(email), Some(name)) if errors.is_empty() => Ok(NewUser { email, name, sub }),
        _ => Err(ApiError::Unprocessable(errors)),
    }
}

/// Create a user and enqueue their registration e-mail (`email.registration`).
///
/// Admins only, unless open registration is enabled. A `409` when the e-mail address or
/// `sub` is already registered.
#[utoipa::path(
    post, path = "/v1/users", tag = "users", request_body = CreateUser,
    responses(
        (status = 201, description = "Registered; the registration e-mail job is queued", body = CreatedUser, headers(("Location" = String, description = "URL of the registration job"))),
        (status = 403, description = "Not an admin (and open registration is off)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "E-mail or sub already registered", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(user_id = tracing::field::Empty, job_id = tracing::field::Empty), err(Debug, level = "info"))]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Body(body): Body<CreateUser>,
) -> Result<Response, ApiError> {
    if !state.users.open_registration {
        caller.require_admin()?;
    }
    let new = parse_new_user(body)?;
    let rid = request_id.as_deref();
    let user_id = match &new.sub {
        Some(sub) => user::user_id_for_sub(sub),
        None => user::user_id_for_email(&new.email),
    };
    let span = tracing::Span::current();
    span.record("user_id", tracing::field::display(user_id));

    // Users registered earlier with this address (a user created without a sub has an id derived
    // from the address, so the stream itself refuses a duplicate below; this also covers users
    // registered with a sub).
    let taken = user_row::Entity::find()
        .filter(user_row::Column::Email.eq(new.email.as_str()))
        .one(&state.db)
        .await?;
    if taken.is_some() {
        return Err(ApiError::Conflict(format!(
            "a user with the e-mail address {} is already registered",
            new.email
        )));
    }
    let env = UserEnvelope::new(
        user_id,
        UserEvent::Registered {
            profile: UserProfile {
                sub: new.sub.clone(),
                email: Some(new.email.clone()),
                name: Some(new.name.clone()),
            },
            created_by: Some(caller.sub.clone()),
        },
    );
    // The seeds' flow: a new user gets a registration e-mail, as a job like any other.
    // Defaults from the catalogue (a deployment may move the kind to its own queue).
    let def = state.kinds.find(REGISTRATION_KIND);
    let spec = JobSpec {
        kind: REGISTRATION_KIND.to_owned(),
        queue: def
            .and_then(|k| QueueName::parse(&k.queue).ok())
            .unwrap_or_else(|| {
                QueueName::parse(REGISTRATION_QUEUE).unwrap_or_else(|_| QueueName::default_queue())
            }),
        owner: caller.sub.clone(),
        payload: json!({ "to": new.email, "name": new.name, "user_id": user_id }),
        priority: Priority::Normal,
        max_attempts: def.map_or(REGISTRATION_MAX_ATTEMPTS, |k| k.max_attempts),
        timeout_ms: def.map_or(REGISTRATION_TIMEOUT_MS, |k| k.timeout_ms),
        backoff: def.map(|k| k.default_backoff),
        run_at: None,
        idempotency_key: None,
        result_ttl_ms: None,
    };
    let job_id = Uuid::now_v7();
    span.record("job_id", tracing::field::display(job_id));
    let queue = spec.queue.clone();
    let job_env = Envelope::new(job_id, 0, Event::Queued(spec));

    // The user and their registration e-mail job are stored together or not at all (one
    // atomic batch), so no user is left without the mail. The user's subject must still be
    // empty: a second registration of the same id (same sub, or same address without a
    // sub) is refused by the stream itself.
    let mut user_msg = Outgoing::new(env.subject(), env.to_bytes())
        // A retried batch (outcome unknown) is then recognised as stored.
        .with_header("Nats-Msg-Id", &env.event_id.to_string())
        .with_header("Nats-Expected-Last-Subject-Sequence", "0");
    if let Some(rid) = rid {
        user_msg = user_msg.with_header(REQUEST_ID_HEADER, rid);
    }
    let job_msg = Outgoing::event(&job_env, &queue, rid);
    let ack = match state.broker.publish_atomic(vec![user_msg, job_msg]).await {
        Ok(ack) => ack,
        Err(e) if e.is_wrong_last_sequence() => {
            return Err(ApiError::Conflict(match &new.sub {
                Some(_) => "a user with this sub is already registered".to_owned(),
                None => format!(
                    "a user with the e-mail address {} is already registered",
                    new.email
                ),
            }));
        }
        Err(e) => return Err(e.into()),
    };
    let (user_seq, job_seq) = (ack.first_seq, ack.last_seq);
    jobstream_core::metrics::job_enqueued(queue.as_str(), REGISTRATION_KIND, "api");
    state.users.remember(user_id);
    let user = UserState::fold(None, &env, user_seq)
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e)))?;
    let job = JobState::from_queued(&job_env, job_seq)
        .ok_or_else(|| anyhow::anyhow!("queued event did not fold"))?;
    tracing::info!(
        user_seq,
        job_seq,
        "user created; registration e-mail queued"
    );
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/jobs/{job_id}"))],
        Json(CreatedUser {
            user: UserView::from(&user),
            registration_job: JobView::from(&job),
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_and_normalised() {
        assert_eq!(
            validate_email(" Ada@Example.COM "),
            Ok("ada@example.com".into())
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "a@b@c.org",
            "ada@.com",
            "ada@example..com",
        ] {
            assert!(validate_email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bad_fields_are_all_named() {
        let body =
            input::parse_object(json!({"email": "nope", "name": "  ", "sub": 5, "extra": 1}))
                .expect("an object");
        let Err(ApiError::Unprocessable(errs)) = parse_new_user(body) else {
            panic!("expected 422")
        };
        let mut fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["email", "extra", "name", "sub"]);
    }
}
