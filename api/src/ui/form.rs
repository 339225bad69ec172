//! Form bodies of the console's actions.
//!
//! [`Action`] is what every state-changing console route takes: the session, and a form
//! whose `csrf` field is that session's token. A route cannot forget the check, since
//! without it there is no form to read.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};

use super::{Session, UiError};
use crate::http::RequestId;
use crate::state::AppState;

/// Largest console form body (a bulk action lists up to a page of ids).
const MAX_FORM_BYTES: usize = 256 * 1024;

/// A decoded `application/x-www-form-urlencoded` body; a name may repeat (`id=..&id=..`).
#[derive(Debug, Default)]
pub struct FormFields(Vec<(String, String)>);

impl FormFields {
    /// Decodes a body.
    pub fn parse(body: &[u8]) -> Self {
        FormFields(form_urlencoded::parse(body).into_owned().collect())
    }

    /// The first value of `name`, if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl<S: Send + Sync> FromRequest<S> for FormFields {
    type Rejection = UiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| UiError::Unexpected(anyhow::anyhow!("reading the form: {e}")))?;
        if body.len() > MAX_FORM_BYTES {
            return Err(UiError::Jobs(crate::jobs::JobsError::field(
                "form",
                "too large",
            )));
        }
        Ok(FormFields::parse(&body))
    }
}

/// A console action: a session, its request id, and a form carrying its CSRF token.
#[derive(Debug)]
pub struct Action {
    /// Who acts.
    pub session: Session,
    /// The request's id, copied into the events the action appends.
    pub request_id: RequestId,
    /// The form's fields.
    pub form: FormFields,
}

impl FromRequest<AppState> for Action {
    type Rejection = UiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let request_id = RequestId::from_headers(&parts.headers);
        let form = FormFields::from_request(Request::from_parts(parts, body), state).await?;
        let token = form.get("csrf").unwrap_or_default();
        if !session.csrf_ok(&state.console, token) {
            tracing::warn!("console action refused: missing or wrong CSRF token");
            return Err(UiError::Csrf);
        }
        Ok(Action {
            session,
            request_id,
            form,
        })
    }
}
