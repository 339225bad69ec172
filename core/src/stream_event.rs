//! Anything stored in the stream: a job event or a user event, told apart by subject.
//!
//! The projector and replay read the whole stream; each message decodes into one
//! [`StreamEvent`] by its subject prefix (`jobs.` or `users.`). Messages under any other
//! prefix are not ours to fold and decode to `None`.

use crate::event::{DecodeError, Envelope};
use crate::subject;
use crate::user::{self, UserEnvelope};

/// One stored event of any aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// An event of a job (`jobs.<queue>.<job_id>.<event>`).
    Job(Envelope),
    /// An event of a user (`users.<user_id>.<event>`).
    User(UserEnvelope),
}

impl From<Envelope> for StreamEvent {
    fn from(e: Envelope) -> Self {
        StreamEvent::Job(e)
    }
}

impl From<UserEnvelope> for StreamEvent {
    fn from(e: UserEnvelope) -> Self {
        StreamEvent::User(e)
    }
}

impl StreamEvent {
    /// Decodes a message by its subject. `Ok(None)`: a subject prefix this build does not fold.
    pub fn decode(subject: &str, bytes: &[u8]) -> Result<Option<Self>, DecodeError> {
        match subject.split('.').next() {
            Some(p) if p == subject::PREFIX => Envelope::decode(bytes).map(|e| Some(e.into())),
            Some(p) if p == user::PREFIX => UserEnvelope::decode(bytes).map(|e| Some(e.into())),
            _ => Ok(None),
        }
    }

    /// The job event, if this is one.
    pub fn as_job(&self) -> Option<&Envelope> {
        match self {
            StreamEvent::Job(e) => Some(e),
            StreamEvent::User(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::user::{UserEvent, UserProfile};
    use uuid::Uuid;

    #[test]
    fn decodes_by_subject_prefix() {
        let job = Envelope::new(Uuid::now_v7(), 0, Event::Cancelled { reason: None });
        let ev = StreamEvent::decode("jobs.default.x.cancelled", &job.to_bytes()).unwrap();
        assert_eq!(ev, Some(StreamEvent::Job(job.clone())));
        let u = UserEnvelope::new(
            Uuid::now_v7(),
            UserEvent::Registered {
                profile: UserProfile {
                    sub: Some("a".into()),
                    email: None,
                    name: None,
                },
                created_by: None,
            },
        );
        let ev = StreamEvent::decode(&u.subject(), &u.to_bytes()).unwrap();
        assert_eq!(ev, Some(StreamEvent::User(u)));
        assert_eq!(StreamEvent::decode("schedules.x", b"{}").unwrap(), None);
        assert!(StreamEvent::decode("users.x.registered", &job.to_bytes()).is_err());
    }
}
