//! Reading stored stream messages: the ONE place a message of the `JOBS` stream
//! becomes an [`Envelope`] (or a schedule or user record).
//!
//! Most job events are their payload. Two kinds are produced by nats-server's
//! message scheduler and need the stored message itself (subject, sequence,
//! headers, time) to become an event:
//! - a delayed job's `queued` event, fired from its timer (`timers.<queue>.<job_id>`):
//!   the payload is the prepared envelope; its `at` is the time it was stored (fired);
//! - a periodic job, fired from a schedule record (`schedules.<key>`): the payload is
//!   the schedule; the job's id is derived from the fired message (its time and
//!   stream sequence, see [`fired_job_id`]), so every reader — worker, projector,
//!   replay, SSE — derives the same id, and a replay gives the same ids.
//!
//! Every consumer of stream messages decodes through [`Envelope::from_stored`] /
//! [`Record::from_stored`], never through the payload alone.

use async_nats::HeaderMap;
use async_nats::jetstream;
use chrono::{DateTime, SubsecRound, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::event::{DecodeError, Envelope, Event, SCHEMA_VERSION};
use crate::queue::QueueRecord;
use crate::schedule::{self, ScheduleEvent, ScheduleRecord};
use crate::subject;
use crate::user::UserEnvelope;
use crate::workflow::WorkflowEnvelope;

/// Header nats-server sets on a message produced by a schedule: the subject holding the schedule.
pub const SCHEDULER_HEADER: &str = "Nats-Scheduler";

/// A message as stored in the stream: what every reader has, whatever the API it read it with.
#[derive(Debug, Clone, Copy)]
pub struct StoredMessage<'a> {
    /// Its subject.
    pub subject: &'a str,
    /// Its stream sequence.
    pub sequence: u64,
    /// Its headers.
    pub headers: Option<&'a HeaderMap>,
    /// Its payload.
    pub payload: &'a [u8],
    /// When the stream stored it.
    pub time: DateTime<Utc>,
}

/// Nanoseconds since the epoch (of a JetStream timestamp) as a chrono time.
fn from_nanos(nanos: i128) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
}

impl<'a> StoredMessage<'a> {
    /// A message read directly from the stream (direct get, `get_raw_message`).
    pub fn from_raw(m: &'a jetstream::message::StreamMessage) -> Self {
        StoredMessage {
            subject: m.subject.as_str(),
            sequence: m.sequence,
            headers: Some(&m.headers),
            payload: &m.payload,
            time: from_nanos(m.time.unix_timestamp_nanos()),
        }
    }

    /// A message delivered by a consumer (its metadata says where and when it is stored).
    pub fn from_delivered(m: &'a jetstream::Message) -> Result<Self, DecodeError> {
        let info = m
            .info()
            .map_err(|e| DecodeError::NotAJobEvent(format!("no JetStream metadata: {e}")))?;
        Ok(StoredMessage {
            subject: m.subject.as_str(),
            sequence: info.stream_sequence,
            headers: m.headers.as_ref(),
            payload: &m.payload,
            time: from_nanos(info.published.unix_timestamp_nanos()),
        })
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.and_then(|h| h.get(name)).map(|v| v.as_str())
    }
}

/// Every kind of record the stream holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A job event.
    Job(Envelope),
    /// A schedule record (created or deleted).
    Schedule(ScheduleRecord),
    /// A user event (`users.<user_id>.<event>`).
    User(UserEnvelope),
    /// A queue control record (`queues.<queue>`: paused or resumed).
    Queue(QueueRecord),
    /// A workflow event (`workflows.<workflow_id>.<event>`).
    Workflow(WorkflowEnvelope),
    /// Machinery, not an event: a pending delayed-job timer or an idempotency record.
    Other,
}

impl Record {
    /// Decodes any stored message of the stream, by its subject.
    pub fn from_stored(m: &StoredMessage<'_>) -> Result<Self, DecodeError> {
        let prefix = m.subject.split('.').next().unwrap_or_default();
        if prefix == subject::PREFIX {
            Envelope::from_stored(m).map(Record::Job)
        } else if prefix == schedule::PREFIX {
            ScheduleRecord::decode(m.payload).map(Record::Schedule)
        } else if prefix == crate::user::PREFIX {
            UserEnvelope::decode(m.payload).map(Record::User)
        } else if prefix == crate::queue::PREFIX {
            QueueRecord::decode(m.payload).map(Record::Queue)
        } else if prefix == crate::workflow::PREFIX {
            WorkflowEnvelope::decode(m.payload).map(Record::Workflow)
        } else {
            Ok(Record::Other)
        }
    }
}

impl Envelope {
    /// Decodes a stored job event (`jobs.…` subject), including events nats-server
    /// produced from a delayed job's timer or a periodic schedule. See the module docs.
    pub fn from_stored(m: &StoredMessage<'_>) -> Result<Self, DecodeError> {
        if !m.subject.starts_with(&format!("{}.", subject::PREFIX)) {
            return Err(DecodeError::NotAJobEvent(m.subject.to_owned()));
        }
        let Some(scheduler) = m.header(SCHEDULER_HEADER) else {
            return Envelope::decode(m.payload);
        };
        let at = m.time.trunc_subsecs(6);
        if scheduler.starts_with(&format!("{}.", schedule::PREFIX)) {
            let rec = ScheduleRecord::decode(m.payload)?;
            // Only the records stored with the schedule headers fire (created or resumed).
            let job = match rec.event {
                ScheduleEvent::Created(spec) => spec.job,
                ScheduleEvent::Resumed(update) => update.spec.job,
                other => {
                    return Err(DecodeError::NotAJobEvent(format!(
                        "fired message of a {} record at seq {}",
                        other.type_name(),
                        m.sequence
                    )));
                }
            };
            let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0);
            return Ok(Envelope {
                v: SCHEMA_VERSION,
                event_id: derived_v7(ms, &["fired-event", scheduler], m.sequence),
                job_id: fired_job_id(ms, scheduler, m.sequence),
                at,
                attempt: 0,
                run: None,
                event: Event::Queued(job),
            });
        }
        // A delayed job's timer fired: the prepared `queued` event, stamped with the firing time.
        let mut env = Envelope::decode(m.payload)?;
        env.at = at;
        Ok(env)
    }
}

/// A UUIDv7-shaped id: `ms` in the time bits (so ids sort by time and the list API
/// paginates them in order), 26 bits of a hash of `parts` and `seq`, and `seq` in the
/// low 48 bits (so the message can be found again from the id).
fn derived_v7(ms: u64, parts: &[&str], seq: u64) -> Uuid {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.update(seq.to_be_bytes());
    let h = h.finalize();
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = 0x70 | (h[0] & 0x0f);
    b[7] = h[1];
    b[8] = 0x80 | (h[2] & 0x3f);
    b[9] = h[3];
    b[10..].copy_from_slice(&seq.to_be_bytes()[2..]);
    Uuid::from_bytes(b)
}

/// Id of the job a schedule firing produced: derived from the fired message alone
/// (its stored time, the schedule subject and its stream sequence).
pub fn fired_job_id(ms: u64, scheduler: &str, seq: u64) -> Uuid {
    derived_v7(ms, &["fired-job", scheduler], seq)
}

/// The stream sequence a fired job id points at (its low 48 bits). Only meaningful for
/// ids made by [`fired_job_id`]: check by decoding the message at that sequence.
pub fn fired_sequence(id: Uuid) -> u64 {
    let b = id.as_bytes();
    let mut s = [0u8; 8];
    s[2..].copy_from_slice(&b[10..]);
    u64::from_be_bytes(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{JobSpec, Priority};
    use crate::schedule::{ScheduleSpec, Timing};
    use crate::subject::QueueName;

    fn spec() -> JobSpec {
        JobSpec {
            kind: "echo".into(),
            queue: QueueName::default_queue(),
            owner: "alice".into(),
            payload: serde_json::json!(1),
            priority: Priority::Normal,
            max_attempts: 3,
            timeout_ms: 1000,
            run_at: None,
            idempotency_key: None,
            result_ttl_ms: None,
            backoff: None,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, *v);
        }
        h
    }

    #[test]
    fn plain_events_are_their_payload() {
        let env = Envelope::new(Uuid::now_v7(), 0, Event::Queued(spec()));
        let bytes = env.to_bytes();
        let m = StoredMessage {
            subject: "jobs.default.x.queued",
            sequence: 7,
            headers: None,
            payload: &bytes,
            time: Utc::now(),
        };
        assert_eq!(Envelope::from_stored(&m).unwrap(), env);
        let other = StoredMessage {
            subject: "timers.default.x",
            ..m
        };
        assert!(Envelope::from_stored(&other).is_err());
        assert_eq!(Record::from_stored(&other).unwrap(), Record::Other);
    }

    #[test]
    fn fired_periodic_jobs_get_ids_derived_from_the_message() {
        let rec = ScheduleRecord::new(
            "k".into(),
            ScheduleEvent::Created(Box::new(ScheduleSpec {
                name: "n".into(),
                owner: "alice".into(),
                timing: Timing::Every("1s".into()),
                job: spec(),
            })),
        );
        let bytes = rec.to_bytes();
        let h = headers(&[(SCHEDULER_HEADER, "schedules.k")]);
        let time = Utc::now();
        let m = StoredMessage {
            subject: "jobs.default.sched-k.queued",
            sequence: 42,
            headers: Some(&h),
            payload: &bytes,
            time,
        };
        let a = Envelope::from_stored(&m).unwrap();
        let b = Envelope::from_stored(&m).unwrap();
        assert_eq!(a, b, "same message, same event");
        assert_eq!(a.job_id.get_version_num(), 7);
        assert_eq!(fired_sequence(a.job_id), 42);
        assert_eq!(a.event, Event::Queued(spec()));
        let next = StoredMessage { sequence: 43, ..m };
        assert_ne!(Envelope::from_stored(&next).unwrap().job_id, a.job_id);
        // Time-ordered like any UUIDv7.
        let later = StoredMessage {
            sequence: 1,
            time: time + chrono::Duration::milliseconds(2),
            ..m
        };
        assert!(Envelope::from_stored(&later).unwrap().job_id > a.job_id);
    }

    #[test]
    fn fired_copies_of_a_resumed_schedule_are_jobs_and_of_a_paused_one_are_not() {
        let update = crate::schedule::ScheduleUpdate {
            spec: ScheduleSpec {
                name: "n".into(),
                owner: "alice".into(),
                timing: Timing::Every("1s".into()),
                job: spec(),
            },
            created_at: Utc::now(),
            last_fired_at: None,
        };
        let h = headers(&[(SCHEDULER_HEADER, "schedules.k")]);
        let decode = |event| {
            let bytes = ScheduleRecord::new("k".into(), event).to_bytes();
            Envelope::from_stored(&StoredMessage {
                subject: "jobs.default.sched-k.queued",
                sequence: 42,
                headers: Some(&h),
                payload: &bytes,
                time: Utc::now(),
            })
        };
        let resumed = decode(ScheduleEvent::Resumed(Box::new(update.clone()))).unwrap();
        assert_eq!(resumed.event, Event::Queued(spec()));
        assert_eq!(fired_sequence(resumed.job_id), 42);
        assert!(decode(ScheduleEvent::Paused(Box::new(update))).is_err());
    }

    #[test]
    fn fired_delayed_jobs_are_stamped_with_the_firing_time() {
        let env = Envelope::new(Uuid::now_v7(), 0, Event::Queued(spec()));
        let bytes = env.to_bytes();
        let h = headers(&[(SCHEDULER_HEADER, "timers.default.x")]);
        let fired_at = Utc::now() + chrono::Duration::seconds(5);
        let m = StoredMessage {
            subject: "jobs.default.x.queued",
            sequence: 9,
            headers: Some(&h),
            payload: &bytes,
            time: fired_at,
        };
        let got = Envelope::from_stored(&m).unwrap();
        assert_eq!(got.job_id, env.job_id);
        assert_eq!(got.event_id, env.event_id);
        assert_eq!(got.at, fired_at.trunc_subsecs(6));
    }
}
