//! Who is calling: the caller a verified token stands for, its roles, and the extractor
//! that takes it from the `Authorization` header.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::state::AppState;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The `sub` claim.
    pub sub: String,
    /// Admins see every job.
    pub is_admin: bool,
    /// The `name` claim, when present.
    pub name: Option<String>,
    /// The `email` claim, when present (and not marked `email_verified: false`).
    pub email: Option<String>,
}

impl Caller {
    /// Whether the caller may see a job owned by `owner`.
    pub fn may_see(&self, owner: &str) -> bool {
        self.is_admin || self.sub == owner
    }

    /// `403` unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this route needs the admin role".into(),
            ))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::Unauthorized("missing Authorization: Bearer <token> header".into())
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                ApiError::Unauthorized("Authorization header must be 'Bearer <token>'".into())
            })?;
        let caller = state.verifier.verify(token.trim())?;
        tracing::Span::current().record("sub", caller.sub.as_str());
        // A user's first authenticated request registers them (once; see `users`).
        let request_id = crate::http::RequestId::from_headers(&parts.headers);
        crate::users::ensure_registered(state, &caller, request_id.as_deref()).await;
        Ok(caller)
    }
}
