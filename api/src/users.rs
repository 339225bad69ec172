//! Registering users: on a caller's first authenticated request, and by `POST /v1/users`.
//!
//! The stream decides whether a user exists: a `user.registered` event is published
//! with `Nats-Expected-Last-Subject-Sequence: 0` on `users.<user_id>.registered` (and a
//! `Nats-Msg-Id` derived from the user id), so concurrent first requests, on one or
//! many API instances, store one registration. A per-process cache of users known to
//! be registered keeps that to one stream lookup per user and process.

use std::collections::HashSet;
use std::sync::Mutex;

use jobstream_core::broker::BrokerError;
use jobstream_core::user::{self, UserEnvelope, UserEvent, UserProfile};
use jobstream_core::user_broker::UserPublish;
use uuid::Uuid;

use crate::auth::Caller;
use crate::state::AppState;

/// Most users remembered as registered per process (the cache is cleared when full).
const KNOWN_CAPACITY: usize = 100_000;

/// User settings and the per-process cache of registered users.
#[derive(Debug, Default)]
pub struct Users {
    /// Whether anyone authenticated may create users with `POST /v1/users` (else admins only).
    pub open_registration: bool,
    known: Mutex<HashSet<Uuid>>,
}

impl Users {
    /// Settings with an empty cache.
    pub fn new(open_registration: bool) -> Self {
        Users {
            open_registration,
            known: Mutex::new(HashSet::new()),
        }
    }

    /// Whether this process has seen the user's registration.
    pub fn is_known(&self, id: Uuid) -> bool {
        self.known.lock().map(|k| k.contains(&id)).unwrap_or(false)
    }

    /// Remembers that the user is registered.
    pub fn remember(&self, id: Uuid) {
        if let Ok(mut k) = self.known.lock() {
            if k.len() >= KNOWN_CAPACITY {
                k.clear();
            }
            k.insert(id);
        }
    }
}

/// Normalises an e-mail address for storage and comparison: trimmed, lower case.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Registers the caller from their claims unless already registered; returns their user id.
pub async fn register_caller(
    state: &AppState,
    caller: &Caller,
    request_id: Option<&str>,
) -> Result<Uuid, BrokerError> {
    let id = user::user_id_for_sub(&caller.sub);
    if state.users.is_known(id) {
        return Ok(id);
    }
    if !state.broker.user_is_registered(id).await? {
        let env = UserEnvelope::new(
            id,
            UserEvent::Registered {
                profile: UserProfile {
                    sub: Some(caller.sub.clone()),
                    email: caller.email.as_deref().map(normalize_email),
                    name: caller.name.clone(),
                },
                created_by: None,
            },
        );
        match state.broker.publish_user_event(&env, request_id).await? {
            UserPublish::Stored(seq) => {
                tracing::info!(user_id = %id, stream_seq = seq, "user registered on first request");
            }
            UserPublish::AlreadyRegistered => {
                tracing::debug!(user_id = %id, "user registered concurrently elsewhere");
            }
        }
    }
    state.users.remember(id);
    Ok(id)
}

/// [`register_caller`] for the auth extractor: a failure is logged, never fails the request
/// (`GET /v1/users/me` retries it and reports the error).
pub(crate) async fn ensure_registered(state: &AppState, caller: &Caller, request_id: Option<&str>) {
    if let Err(e) = register_caller(state, caller, request_id).await {
        tracing::warn!(error = %e, "could not register the caller; will retry on a later request");
    }
}
