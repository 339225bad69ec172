//! The catalogue of job kinds a user may submit, with their defaults and
//! payload checks. The API validates submissions against it; workers register
//! a handler for each kind they run.

use serde::Serialize;
use serde_json::Value;

use crate::event::RetryBackoff;

/// Back-off of kinds that name none: 1 s after the first failure, doubling, at most 5 min.
pub const DEFAULT_BACKOFF: RetryBackoff = RetryBackoff {
    base_ms: 1_000,
    max_ms: 300_000,
};

/// Defaults and description of one job kind.
#[derive(Debug, Clone, Serialize)]
pub struct KindSpec {
    /// Stable kind name used on the wire.
    pub name: &'static str,
    /// What the kind does.
    pub description: &'static str,
    /// Queue used when the submission names none.
    pub default_queue: &'static str,
    /// Attempts used when the submission names none.
    pub default_max_attempts: u32,
    /// Per-attempt deadline used when the submission names none, in milliseconds.
    pub default_timeout_ms: u64,
    /// Back-off between attempts when the submission names none.
    pub default_backoff: RetryBackoff,
}

/// A payload field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// JSON path of the field, e.g. `payload.ms`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A new field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Longest a `sleep` job may sleep (one hour).
pub const MAX_SLEEP_MS: u64 = 3_600_000;

/// The built-in kinds: for tests, benchmarks and smoke checks.
pub const BUILTIN: &[KindSpec] = &[
    KindSpec {
        name: "echo",
        description: "Returns its payload as its result.",
        default_queue: "default",
        default_max_attempts: 3,
        default_timeout_ms: 60_000,
        default_backoff: DEFAULT_BACKOFF,
    },
    KindSpec {
        name: "sleep",
        description: "Sleeps for payload.ms milliseconds, then returns {\"slept_ms\": ms}.",
        default_queue: "default",
        default_max_attempts: 3,
        default_timeout_ms: MAX_SLEEP_MS + 60_000,
        default_backoff: DEFAULT_BACKOFF,
    },
    KindSpec {
        name: "fail",
        description: "Fails the first payload.times attempts, then succeeds with {\"attempts\": n}.",
        default_queue: "default",
        default_max_attempts: 3,
        default_timeout_ms: 60_000,
        // Quick retries: this kind exists to exercise the retry machinery.
        default_backoff: RetryBackoff {
            base_ms: 100,
            max_ms: 2_000,
        },
    },
    KindSpec {
        name: "email.send",
        description: "Sends an e-mail (text and/or HTML) over SMTP, or into the development mailbox folder.",
        default_queue: "default",
        default_max_attempts: 5,
        default_timeout_ms: 60_000,
        default_backoff: DEFAULT_BACKOFF,
    },
    KindSpec {
        name: "email.registration",
        description: "Sends the registration (welcome) e-mail to a newly created user.",
        default_queue: "default",
        default_max_attempts: 5,
        default_timeout_ms: 60_000,
        default_backoff: DEFAULT_BACKOFF,
    },
    KindSpec {
        name: "image.thumbnail",
        description: "Resizes an uploaded image (see POST /v1/files) to fit width x height and stores the thumbnail as a new file.",
        default_queue: "default",
        default_max_attempts: 3,
        default_timeout_ms: 120_000,
        default_backoff: DEFAULT_BACKOFF,
    },
    KindSpec {
        name: "http.request",
        description: "Calls an HTTP(S) URL (a webhook); retried on 5xx and network errors, failed on 4xx.",
        default_queue: "default",
        default_max_attempts: 5,
        default_timeout_ms: 60_000,
        default_backoff: DEFAULT_BACKOFF,
    },
];

/// Looks up a kind by name.
pub fn find(name: &str) -> Option<&'static KindSpec> {
    BUILTIN.iter().find(|k| k.name == name)
}

/// Checks a payload against its kind's expectations.
pub fn validate_payload(kind: &str, payload: &Value) -> Result<(), FieldError> {
    match kind {
        "sleep" => {
            let ms = payload.get("ms").and_then(Value::as_u64).ok_or_else(|| {
                FieldError::new(
                    "payload.ms",
                    "required: a non-negative integer of milliseconds",
                )
            })?;
            if ms > MAX_SLEEP_MS {
                return Err(FieldError::new(
                    "payload.ms",
                    format!("must be at most {MAX_SLEEP_MS}"),
                ));
            }
            Ok(())
        }
        "fail" => payload
            .get("times")
            .and_then(Value::as_u64)
            .map(|_| ())
            .ok_or_else(|| FieldError::new("payload.times", "required: a non-negative integer")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payload_checks_name_the_field() {
        assert_eq!(
            validate_payload("sleep", &json!({})).unwrap_err().field,
            "payload.ms"
        );
        assert_eq!(
            validate_payload("sleep", &json!({"ms": -1}))
                .unwrap_err()
                .field,
            "payload.ms"
        );
        assert!(validate_payload("sleep", &json!({"ms": 5})).is_ok());
        assert_eq!(
            validate_payload("fail", &json!({"times": "x"}))
                .unwrap_err()
                .field,
            "payload.times"
        );
        assert!(validate_payload("echo", &json!(null)).is_ok());
        assert!(find("echo").is_some() && find("nope").is_none());
    }
}
