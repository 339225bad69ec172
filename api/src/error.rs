//! Every error the API returns, as RFC 9457 `application/problem+json`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jobstream_core::catalogue::FieldError;
use serde::Serialize;
use utoipa::ToSchema;

/// Errors of the HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or invalid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// No such resource (or not the caller's).
    #[error("{0}")]
    NotFound(String),
    /// The body is not JSON, or not an object.
    #[error("{0}")]
    BadRequest(String),
    /// The request conflicts with the resource's current state (cancelling a finished job,
    /// a user with this e-mail exists).
    #[error("{0}")]
    Conflict(String),
    /// The body is JSON but a field is invalid.
    #[error("invalid request")]
    Unprocessable(Vec<FieldError>),
    /// The system cannot finish this in bounded time (a queue's backlog is over its
    /// bound): nothing was stored; retry after `retry_after`.
    #[error("{detail}")]
    TooManyRequests {
        /// Which bound, and by how much.
        detail: String,
        /// Sent as `Retry-After` (whole seconds, at least 1).
        retry_after: std::time::Duration,
    },
    /// NATS or the database cannot be reached: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The body is larger than allowed.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body's media type is not accepted (or does not match its bytes).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A bug or an unexpected failure; details are logged, never returned.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The problem document (RFC 9457).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Problem type URI.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Short summary.
    pub title: &'static str,
    /// HTTP status.
    pub status: u16,
    /// Explanation of this occurrence.
    pub detail: String,
    /// Invalid fields, for 422.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
}

/// One invalid field.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemField {
    /// JSON path of the field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ApiError {
    /// A 422 for one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Unprocessable(vec![FieldError::new(field, message)])
    }

    /// The HTTP status of this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound(_) => "Not Found",
            ApiError::BadRequest(_) => "Bad Request",
            ApiError::Conflict(_) => "Conflict",
            ApiError::Unprocessable(_) => "Unprocessable Content",
            ApiError::TooManyRequests { .. } => "Too Many Requests",
            ApiError::Unavailable(_) => "Service Unavailable",
            ApiError::PayloadTooLarge(_) => "Content Too Large",
            ApiError::UnsupportedMediaType(_) => "Unsupported Media Type",
            ApiError::Unexpected(_) => "Internal Server Error",
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        match e {
            sea_orm::DbErr::ConnectionAcquire(_) | sea_orm::DbErr::Conn(_) => {
                ApiError::Unavailable("the database is unreachable; retry later".into())
            }
            other => {
                ApiError::Unexpected(anyhow::Error::new(other).context("database query failed"))
            }
        }
    }
}

impl From<jobstream_core::broker::BrokerError> for ApiError {
    fn from(e: jobstream_core::broker::BrokerError) -> Self {
        use jobstream_core::broker::BrokerError as B;
        tracing::error!(error = %e, "broker error");
        // Only a definite answer from the server may claim "not stored"; a 202 must never
        // hide behind an error, and a client must never be told to resubmit a stored job.
        ApiError::Unavailable(match e {
            B::OutcomeUnknown(_) => "the event stream did not confirm in time: it is unknown whether the request was stored; retry with an Idempotency-Key".into(),
            B::NotStored(_) | B::Publish(_) => {
                "the event stream refuses writes for now; the request was not stored, retry later".into()
            }
            _ => "the event stream is unreachable; retry later".into(),
        })
    }
}

/// Seconds a client should wait before retrying a `503`.
pub const RETRY_AFTER_SECS: u64 = 1;

/// A problem document for any status (framework fallbacks use it too).
pub fn problem_response(
    status: StatusCode,
    title: &'static str,
    detail: String,
    errors: Vec<ProblemField>,
) -> Response {
    let body = Problem {
        kind: "about:blank",
        title,
        status: status.as_u16(),
        detail,
        errors,
    };
    let mut res = (status, Json(body)).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    res
}

/// Largest error body a fallback reads to reuse as its `detail`.
const FALLBACK_DETAIL_BYTES: usize = 4096;

/// Middleware, the last resort: any 4xx/5xx response that is not already a problem
/// document (axum's 405, extractor rejections, the timeout layer's 408, body limits)
/// becomes one, with the same status and headers (`Allow` stays).
pub async fn problem_fallback(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    // The console's error pages are HTML for people, already explained.
    let is_page = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem || is_page {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, FALLBACK_DETAIL_BYTES)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty() && !status.is_server_error());
    let detail = text.unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_owned()
    });
    let title = status.canonical_reason().unwrap_or("Error");
    let fresh = problem_response(status, title, detail, Vec::new());
    parts.headers.remove(header::CONTENT_LENGTH);
    let (fresh_parts, body) = fresh.into_parts();
    for (name, value) in &fresh_parts.headers {
        parts.headers.insert(name.clone(), value.clone());
    }
    Response::from_parts(parts, body)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let detail = match &self {
            ApiError::Unexpected(e) => {
                // Logged inside the request span (request id included); the client gets a generic message.
                tracing::error!(error = ?e, "unexpected error");
                "an unexpected error occurred; it has been logged".to_owned()
            }
            ApiError::Unprocessable(errs) => errs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        };
        let errors = match &self {
            ApiError::Unprocessable(errs) => errs
                .iter()
                .map(|e| ProblemField {
                    field: e.field.clone(),
                    message: e.message.clone(),
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut res = problem_response(status, self.title(), detail, errors);
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::TooManyRequests { retry_after, .. } = &self {
            res.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
        }
        res
    }
}
