//! The W3C `traceparent` a client sends with a submission: the job joins the client's trace.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jobstream_core::event::TRACEPARENT_HEADER;
use jobstream_core::trace::TraceParent;

/// The request's valid `traceparent`, if any. A malformed one is ignored, never refused:
/// the job then starts its own trace (see [`jobstream_core::trace`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientTrace(pub Option<TraceParent>);

impl<S: Send + Sync> FromRequestParts<S> for ClientTrace {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let trace = parts
            .headers
            .get(TRACEPARENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse);
        if let Some(t) = &trace {
            tracing::Span::current().record("trace_id", tracing::field::display(t.trace_id()));
        }
        Ok(ClientTrace(trace))
    }
}
