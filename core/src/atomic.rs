//! Stream-side lifecycle helpers on [`Broker`]: atomic batch publish (ADR-50),
//! last-message-on-subject lookups, and reading every kind of record.

use async_nats::HeaderMap;
use async_nats::jetstream::message::{PublishMessage, StreamMessage};
use async_nats::jetstream::{context::PublishErrorKind, stream};
use uuid::Uuid;

use async_nats::jetstream::ErrorCode;

use crate::broker::{ATTEMPT_TIMEOUT, Attempt, Broker, BrokerError, classify, with_retries};
use crate::event::{Envelope, REQUEST_ID_HEADER};
use crate::stored::{Record, StoredMessage};
use crate::subject::{self, QueueName};
use crate::trace::TraceParent;

/// Header: expected last sequence of the message's subject (0 = the subject is empty).
pub const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
/// Header: the held message is a schedule (`@at <RFC 3339>`, `@every 30s`, cron).
pub const SCHEDULE_HEADER: &str = "Nats-Schedule";
/// Header: where a schedule publishes.
pub const SCHEDULE_TARGET_HEADER: &str = "Nats-Schedule-Target";
/// Header: per-message TTL (`never` keeps a message past the stream's `max_age`).
pub const TTL_HEADER: &str = "Nats-TTL";
/// Header: purge the subject's earlier messages when this one is stored.
pub const ROLLUP_HEADER: &str = "Nats-Rollup";

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Subject.
    pub subject: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Outgoing {
    /// A message with no headers yet.
    pub fn new(subject: String, payload: Vec<u8>) -> Self {
        Outgoing {
            subject,
            headers: HeaderMap::new(),
            payload,
        }
    }

    /// A job event on its subject, de-duplicated by its event id.
    pub fn event(env: &Envelope, queue: &QueueName, request_id: Option<&str>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", env.event_id.to_string().as_str());
        if let Some(rid) = request_id {
            headers.insert(REQUEST_ID_HEADER, rid);
        }
        Outgoing {
            // Lane-aware: a `queued` event goes to its priority lane.
            subject: subject::for_event(queue, env.job_id, &env.event),
            headers,
            payload: env.to_bytes(),
        }
    }

    /// Adds the job's trace context (the `traceparent` header, see [`crate::trace`]).
    pub fn with_trace(mut self, trace: &crate::trace::TraceParent) -> Self {
        (self.headers).insert(crate::event::TRACEPARENT_HEADER, trace.to_string().as_str());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.insert(name, value);
        self
    }
}

/// Whether a batch commit was refused because it holds a message id already stored
/// (10201): an earlier attempt of the same batch committed it.
fn batch_duplicate(e: &async_nats::jetstream::context::PublishError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
        .is_some_and(|a| a.error_code() == ErrorCode::ATOMIC_PUBLISH_CONTAINS_DUPLICATE_MESSAGE)
}

/// Where an atomic batch was stored (`0` for both when a retry found it stored before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchAck {
    /// Sequence of the first message.
    pub first_seq: u64,
    /// Sequence of the last message.
    pub last_seq: u64,
}

impl BrokerError {
    /// A `Nats-Expected-Last-Subject-Sequence` check failed: someone else wrote the subject first.
    pub fn is_wrong_last_sequence(&self) -> bool {
        matches!(self, BrokerError::Publish(e) if e.kind() == PublishErrorKind::WrongLastSequence)
    }

    /// The server refused the content (not an outage): its description, e.g.
    /// "message schedules pattern is invalid" or "atomic publish batch is too large: 1000".
    pub fn refusal(&self) -> Option<String> {
        match self {
            BrokerError::Publish(e) if e.kind() == PublishErrorKind::Other => {
                let text = e.to_string();
                is_content_refusal(&text).then_some(text)
            }
            _ => None,
        }
    }
}

/// Whether a JetStream error text refuses the message's content (a client error), as
/// opposed to a server condition. An incomplete batch is NOT one: staged messages get
/// lost when the store is full or the connection drops.
pub(crate) fn is_content_refusal(text: &str) -> bool {
    ["schedules", "batch is too large"]
        .iter()
        .any(|k| text.contains(k))
}

impl Broker {
    /// Publishes `msgs` so that all are stored or none (JetStream atomic batch publish:
    /// `Nats-Batch-Id`, `Nats-Batch-Sequence`, `Nats-Batch-Commit`), in order, and waits
    /// for the commit's PubAck. A single message is a plain publish.
    pub async fn publish_atomic(&self, msgs: Vec<Outgoing>) -> Result<BatchAck, BrokerError> {
        if msgs.is_empty() {
            return Err(BrokerError::Read("empty batch".to_owned()));
        }
        // A retry of a stored batch is answered 10201 (duplicate message id) only if some
        // message carries a `Nats-Msg-Id`, and a stored single message answers `duplicate`
        // only with one. Without any, a retry could store twice: then there is no retry.
        let deadline = if msgs.iter().any(|m| m.headers.get("Nats-Msg-Id").is_some()) {
            self.publish_deadline()
        } else {
            std::time::Duration::ZERO
        };
        with_retries(deadline, || self.publish_batch_once(&msgs)).await
    }

    /// One attempt at an atomic batch, under a fresh batch id.
    async fn publish_batch_once(&self, msgs: &[Outgoing]) -> Attempt<BatchAck> {
        let n = msgs.len() as u64;
        // A single message is a plain publish: no batch id (a getrandom call per job).
        let batch_id = (n > 1).then(|| Uuid::new_v4().simple().to_string());
        let mut last = None;
        for (i, m) in msgs.iter().cloned().enumerate() {
            let mut m = m;
            let seq = (i + 1) as u64;
            if let Some(batch_id) = &batch_id {
                m.headers.insert("Nats-Batch-Id", batch_id.as_str());
                m.headers
                    .insert("Nats-Batch-Sequence", seq.to_string().as_str());
            }
            if seq < n {
                // Staged messages need no reply: a problem fails the commit.
                if let Err(e) = self
                    .client()
                    .publish_with_headers(m.subject, m.headers, m.payload.into())
                    .await
                {
                    // Nothing committed by this attempt.
                    return Attempt::Refused(format!("staging a batch message: {e}"));
                }
            } else {
                if batch_id.is_some() {
                    m.headers.insert("Nats-Batch-Commit", "1");
                }
                let msg = PublishMessage::build()
                    .payload(m.payload.into())
                    .headers(m.headers);
                match self.jetstream().send_publish(m.subject, msg).await {
                    Ok(fut) => last = Some(fut),
                    Err(e) => return classify(e),
                }
            }
        }
        let Some(fut) = last else {
            return Attempt::Final(BrokerError::Read("empty batch".to_owned()));
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, fut.into_future()).await {
            Ok(Ok(ack)) if ack.duplicate => Attempt::Stored(BatchAck {
                // A single message: the first copy's sequence.
                first_seq: ack.sequence,
                last_seq: ack.sequence,
            }),
            Ok(Ok(ack)) => Attempt::Stored(BatchAck {
                first_seq: ack.sequence + 1 - n.min(ack.sequence),
                last_seq: ack.sequence,
            }),
            Ok(Err(e)) if batch_duplicate(&e) => {
                // An earlier attempt committed this batch; where is not said.
                tracing::info!("atomic batch already stored by an earlier attempt");
                Attempt::Stored(BatchAck {
                    first_seq: 0,
                    last_seq: 0,
                })
            }
            Ok(Err(e)) => classify(e),
            Err(_) => Attempt::Unknown("no PubAck for the batch commit in time".to_owned()),
        }
    }

    /// The last message stored on `subject`, if any.
    pub async fn last_on_subject(
        &self,
        subject: &str,
    ) -> Result<Option<StreamMessage>, BrokerError> {
        let stream = self.stream().await?;
        match crate::broker::read_retrying(|| stream.get_last_raw_message_by_subject(subject)).await
        {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(BrokerError::Read(e.to_string())),
        }
    }

    /// A job's trace, from the headers of its first stored event (see [`crate::trace`]);
    /// the job's own trace when it has no event or no valid header. With a span id of the caller.
    pub async fn job_trace(&self, job_id: Uuid) -> Result<TraceParent, BrokerError> {
        let stream = self.stream().await?;
        let filter = subject::of_job(job_id);
        let first =
            crate::broker::read_retrying(|| stream.get_first_raw_message_by_subject(&filter, 1))
                .await;
        match first {
            Ok(m) => Ok(TraceParent::of_event(Some(&m.headers), job_id).child()),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                Ok(TraceParent::for_job(job_id))
            }
            Err(e) => Err(BrokerError::Read(e.to_string())),
        }
    }

    /// Removes a delayed job's pending timer (purges `timers.<queue>.<job_id>`), so its
    /// `queued` event is never produced. For cancelling a `scheduled` job: publish its
    /// `cancelled` event, then drop the timer (if the timer fires in between, the fold
    /// ignores the `queued` event after `cancelled`, and workers must not start it).
    pub async fn cancel_timer(&self, queue: &QueueName, job_id: Uuid) -> Result<u64, BrokerError> {
        let stream = self.stream().await?;
        let purged = stream
            .purge()
            .filter(subject::timer(queue, job_id))
            .await
            .map_err(|e| BrokerError::Read(format!("purging a timer: {e}")))?;
        Ok(purged.purged)
    }

    /// The `queued` event of a job a periodic schedule fired, found through the stream
    /// sequence its id carries (and checked by decoding that message).
    pub async fn fired_queued_event(
        &self,
        job_id: Uuid,
    ) -> Result<Option<(u64, Envelope)>, BrokerError> {
        let seq = crate::stored::fired_sequence(job_id);
        if seq == 0 {
            return Ok(None);
        }
        let stream = self.stream().await?;
        match crate::broker::read_retrying(|| stream.get_raw_message(seq)).await {
            Ok(msg) => Ok(Envelope::from_stored(&StoredMessage::from_raw(&msg))
                .ok()
                .filter(|env| env.job_id == job_id)
                .map(|env| (seq, env))),
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(BrokerError::Read(e.to_string())),
        }
    }

    /// Every record (job event or schedule record) with a sequence in `from..until`, in
    /// order, read straight from the stream. `None` marks a message that does not decode;
    /// timers and idempotency records are [`Record::Other`].
    pub async fn records_between(
        &self,
        from: u64,
        until: u64,
    ) -> Result<Vec<(u64, Option<Record>)>, BrokerError> {
        let stream = self.stream().await?;
        let mut out = Vec::new();
        let mut next = from;
        while next < until {
            match crate::broker::read_retrying(|| {
                stream.get_first_raw_message_by_subject(">", next)
            })
            .await
            {
                Ok(msg) if msg.sequence < until => {
                    next = msg.sequence + 1;
                    let rec = Record::from_stored(&StoredMessage::from_raw(&msg)).ok();
                    out.push((msg.sequence, rec));
                }
                Ok(_) => break,
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(BrokerError::Read(e.to_string())),
            }
        }
        Ok(out)
    }
}
