//! The request bodies of jobs, each defined once: documented in `/openapi.json` and
//! parsed into (see [`crate::input`]), then validated here into domain types, naming
//! every bad field.

use chrono::{DateTime, Duration as ChronoDuration, SubsecRound, Utc};
use jobstream_core::catalogue::FieldError;
use jobstream_core::event::{JobSpec, Priority, RetryBackoff};
use jobstream_core::kinds::Catalogue;
use jobstream_core::subject::QueueName;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::input::{Field, Unknown};

crate::input::impl_body!(SubmitJob, SubmitBatch, CancelJob);

/// Most attempts a job may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// Longest per-attempt timeout a job may ask for (24 h).
pub const MAX_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// Longest back-off a job may ask for (24 h).
pub const MAX_BACKOFF_MS: u64 = 24 * 3600 * 1000;
/// Longest delay a job may ask for (one year).
pub const MAX_DELAY_MS: u64 = 365 * 24 * 3600 * 1000;
/// Longest idempotency key.
pub const MAX_KEY_LEN: usize = 255;
/// Most jobs in one batch.
pub const MAX_BATCH: usize = 1000;
/// Longest cancellation reason kept.
pub const MAX_REASON_LEN: usize = 1_000;

/// A job submission (`POST /v1/jobs`, and each job of a batch).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// Kind of job, e.g. `echo`.
    #[schema(value_type = String, required = true)]
    pub kind: Option<Field<String>>,
    /// Input of the handler (any JSON).
    #[schema(value_type = Option<Value>)]
    pub payload: Option<Value>,
    /// Queue (letters, digits, `-`, `_`); defaults per kind.
    #[schema(value_type = Option<String>)]
    pub queue: Option<Field<String>>,
    /// `low`, `normal` (default) or `high`.
    #[schema(value_type = Option<String>)]
    pub priority: Option<Field<String>>,
    /// Attempts before the job fails for good (1..=100); defaults per kind.
    #[schema(value_type = Option<u32>)]
    pub max_attempts: Option<Field<u64>>,
    /// Per-attempt deadline in milliseconds; defaults per kind.
    #[schema(value_type = Option<u64>)]
    pub timeout_ms: Option<Field<u64>>,
    /// Run at this time (RFC 3339) instead of now; the job is `scheduled` until then.
    #[schema(value_type = Option<String>)]
    pub run_at: Option<Field<String>>,
    /// Run after this many milliseconds (instead of `run_at`).
    #[schema(value_type = Option<u64>)]
    pub delay_ms: Option<Field<u64>>,
    /// The same key from the same owner yields the same job (or send an `Idempotency-Key` header).
    #[schema(value_type = Option<String>)]
    pub idempotency_key: Option<Field<String>>,
    /// Delay after the first failed attempt, ms (doubles per attempt, ±20 % jitter); defaults per kind.
    #[schema(value_type = Option<u64>)]
    pub backoff_base_ms: Option<Field<u64>>,
    /// Longest delay between attempts, ms; defaults per kind.
    #[schema(value_type = Option<u64>)]
    pub backoff_max_ms: Option<Field<u64>>,
    /// Names sent that are not fields of a submission.
    #[serde(skip)]
    pub unknown: Unknown,
}

/// A batch submission (`POST /v1/jobs/batch`).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBatch {
    /// 1 to 1,000 jobs, each as for `POST /v1/jobs` (without `idempotency_key`:
    /// send an `Idempotency-Key` header for the whole batch).
    #[schema(value_type = Vec<SubmitJob>, required = true)]
    pub jobs: Option<Field<Vec<Value>>>,
    /// Names sent that are not fields of a batch.
    #[serde(skip)]
    pub unknown: Unknown,
}

/// Optional body of a cancellation.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelJob {
    /// Why (kept as the job's error), at most 1,000 characters.
    #[schema(value_type = Option<String>)]
    pub reason: Option<Field<String>>,
    /// Names sent that are not fields of a cancellation.
    #[serde(skip)]
    pub unknown: Unknown,
}

impl CancelJob {
    /// The reason, checked.
    pub(crate) fn validate(self) -> Result<Option<String>, Vec<FieldError>> {
        let mut errors = Vec::new();
        let expected = format!("must be a string of at most {MAX_REASON_LEN} characters");
        let reason = self
            .reason
            .and_then(|r| r.check("reason", &expected, &mut errors))
            .and_then(|r| {
                if r.chars().count() <= MAX_REASON_LEN {
                    Some(r)
                } else {
                    errors.push(FieldError::new("reason", expected.clone()));
                    None
                }
            });
        self.unknown.report(&mut errors);
        if errors.is_empty() {
            Ok(reason)
        } else {
            Err(errors)
        }
    }
}

/// An optional field checked by `parse`, which names what is expected on failure.
fn checked<F, T>(
    field: Option<Field<F>>,
    name: &str,
    errors: &mut Vec<FieldError>,
    parse: impl FnOnce(Option<F>) -> Result<T, String>,
) -> Option<T> {
    let value = match field? {
        Field::Valid(v) => Some(v),
        Field::Invalid(_) => None,
    };
    match parse(value) {
        Ok(t) => Some(t),
        Err(message) => {
            errors.push(FieldError::new(name, message));
            None
        }
    }
}

/// A number in `range`, or the message naming the range.
fn in_range(v: Option<u64>, lo: u64, hi: u64) -> Result<u64, String> {
    v.filter(|n| (lo..=hi).contains(n))
        .ok_or_else(|| format!("must be an integer from {lo} to {hi}"))
}

/// Checks an idempotency key (body field or header).
pub(crate) fn validate_key(k: &str) -> Result<(), String> {
    if k.is_empty() || k.len() > MAX_KEY_LEN {
        return Err(format!("must be 1 to {MAX_KEY_LEN} characters"));
    }
    if k.chars().any(|c| c.is_control()) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

impl SubmitJob {
    /// Validates the submission of `owner` against the kinds catalogue into a job spec,
    /// naming every bad field.
    pub fn validate(self, owner: &str, kinds: &Catalogue) -> Result<JobSpec, Vec<FieldError>> {
        self.validate_except(owner, kinds, &[])
    }

    /// Like [`validate`](Self::validate), but the payload fields at `unchecked` (and under
    /// them) are not checked against the kind's schema: a workflow step's references,
    /// which hold their values only once the steps they name have run.
    pub fn validate_except(
        self,
        owner: &str,
        kinds: &Catalogue,
        unchecked: &[String],
    ) -> Result<JobSpec, Vec<FieldError>> {
        let mut errors = Vec::new();
        let kind = match self.kind {
            Some(Field::Valid(k)) => match kinds.find(&k) {
                Some(spec) => Some(spec),
                None => {
                    errors.push(FieldError::new(
                        "kind",
                        format!(
                            "unknown kind {k:?}; known kinds: {}",
                            kinds.names().join(", ")
                        ),
                    ));
                    None
                }
            },
            Some(Field::Invalid(_)) => {
                errors.push(FieldError::new("kind", "must be a string"));
                None
            }
            None => {
                errors.push(FieldError::new("kind", "required"));
                None
            }
        };
        let payload = self.payload.unwrap_or(Value::Null);
        let queue = checked(self.queue, "queue", &mut errors, |v| {
            let s = v.ok_or("must be a string")?;
            QueueName::parse(&s).map_err(|e| e.to_string())
        });
        let priority = checked(self.priority, "priority", &mut errors, |v| {
            v.as_deref()
                .and_then(Priority::parse)
                .ok_or_else(|| "must be one of low, normal, high".to_owned())
        });
        let max_attempts = checked(self.max_attempts, "max_attempts", &mut errors, |v| {
            in_range(v, 1, u64::from(MAX_ATTEMPTS_LIMIT))
                .map(|n| u32::try_from(n).unwrap_or(MAX_ATTEMPTS_LIMIT))
        });
        let timeout_ms = checked(self.timeout_ms, "timeout_ms", &mut errors, |v| {
            in_range(v, 1, MAX_TIMEOUT_MS)
        });
        let run_at = run_at(self.run_at, self.delay_ms, &mut errors);
        let idempotency_key = checked(self.idempotency_key, "idempotency_key", &mut errors, |v| {
            let k = v.ok_or("must be a string")?;
            validate_key(&k).map(|()| k)
        });
        let backoff_base_ms = checked(self.backoff_base_ms, "backoff_base_ms", &mut errors, |v| {
            in_range(v, 1, MAX_BACKOFF_MS)
        });
        let backoff_max_ms = checked(self.backoff_max_ms, "backoff_max_ms", &mut errors, |v| {
            in_range(v, 1, MAX_BACKOFF_MS)
        });
        if let (Some(base), Some(max)) = (backoff_base_ms, backoff_max_ms)
            && base > max
        {
            errors.push(FieldError::new(
                "backoff_max_ms",
                "must be at least backoff_base_ms",
            ));
        }
        self.unknown.report(&mut errors);
        if let Some(k) = kind
            && let Err(e) = kinds.validate(&k.name, &payload)
        {
            errors.extend(e.into_iter().filter(|e| {
                !unchecked
                    .iter()
                    .any(|u| e.field == *u || e.field.starts_with(&format!("{u}.")))
            }));
        }
        match kind {
            Some(k) if errors.is_empty() => Ok(JobSpec {
                kind: k.name.clone(),
                queue: queue.unwrap_or_else(|| {
                    QueueName::parse(&k.queue).unwrap_or_else(|_| QueueName::default_queue())
                }),
                owner: owner.to_owned(),
                payload,
                priority: priority.unwrap_or_default(),
                max_attempts: max_attempts.unwrap_or(k.max_attempts),
                timeout_ms: timeout_ms.unwrap_or(k.timeout_ms),
                run_at,
                idempotency_key,
                result_ttl_ms: None,
                backoff: Some(RetryBackoff {
                    base_ms: backoff_base_ms.unwrap_or(k.default_backoff.base_ms),
                    max_ms: backoff_max_ms
                        .unwrap_or(k.default_backoff.max_ms)
                        .max(backoff_base_ms.unwrap_or(0)),
                }),
            }),
            _ => Err(errors),
        }
    }
}

/// When to run, from `run_at` or `delay_ms` (at most one, at most a year ahead).
fn run_at(
    run_at: Option<Field<String>>,
    delay_ms: Option<Field<u64>>,
    errors: &mut Vec<FieldError>,
) -> Option<DateTime<Utc>> {
    let now = jobstream_core::event::now();
    let run_at = checked(run_at, "run_at", errors, |v| {
        let s = v.ok_or("must be an RFC 3339 string")?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc).trunc_subsecs(6))
            .map_err(|e| format!("must be an RFC 3339 time like 2026-01-02T15:04:05Z ({e})"))
    });
    let delay_ms = checked(delay_ms, "delay_ms", errors, |v| {
        in_range(v, 0, MAX_DELAY_MS)
    });
    match (run_at, delay_ms) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                "delay_ms",
                "give either run_at or delay_ms, not both",
            ));
            None
        }
        (Some(t), None) if t > now + ChronoDuration::milliseconds(MAX_DELAY_MS as i64) => {
            errors.push(FieldError::new(
                "run_at",
                "must be at most one year from now",
            ));
            None
        }
        (Some(t), None) => Some(t),
        (None, Some(ms)) => Some(now + ChronoDuration::milliseconds(ms as i64)),
        (None, None) => None,
    }
}

impl SubmitBatch {
    /// Validates every job of the batch of `owner`, naming bad fields as `jobs[i].field`.
    pub fn validate(self, owner: &str, kinds: &Catalogue) -> Result<Vec<JobSpec>, Vec<FieldError>> {
        let mut errors = Vec::new();
        self.unknown.report(&mut errors);
        let jobs = match self.jobs {
            Some(Field::Valid(jobs)) => jobs,
            Some(Field::Invalid(_)) => {
                errors.push(FieldError::new("jobs", "must be an array of jobs"));
                return Err(errors);
            }
            None => {
                errors.push(FieldError::new("jobs", "required"));
                return Err(errors);
            }
        };
        if jobs.is_empty() || jobs.len() > MAX_BATCH {
            errors.push(FieldError::new(
                "jobs",
                format!("must hold 1 to {MAX_BATCH} jobs (found {})", jobs.len()),
            ));
            return Err(errors);
        }
        let mut specs = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.into_iter().enumerate() {
            let prefix = |field: &str| format!("jobs[{i}].{field}");
            let job = match crate::input::parse_object::<SubmitJob>(job) {
                Ok(job) => job,
                Err(crate::input::BodyError::NotObject) => {
                    errors.push(FieldError::new(
                        format!("jobs[{i}]"),
                        "must be a JSON object",
                    ));
                    continue;
                }
                Err(crate::input::BodyError::Fields(errs)) => {
                    errors.extend(
                        errs.into_iter()
                            .map(|e| FieldError::new(prefix(&e.field), e.message)),
                    );
                    continue;
                }
            };
            if job.idempotency_key.is_some() {
                errors.push(FieldError::new(
                    prefix("idempotency_key"),
                    "not supported per job in a batch; send an Idempotency-Key header for the whole batch",
                ));
                continue;
            }
            match job.validate(owner, kinds) {
                Ok(spec) => specs.push(spec),
                Err(errs) => errors.extend(
                    errs.into_iter()
                        .map(|e| FieldError::new(prefix(&e.field), e.message)),
                ),
            }
        }
        if errors.is_empty() {
            Ok(specs)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::parse_object;
    use serde_json::json;

    fn fields(body: Value) -> Vec<String> {
        let job: SubmitJob = parse_object(body).unwrap();
        match job.validate("alice", &Catalogue::builtin()) {
            Ok(_) => Vec::new(),
            Err(errs) => errs.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(
            fields(json!({"run_at": "tomorrow", "idempotency_key": "", "kind": "echo"})),
            ["run_at", "idempotency_key"]
        );
        assert_eq!(
            fields(json!({"kind": "echo", "run_at": "2026-01-01T00:00:00Z", "delay_ms": 5})),
            ["delay_ms"]
        );
        assert_eq!(
            fields(json!({"kind": 5, "queue": "a.b", "max_attempts": 1.5, "colour": 1})),
            ["kind", "queue", "max_attempts", "colour"]
        );
        assert!(fields(json!({"kind": "echo", "payload": null, "queue": null})).is_empty());
    }
}
