//! Subjects of the `JOBS` stream: `jobs.<queue>.<job_id>.<event>`.
//!
//! Every token that goes into a subject is validated here, so a queue name can
//! never smuggle a `.`, `*` or `>` into a subject and widen a filter.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::EventType;

/// Prefix of every job event subject.
pub const PREFIX: &str = "jobs";

/// Why a subject token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The token is empty.
    #[error("must not be empty")]
    Empty,
    /// The token is longer than allowed.
    #[error("must be at most {max} characters")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// The token contains a character outside `[A-Za-z0-9_-]`.
    #[error("may contain only letters, digits, '-' and '_' (found {0:?})")]
    BadChar(char),
}

/// Checks a subject token: 1..=64 of `[A-Za-z0-9_-]`, so never `.`, `*`, `>` or whitespace.
pub fn validate_token(token: &str) -> Result<(), TokenError> {
    const MAX: usize = 64;
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    if token.len() > MAX {
        return Err(TokenError::TooLong { max: MAX });
    }
    match token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        Some(c) => Err(TokenError::BadChar(c)),
        None => Ok(()),
    }
}

/// A validated queue name (a subject token).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueName(String);

impl QueueName {
    /// The queue jobs go to when none is given.
    pub fn default_queue() -> Self {
        QueueName("default".to_owned())
    }

    /// Parses a queue name, refusing anything that is not a safe subject token.
    pub fn parse(name: &str) -> Result<Self, TokenError> {
        validate_token(name)?;
        Ok(QueueName(name.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for QueueName {
    type Error = TokenError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        validate_token(&value)?;
        Ok(QueueName(value))
    }
}

impl From<QueueName> for String {
    fn from(q: QueueName) -> String {
        q.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Subject of one event of one job.
pub fn job_event(queue: &QueueName, job_id: Uuid, event: EventType) -> String {
    format!("{PREFIX}.{queue}.{job_id}.{}", event.as_str())
}

/// Filter for the `queued` events of one queue (what a worker consumes).
pub fn queued_in(queue: &QueueName) -> String {
    format!("{PREFIX}.{queue}.*.{}", EventType::Queued.as_str())
}

/// Filter for every event of one job, whatever its queue.
pub fn of_job(job_id: Uuid) -> String {
    format!("{PREFIX}.*.{job_id}.*")
}

/// Filter for every job event (what the projector consumes).
pub fn all_events() -> String {
    format!("{PREFIX}.>")
}

/// The parts of a job event subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSubject<'a> {
    /// The queue token.
    pub queue: &'a str,
    /// The job id token.
    pub job_id: &'a str,
    /// The event token.
    pub event: &'a str,
}

/// Splits a job event subject into its parts; `None` if it does not have the shape.
pub fn parse(subject: &str) -> Option<ParsedSubject<'_>> {
    let mut parts = subject.split('.');
    let (prefix, queue, job_id, event) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if prefix != PREFIX || parts.next().is_some() {
        return None;
    }
    Some(ParsedSubject {
        queue,
        job_id,
        event,
    })
}

/// Subject prefix of delayed-job timers (messages held by nats-server's scheduler, not events).
pub const TIMERS_PREFIX: &str = "timers";
/// Subject prefix of idempotency records (one per owner and key).
pub const IDEMPOTENCY_PREFIX: &str = "idem";

/// Subject of the timer that produces a delayed job's `queued` event at its `run_at`.
pub fn timer(queue: &QueueName, job_id: Uuid) -> String {
    format!("{TIMERS_PREFIX}.{queue}.{job_id}")
}

/// Subject of the idempotency record of `owner`'s `key` (hashed: any key, never a collision between owners).
pub fn idempotency(owner: &str, key: &str) -> String {
    let hash = crate::schedule::hash_hex(&["idempotency", owner, key], 16);
    format!("{IDEMPOTENCY_PREFIX}.{hash}")
}

/// Every subject the stream holds: job events, schedules, timers, idempotency records.
pub fn stream_subjects() -> Vec<String> {
    vec![
        all_events(),
        crate::schedule::all_subjects(),
        format!("{TIMERS_PREFIX}.>"),
        format!("{IDEMPOTENCY_PREFIX}.>"),
        crate::user::all_user_events(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_refuse_wildcards_dots_and_whitespace() {
        for bad in ["a.b", "*", ">", "a b", "a\tb", "", "é"] {
            assert!(validate_token(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["default", "emails-high", "q_1"] {
            assert_eq!(validate_token(good), Ok(()));
        }
        assert!(validate_token(&"x".repeat(65)).is_err());
    }

    #[test]
    fn subjects_round_trip() {
        let q = QueueName::parse("mail").unwrap();
        let id = Uuid::now_v7();
        let s = job_event(&q, id, EventType::Succeeded);
        let p = parse(&s).unwrap();
        assert_eq!((p.queue, p.event), ("mail", "succeeded"));
        assert_eq!(p.job_id, id.to_string());
        assert_eq!(queued_in(&q), "jobs.mail.*.queued");
    }
}
