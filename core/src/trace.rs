//! One trace per job: the W3C trace context (`traceparent`) every event of a job carries
//! in its NATS headers, so the api, worker and projector log lines of a job share one
//! `trace_id`. Pure, no I/O.
//!
//! - A client's `traceparent` on a submission is kept: the job joins the client's trace.
//! - Without one (or with a malformed one, which is ignored, never refused), the job starts
//!   its own trace whose id is the job id's 128 bits. So a reader of an event that lost its
//!   header (a message fired by a periodic schedule, an event written before traces
//!   existed) derives the same trace id, and a replay gives the same `trace_id` column.
//! - Each process that appends an event of the job writes the job's trace id with a span
//!   id of its own ([`TraceParent::child`]).

use std::fmt;

use async_nats::HeaderMap;
use uuid::Uuid;

use crate::event::{REQUEST_ID_HEADER, TRACEPARENT_HEADER};

/// A parsed W3C `traceparent` (version `00`): trace id, parent span id and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

/// The `sampled` trace flag.
const SAMPLED: u8 = 0x01;

impl TraceParent {
    /// Parses a `traceparent` header value; `None` when it is not a valid W3C trace
    /// context (wrong shape, upper-case hex, an all-zero id, version `ff`). A version
    /// above `00` is read by its first four fields, as the W3C spec asks.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let lower_hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !lower_hex(version, 2)
            || version == "ff"
            || !lower_hex(trace, 32)
            || !lower_hex(span, 16)
            || !lower_hex(flags, 2)
            || (version == "00" && parts.next().is_some())
        {
            return None;
        }
        let tp = TraceParent {
            trace_id: u128::from_str_radix(trace, 16).ok()?,
            span_id: u64::from_str_radix(span, 16).ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (tp.trace_id != 0 && tp.span_id != 0).then_some(tp)
    }

    /// The trace a job starts when nobody gave it one: the job id's bits; sampled only
    /// when this process exports spans ([`crate::telemetry::exporting`]).
    ///
    /// The flag says whether anyone records the trace, and without an exporter nobody
    /// does. It also costs: nats-server parses every header of a message whose
    /// `traceparent` is sampled into a map, for its own message tracing (about 6 % of
    /// its CPU per job when every event carried one). Our processes join a job's trace
    /// whatever its flag says ([`crate::telemetry::join_trace`]), and a client's
    /// `traceparent` keeps the client's flag.
    pub fn for_job(job_id: Uuid) -> Self {
        TraceParent {
            trace_id: TraceId::of_job(job_id).0,
            span_id: new_span_id(),
            flags: if crate::telemetry::exporting() {
                SAMPLED
            } else {
                0
            },
        }
    }

    /// The job's trace context from an event's headers: the `traceparent` when it is
    /// valid, else the job's own trace ([`TraceParent::for_job`]).
    pub fn of_event(headers: Option<&HeaderMap>, job_id: Uuid) -> Self {
        headers
            .and_then(|h| h.get(TRACEPARENT_HEADER))
            .and_then(|v| TraceParent::parse(v.as_str()))
            .unwrap_or_else(|| TraceParent::for_job(job_id))
    }

    /// The same trace, with a new span id: what a process writes on the events it appends.
    pub fn child(&self) -> Self {
        TraceParent {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// The trace id, 32 lower-case hex digits (the `trace_id` of log lines and of the job).
    pub fn trace_id(&self) -> TraceId {
        TraceId(self.trace_id)
    }

    /// The trace id's 16 bytes (big-endian, as on the wire).
    pub fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id.to_be_bytes()
    }

    /// The span id's 8 bytes (big-endian, as on the wire).
    pub fn span_id_bytes(&self) -> [u8; 8] {
        self.span_id.to_be_bytes()
    }
}

/// A random non-zero span id.
fn new_span_id() -> u64 {
    rand::random::<u64>().max(1)
}

impl fmt::Display for TraceParent {
    /// The `traceparent` header value: `00-<trace id>-<span id>-<flags>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

/// A trace id; displays as 32 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(u128);

impl TraceId {
    /// The trace id of a job that started its own trace ([`TraceParent::for_job`]).
    pub fn of_job(job_id: Uuid) -> Self {
        TraceId(job_id.as_u128().max(1))
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// What ties an appended event to the request and the trace it belongs to: written as
/// the event's `Jobstream-Request-Id` and `traceparent` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correlation {
    /// The request that caused the event (the submission's, for a worker's events).
    pub request_id: Option<String>,
    /// The job's trace, with the appending process's span id.
    pub trace: TraceParent,
}

impl Correlation {
    /// The correlation a reader of a job's event continues: the event's request id and
    /// trace (or the job's own trace), with a span id of this process.
    pub fn of_event(headers: Option<&HeaderMap>, job_id: Uuid) -> Self {
        Correlation {
            request_id: headers
                .and_then(|h| h.get(REQUEST_ID_HEADER))
                .map(|v| v.as_str().to_owned()),
            trace: TraceParent::of_event(headers, job_id).child(),
        }
    }

    /// Writes the headers.
    pub fn write(&self, headers: &mut HeaderMap) {
        if let Some(rid) = &self.request_id {
            headers.insert(REQUEST_ID_HEADER, rid.as_str());
        }
        headers.insert(TRACEPARENT_HEADER, self.trace.to_string().as_str());
    }

    /// The request id, if any.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_trace_is_sampled_only_when_spans_are_exported_and_a_client_keeps_its_flag() {
        // No exporter in unit tests: nobody records the job's own trace.
        assert!(!crate::telemetry::exporting());
        let own = TraceParent::for_job(Uuid::now_v7());
        assert!(own.to_string().ends_with("-00"), "{own}");
        assert_eq!(TraceParent::parse(&own.to_string()), Some(own));
        let client = TraceParent::parse(EXAMPLE).unwrap();
        assert!(client.child().to_string().ends_with("-01"));
    }

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_w3c_example_round_trips() {
        let tp = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(tp.to_string(), EXAMPLE);
        assert_eq!(
            tp.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let child = tp.child();
        assert_eq!(child.trace_id(), tp.trace_id());
        assert_ne!(child.span_id_bytes(), tp.span_id_bytes());
    }

    #[test]
    fn malformed_values_are_ignored() {
        for bad in [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A later version is read by its first four fields.
        assert!(TraceParent::parse(&format!("01{}-more", &EXAMPLE[2..])).is_some());
    }

    #[test]
    fn a_job_without_a_header_has_its_ids_trace() {
        let job = Uuid::now_v7();
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT_HEADER, "not a trace");
        let from_bad = TraceParent::of_event(Some(&h), job);
        assert_eq!(
            from_bad.trace_id(),
            TraceParent::of_event(None, job).trace_id()
        );
        assert_eq!(from_bad.trace_id().to_string(), job.simple().to_string());
    }
}
