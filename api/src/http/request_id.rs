//! The `x-request-id` of a request: set (or kept) by the server's `SetRequestIdLayer`,
//! echoed in the response, and copied into the events a request appends.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, when it has a readable one (the server sets one on every request).
#[derive(Debug, Clone, Default)]
pub struct RequestId(pub Option<String>);

impl RequestId {
    /// Reads the id from request headers.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        RequestId(
            headers
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        )
    }

    /// The id as a string slice.
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestId::from_headers(&parts.headers))
    }
}
