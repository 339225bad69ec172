//! Users, event-sourced like jobs: a closed, versioned enum of user events in the
//! same stream, under their own subjects `users.<user_id>.<event>`.
//!
//! A `sub` claim can contain `|`, `.` or be long, so it never goes into a subject:
//! the subject token is the user id, a UUID. Users known by their `sub` get an id
//! derived from it ([`user_id_for_sub`]), so every API instance computes the same id
//! and the stream can refuse a second `user.registered` for the same user
//! (`Nats-Expected-Last-Subject-Sequence: 0`). Users created by an admin without a
//! `sub` get an id derived from their e-mail address ([`user_id_for_email`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::event::{DecodeError, SCHEMA_VERSION, now};

/// Prefix of every user event subject.
pub use crate::subject::USERS_PREFIX as PREFIX;

/// Every user event, wrapped with what all user events share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserEnvelope {
    /// Schema version of this envelope.
    pub v: u16,
    /// Unique id of the event (UUIDv7).
    pub event_id: Uuid,
    /// The user the event belongs to (also the subject token).
    pub user_id: Uuid,
    /// When the event happened (microseconds).
    pub at: DateTime<Utc>,
    /// The event itself, tagged by `type`.
    #[serde(flatten)]
    pub event: UserEvent,
}

/// Who a user is, as far as jobstream knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    /// The identity provider's `sub`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What happened to a user. A closed set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum UserEvent {
    /// The user exists from now on.
    #[serde(rename = "user.registered")]
    Registered {
        /// Who the user is.
        #[serde(flatten)]
        profile: UserProfile,
        /// `sub` of the admin (or open registration caller) who created the user;
        /// `None` when the user registered by their own first authenticated request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        created_by: Option<String>,
    },
    /// Name or e-mail changed (fields absent are unchanged).
    #[serde(rename = "user.updated")]
    Updated {
        /// New e-mail address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
        /// New display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
}

/// The `type` of a user event; its subject token is the part after `user.`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserEventType {
    /// See [`UserEvent::Registered`].
    Registered,
    /// See [`UserEvent::Updated`].
    Updated,
}

impl UserEventType {
    /// The subject token.
    pub fn as_str(self) -> &'static str {
        match self {
            UserEventType::Registered => "registered",
            UserEventType::Updated => "updated",
        }
    }
}

impl UserEvent {
    /// The event's type.
    pub fn event_type(&self) -> UserEventType {
        match self {
            UserEvent::Registered { .. } => UserEventType::Registered,
            UserEvent::Updated { .. } => UserEventType::Updated,
        }
    }
}

impl UserEnvelope {
    /// A new event of `user_id`, stamped now.
    pub fn new(user_id: Uuid, event: UserEvent) -> Self {
        UserEnvelope {
            v: SCHEMA_VERSION,
            event_id: Uuid::now_v7(),
            user_id,
            at: now(),
            event,
        }
    }

    /// JSON bytes for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a user event, refusing unknown schema versions.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let env: UserEnvelope = serde_json::from_slice(bytes)?;
        if env.v > SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedVersion(env.v));
        }
        Ok(env)
    }

    /// The subject this event is stored under.
    pub fn subject(&self) -> String {
        user_event_subject(self.user_id, self.event.event_type())
    }
}

fn derived_id(domain: &str, value: &str) -> Uuid {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    h.update([0]);
    h.update(value.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The id of the user with this `sub` (a UUIDv8 from SHA-256): the same on every instance.
pub fn user_id_for_sub(sub: &str) -> Uuid {
    derived_id("jobstream.user.sub", sub)
}

/// The id of a user created without a `sub`, from their (case-folded) e-mail address.
pub fn user_id_for_email(email: &str) -> Uuid {
    derived_id("jobstream.user.email", &email.trim().to_lowercase())
}

// The subject family of users lives with every other one in `subject`.
pub use crate::subject::{all_user_events, of_user, user_event as user_event_subject};

/// The `Nats-Msg-Id` of a user's registration: a retried or concurrent registration is stored once.
pub fn registration_msg_id(user_id: Uuid) -> String {
    format!("user-registered-{user_id}")
}

/// Current state of a user, folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    /// User id.
    pub id: Uuid,
    /// Who the user is.
    pub profile: UserProfile,
    /// Who created the user (`None`: self-registered on first request).
    pub created_by: Option<String>,
    /// Registered at.
    pub created_at: DateTime<Utc>,
    /// Latest change at.
    pub updated_at: DateTime<Utc>,
    /// Stream sequence of the latest applied event.
    pub last_seq: u64,
}

/// Why a user event was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserRejected {
    /// A second registration of the same user.
    #[error("user {0} is already registered")]
    AlreadyRegistered(Uuid),
    /// An update of a user never registered.
    #[error("user {0} was never registered")]
    Unknown(Uuid),
}

impl UserState {
    /// Applies one event to the user's state (`None` before registration).
    pub fn fold(
        state: Option<UserState>,
        env: &UserEnvelope,
        seq: u64,
    ) -> Result<UserState, UserRejected> {
        match (state, &env.event) {
            (
                None,
                UserEvent::Registered {
                    profile,
                    created_by,
                },
            ) => Ok(UserState {
                id: env.user_id,
                profile: profile.clone(),
                created_by: created_by.clone(),
                created_at: env.at,
                updated_at: env.at,
                last_seq: seq,
            }),
            (Some(_), UserEvent::Registered { .. }) => {
                Err(UserRejected::AlreadyRegistered(env.user_id))
            }
            (None, UserEvent::Updated { .. }) => Err(UserRejected::Unknown(env.user_id)),
            (Some(mut s), UserEvent::Updated { email, name }) => {
                if let Some(e) = email {
                    s.profile.email = Some(e.clone());
                }
                if let Some(n) = name {
                    s.profile.name = Some(n.clone());
                }
                s.updated_at = env.at;
                s.last_seq = seq;
                Ok(s)
            }
        }
    }

    /// Folds a user's whole history, in stream order.
    pub fn fold_history<'a>(
        history: impl IntoIterator<Item = (u64, &'a UserEnvelope)>,
    ) -> Option<UserState> {
        history.into_iter().fold(None, |state, (seq, env)| {
            match UserState::fold(state.clone(), env, seq) {
                Ok(s) => Some(s),
                Err(_) => state,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject::validate_token;

    #[test]
    fn wire_format_has_type_tag_version_and_profile() {
        let env = UserEnvelope::new(
            user_id_for_sub("google-oauth2|123.456"),
            UserEvent::Registered {
                profile: UserProfile {
                    sub: Some("google-oauth2|123.456".into()),
                    email: Some("a@example.com".into()),
                    name: Some("Ada".into()),
                },
                created_by: None,
            },
        );
        let v: serde_json::Value = serde_json::from_slice(&env.to_bytes()).unwrap();
        assert_eq!(v["type"], "user.registered");
        assert_eq!(v["v"], 1);
        assert_eq!(v["sub"], "google-oauth2|123.456");
        assert_eq!(UserEnvelope::decode(&env.to_bytes()).unwrap(), env);
    }

    #[test]
    fn ids_derived_from_any_sub_are_stable_safe_subject_tokens() {
        let long = "x".repeat(5000);
        for sub in ["alice", "auth0|abc.def", "a b>c*", long.as_str()] {
            let id = user_id_for_sub(sub);
            assert_eq!(id, user_id_for_sub(sub));
            assert_eq!(validate_token(&id.to_string()), Ok(()));
            let s = user_event_subject(id, UserEventType::Registered);
            assert_eq!(s.split('.').count(), 3, "{s}");
        }
        assert_ne!(user_id_for_sub("alice"), user_id_for_sub("bob"));
        assert_ne!(user_id_for_sub("a@x.org"), user_id_for_email("a@x.org"));
        assert_eq!(user_id_for_email("A@X.org "), user_id_for_email("a@x.org"));
    }

    #[test]
    fn fold_registers_once_and_updates() {
        let id = Uuid::now_v7();
        let reg = UserEnvelope::new(
            id,
            UserEvent::Registered {
                profile: UserProfile {
                    sub: None,
                    email: Some("a@x.org".into()),
                    name: Some("A".into()),
                },
                created_by: Some("admin".into()),
            },
        );
        let upd = UserEnvelope::new(
            id,
            UserEvent::Updated {
                email: None,
                name: Some("B".into()),
            },
        );
        assert_eq!(
            UserState::fold(None, &upd, 1),
            Err(UserRejected::Unknown(id))
        );
        let s = UserState::fold(None, &reg, 1).unwrap();
        assert_eq!(
            UserState::fold(Some(s.clone()), &reg, 2),
            Err(UserRejected::AlreadyRegistered(id))
        );
        let s = UserState::fold(Some(s), &upd, 3).unwrap();
        assert_eq!(s.profile.name.as_deref(), Some("B"));
        assert_eq!(s.profile.email.as_deref(), Some("a@x.org"));
        assert_eq!(s.last_seq, 3);
        let h = [(1, &reg), (2, &reg), (3, &upd)];
        assert_eq!(UserState::fold_history(h), Some(s));
    }
}
