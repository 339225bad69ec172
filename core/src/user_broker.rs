//! Publishing and reading user events (I/O on the [`Broker`]).

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{message::PublishMessage, stream};
use uuid::Uuid;

use crate::broker::{Broker, BrokerError};
use crate::event::REQUEST_ID_HEADER;
use crate::user::{self, UserEnvelope, UserEvent, UserState};

/// What happened to a user event published with [`Broker::publish_user_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserPublish {
    /// Stored at this stream sequence.
    Stored(u64),
    /// A registration of a user that already has one: nothing stored.
    AlreadyRegistered,
}

impl Broker {
    /// Appends a user event and waits for the server to store it.
    ///
    /// A `user.registered` event is published with `Nats-Msg-Id` derived from the user id
    /// and `Nats-Expected-Last-Subject-Sequence: 0` on its subject, so the stream itself
    /// refuses a second registration of the same user, from any API instance, at any time.
    pub async fn publish_user_event(
        &self,
        env: &UserEnvelope,
        request_id: Option<&str>,
    ) -> Result<UserPublish, BrokerError> {
        let mut headers = HeaderMap::new();
        if let Some(rid) = request_id {
            headers.insert(REQUEST_ID_HEADER, rid);
        }
        let mut msg = PublishMessage::build()
            .payload(env.to_bytes().into())
            .headers(headers);
        let registering = matches!(env.event, UserEvent::Registered { .. });
        msg = if registering {
            msg.message_id(user::registration_msg_id(env.user_id))
                .expected_last_subject_sequence(0)
        } else {
            msg.message_id(env.event_id.to_string())
        };
        let ack = match self
            .jetstream()
            .send_publish(env.subject(), msg)
            .await?
            .await
        {
            Ok(ack) => ack,
            Err(e) if registering && e.kind() == PublishErrorKind::WrongLastSequence => {
                return Ok(UserPublish::AlreadyRegistered);
            }
            Err(e) => return Err(e.into()),
        };
        if ack.duplicate && registering {
            return Ok(UserPublish::AlreadyRegistered);
        }
        Ok(UserPublish::Stored(ack.sequence))
    }

    /// Every stored event of one user, in stream order (undecodable ones skipped with a warning).
    pub async fn user_history(
        &self,
        user_id: Uuid,
    ) -> Result<Vec<(u64, UserEnvelope)>, BrokerError> {
        let stream = self.stream().await?;
        let filter = user::of_user(user_id);
        let mut out = Vec::new();
        let mut next = 1;
        loop {
            match crate::broker::read_retrying(|| {
                stream.get_first_raw_message_by_subject(&filter, next)
            })
            .await
            {
                Ok(msg) => {
                    next = msg.sequence + 1;
                    match UserEnvelope::decode(&msg.payload) {
                        Ok(env) => out.push((msg.sequence, env)),
                        Err(e) => {
                            tracing::warn!(seq = msg.sequence, error = %e, "skipping undecodable user event");
                        }
                    }
                }
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                    return Ok(out);
                }
                Err(e) => return Err(BrokerError::Read(e.to_string())),
            }
        }
    }

    /// A user's current state folded straight from the stream (`None`: never registered).
    pub async fn user_from_stream(&self, user_id: Uuid) -> Result<Option<UserState>, BrokerError> {
        let history = self.user_history(user_id).await?;
        Ok(UserState::fold_history(
            history.iter().map(|(s, e)| (*s, e)),
        ))
    }

    /// Whether the user has a `user.registered` event (one direct read of the last message).
    pub async fn user_is_registered(&self, user_id: Uuid) -> Result<bool, BrokerError> {
        let stream = self.stream().await?;
        let subject = user::user_event_subject(user_id, user::UserEventType::Registered);
        match crate::broker::read_retrying(|| stream.get_last_raw_message_by_subject(&subject))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(BrokerError::Read(e.to_string())),
        }
    }
}
