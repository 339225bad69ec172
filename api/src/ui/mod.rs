//! The operator's console at `/ui`: server-rendered pages (askama templates in
//! `api/templates/`) enhanced by vendored htmx, readable with JavaScript off.
//!
//! Every page calls the same services as the REST API ([`crate::jobs::JobService`] …);
//! nothing here decides anything about jobs.
//!
//! ## Layout
//! - [`session`]: the signed session cookie and its CSRF token.
//! - [`sql`]: read-only SQL for the data pages.
//! - [`form`]: the form body every action posts, with its CSRF check.
//! - [`assets`]: vendored htmx, its SSE extension and the stylesheet, served under a
//!   content-hashed path.
//! - [`live`]: `GET /ui/live`, one SSE connection per page that says "changed" at most
//!   four times a second; the page then re-fetches the parts that show live data.
//! - `pages/`: one module per page (login, overview, jobs, job, queues and workers,
//!   schedules, kinds, users, events, operations, data).

pub mod assets;
pub mod form;
pub mod live;
mod pages;
pub mod session;
pub mod sql;

use askama::Template;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::jobs::JobsError;
use crate::state::AppState;
pub use session::{ConsoleKey, Session};

/// The Content-Security-Policy of every console page: nothing but this origin.
pub const CSP: &str = "default-src 'self'; frame-ancestors 'none'";

/// The console's routes (`/ui/...`), with its security headers.
pub fn router() -> Router<AppState> {
    let pages = pages::router()
        .route("/ui/live", get(live::changes))
        .layer(axum::middleware::map_response(page_headers));
    Router::new()
        .merge(pages)
        .route("/ui/assets/{hash}/{name}", get(assets::serve))
        .route("/", get(|| async { Redirect::to("/ui") }))
}

/// CSP on every page; pages hold one user's data, so no shared cache keeps them.
async fn page_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

/// What every page shows around its content: who is logged in, the navigation, the
/// CSRF token for its forms, where the assets are.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// The logged-in `sub`.
    pub user: String,
    /// Admin pages are linked.
    pub admin: bool,
    /// The session's CSRF token, put in every form.
    pub csrf: String,
    /// The current section, highlighted in the navigation.
    pub nav: &'static str,
    /// `/ui/assets/<hash>`.
    pub assets: String,
}

impl Chrome {
    /// The chrome of a page in section `nav`.
    pub fn new(session: &Session, key: &ConsoleKey, nav: &'static str) -> Self {
        Chrome {
            user: session.sub.clone(),
            admin: session.admin,
            csrf: session.csrf(key),
            nav,
            assets: assets::base(),
        }
    }
}

/// Why a console request failed: each becomes an HTML page (or a redirect to log in).
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// No valid session: go to the login page.
    #[error("log in first")]
    LoginRequired,
    /// An admin page, or a CSRF token that does not belong to the session.
    #[error("forbidden")]
    Forbidden,
    /// The action's CSRF token is missing or wrong.
    #[error("the form's CSRF token is missing or wrong; reload the page and try again")]
    Csrf,
    /// What the service said.
    #[error(transparent)]
    Jobs(#[from] JobsError),
    /// What a REST route's function said (the pages that reuse one).
    #[error(transparent)]
    Api(#[from] crate::error::ApiError),
    /// The database could not be read.
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
    /// A bug or an unexpected failure; logged, never shown.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The error page.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    assets: String,
    status: u16,
    title: String,
    detail: String,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        if let UiError::LoginRequired = self {
            return Redirect::to("/ui/login").into_response();
        }
        let (status, detail) = match &self {
            UiError::Forbidden => (StatusCode::FORBIDDEN, "this page is for admins".to_owned()),
            UiError::Csrf => (StatusCode::FORBIDDEN, self.to_string()),
            UiError::Jobs(JobsError::Invalid(errors)) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            UiError::Jobs(JobsError::NotFound(m)) => (StatusCode::NOT_FOUND, m.clone()),
            UiError::Jobs(JobsError::Conflict(m)) => (StatusCode::CONFLICT, m.clone()),
            UiError::Jobs(JobsError::Busy(m)) => (StatusCode::SERVICE_UNAVAILABLE, m.clone()),
            UiError::Jobs(JobsError::Overloaded { reason, .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, reason.clone())
            }
            UiError::Api(e) if !e.status_code().is_server_error() => {
                (e.status_code(), e.to_string())
            }
            other => {
                // Logged inside the request span (request id included); the page stays generic.
                tracing::error!(error = ?other, "console request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "an unexpected error occurred; it has been logged".to_owned(),
                )
            }
        };
        let page = ErrorPage {
            assets: assets::base(),
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            detail,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => status.into_response(),
        }
    }
}

impl From<crate::queues::QueuesError> for UiError {
    fn from(e: crate::queues::QueuesError) -> Self {
        UiError::Api(e.into())
    }
}

/// Renders a template into a page.
pub(crate) fn render(t: &impl Template) -> Result<Html<String>, UiError> {
    t.render()
        .map(Html)
        .map_err(|e| UiError::Unexpected(anyhow::anyhow!("template: {e}")))
}
