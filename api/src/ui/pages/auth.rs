//! `/ui/login` and `/ui/logout`.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::state::AppState;
use crate::ui::form::{Action, FormFields};
use crate::ui::session::{self, Session};
use crate::ui::{UiError, assets, render};

/// The login page.
#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    assets: String,
    error: Option<String>,
}

/// `GET /ui/login`.
pub(super) async fn form() -> Result<Response, UiError> {
    login_page(StatusCode::OK, None)
}

fn login_page(status: StatusCode, error: Option<String>) -> Result<Response, UiError> {
    let page = LoginPage {
        assets: assets::base(),
        error,
    };
    Ok((status, render(&page)?).into_response())
}

/// `POST /ui/login` with the form field `token`: verifies it as the REST API does and
/// starts a session. The token is neither stored nor logged.
#[tracing::instrument(skip_all, fields(sub = tracing::field::Empty))]
pub(super) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: FormFields,
) -> Result<Response, UiError> {
    // Login CSRF (a foreign page logging the browser into another account): a browser
    // names the page a POST comes from; it must be this origin.
    if !same_origin(&headers) {
        tracing::warn!("console login refused: cross-origin form");
        return Err(UiError::Csrf);
    }
    let Some(token) = form.get("token").map(str::trim) else {
        return login_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("Give a token.".into()),
        );
    };
    let caller = match state.verifier.verify(token) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(error = %e, "console login refused");
            return login_page(StatusCode::UNAUTHORIZED, Some(e.to_string()));
        }
    };
    tracing::Span::current().record("sub", caller.sub.as_str());
    let request_id = crate::http::RequestId::from_headers(&headers);
    crate::users::ensure_registered(&state, &caller, request_id.as_deref()).await;
    let session = Session::start(&caller, session::token_exp(token));
    tracing::info!(admin = session.admin, "console session started");
    Ok((
        [(
            header::SET_COOKIE,
            session.set_cookie(&state.console, &headers),
        )],
        Redirect::to("/ui"),
    )
        .into_response())
}

/// `POST /ui/logout`: ends the session (the cookie is cleared).
pub(super) async fn logout(headers: HeaderMap, action: Action) -> Response {
    tracing::info!(sub = action.session.sub.as_str(), "console session ended");
    (
        [(header::SET_COOKIE, session::clear_cookie(&headers))],
        Redirect::to("/ui/login"),
    )
        .into_response()
}

/// Whether a form POST comes from this origin: `Origin` (or, without it, `Referer`)
/// names the `Host`; a request naming neither is not from a browser page.
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|h| h.to_str().ok());
    match (source, host) {
        (Some(src), Some(host)) => {
            let rest = src
                .strip_prefix("http://")
                .or_else(|| src.strip_prefix("https://"))
                .unwrap_or("");
            rest.split('/').next() == Some(host)
        }
        (None, _) => true,
        (Some(_), None) => false,
    }
}
