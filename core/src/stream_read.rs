//! Reading stored messages back from the job stream: SSE catch-up, per-job
//! history, `wait`, replay and verify.
//!
//! Every stored message these readers hand out is decoded by [`decode`], the one
//! place that turns a stored message into an [`Envelope`]. Reads go by stream
//! sequence and cover every subject of the stream (not only `jobs.>`), so a
//! replay sees everything the stream holds.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use uuid::Uuid;

use crate::broker::{Broker, BrokerError};
use crate::event::{DecodeError, Envelope};
use crate::stored::{Record, StoredMessage};
use crate::subject;

/// Filter matching every subject of the stream.
pub const EVERYTHING: &str = ">";

/// One message as the stream stores it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Stream sequence.
    pub seq: u64,
    /// Subject it was stored under.
    pub subject: String,
    /// Headers it was stored with.
    pub headers: Option<HeaderMap>,
    /// The stored bytes.
    pub payload: Bytes,
    /// When the server stored it.
    pub stored_at: DateTime<Utc>,
}

impl Stored {
    /// The message as [`crate::stored`]'s one decoder reads it.
    pub fn as_stored(&self) -> StoredMessage<'_> {
        StoredMessage {
            subject: &self.subject,
            sequence: self.seq,
            headers: self.headers.as_ref(),
            payload: &self.payload,
            time: self.stored_at,
        }
    }
}

/// Turns a stored message into a job event, through the one decoder
/// ([`Envelope::from_stored`]: scheduler-fired jobs need the whole stored message).
pub fn decode(msg: &Stored) -> Result<Envelope, DecodeError> {
    Envelope::from_stored(&msg.as_stored())
}

/// Turns a stored message into any record of the stream (job event, schedule or user
/// record, machinery); `None` (logged) when it does not decode. What replay folds.
pub fn decode_record_or_log(msg: &Stored) -> Option<Record> {
    match Record::from_stored(&msg.as_stored()) {
        Ok(rec) => Some(rec),
        Err(e) => {
            tracing::warn!(stream_seq = msg.seq, subject = %msg.subject, error = %e, "undecodable message skipped");
            None
        }
    }
}

/// [`decode`], logging (and dropping) what does not decode: a warning for a job
/// subject, a debug line for other subjects of the stream (not job events).
pub fn decode_or_log(msg: &Stored) -> Option<Envelope> {
    match decode(msg) {
        Ok(env) => Some(env),
        Err(e) if subject::parse(&msg.subject).is_some() => {
            tracing::warn!(stream_seq = msg.seq, subject = %msg.subject, error = %e, "undecodable job event skipped");
            None
        }
        Err(e) => {
            tracing::debug!(stream_seq = msg.seq, subject = %msg.subject, error = %e, "not a job event; skipped");
            None
        }
    }
}

fn utc(nanos: i128) -> DateTime<Utc> {
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(0);
    let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0);
    DateTime::from_timestamp(secs, sub).unwrap_or_default()
}

impl From<async_nats::jetstream::message::StreamMessage> for Stored {
    fn from(m: async_nats::jetstream::message::StreamMessage) -> Self {
        Stored {
            seq: m.sequence,
            subject: m.subject.to_string(),
            headers: Some(m.headers),
            payload: m.payload,
            stored_at: utc(m.time.unix_timestamp_nanos()),
        }
    }
}

/// First and last sequence the stream holds (`first > last` when it is empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Oldest stored sequence (older ones expired or were deleted).
    pub first: u64,
    /// Newest stored sequence.
    pub last: u64,
}

/// The stream's current bounds.
pub async fn bounds(broker: &Broker) -> Result<Bounds, BrokerError> {
    let stream = broker.stream().await?;
    let info = stream
        .get_info()
        .await
        .map_err(|e| BrokerError::Read(e.to_string()))?;
    Ok(Bounds {
        first: info.state.first_sequence,
        last: info.state.last_sequence,
    })
}

/// The first message at or after `seq` whose subject matches `filter`, if any.
pub async fn next_at_or_after(
    stream: &stream::Stream<()>,
    filter: &str,
    seq: u64,
) -> Result<Option<Stored>, BrokerError> {
    match stream
        .direct_get_next_for_subject(filter, Some(seq.max(1)))
        .await
    {
        Ok(m) => Ok(Some(m.into())),
        Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(BrokerError::Read(e.to_string())),
    }
}

/// Most messages asked for in one batched direct get.
const BATCH: usize = 256;
/// How long a batched direct get may take before the reader falls back to single gets.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Up to `max` messages matching `filter` from `from` on, in one batched direct get
/// (ADR-31: the server streams the messages, then an end-of-batch status).
/// `None` when the server does not answer as expected: the caller reads one by one.
async fn read_batch(broker: &Broker, filter: &str, from: u64, max: usize) -> Option<Vec<Stored>> {
    let client = broker.client();
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.ok()?;
    let request = serde_json::json!({
        "seq": from.max(1),
        "next_by_subj": filter,
        "batch": max,
    });
    client
        .publish_with_reply(
            broker.direct_get_subject().clone(),
            inbox,
            request.to_string().into(),
        )
        .await
        .ok()?;
    let mut out = Vec::new();
    let result = loop {
        let msg = match tokio::time::timeout(BATCH_TIMEOUT, sub.next()).await {
            Ok(Some(m)) => m,
            _ => break None,
        };
        match msg.status.map(|s| s.as_u16()) {
            // End of batch.
            Some(204) => break Some(out),
            // Nothing (more) matches.
            Some(404) if out.is_empty() => break Some(out),
            Some(_) => break None,
            None => match async_nats::jetstream::message::StreamMessage::try_from(msg) {
                Ok(m) => {
                    out.push(Stored::from(m));
                    if out.len() >= max {
                        break Some(out);
                    }
                }
                Err(_) => break None,
            },
        }
    };
    let _ = sub.unsubscribe().await;
    result
}

/// Up to `max` messages matching `filter` with sequence `>= from`, in order.
pub async fn read_from(
    broker: &Broker,
    filter: &str,
    from: u64,
    max: usize,
) -> Result<Vec<Stored>, BrokerError> {
    // Batched pages first (one round trip per page); one message per request as a fallback.
    let mut out = Vec::new();
    let mut next = from;
    while out.len() < max {
        let want = (max - out.len()).min(BATCH);
        match read_batch(broker, filter, next, want).await {
            // A short page may be the server's byte limit, not the end: only an empty one is.
            Some(page) => match page.last() {
                // Direct gets may be answered by a replica that lags the leader: the end is
                // confirmed by the leader, which also reads whatever the replica missed.
                None => {
                    let rest = read_one_by_one(broker, filter, next, max - out.len()).await?;
                    out.extend(rest);
                    return Ok(out);
                }
                Some(last) => {
                    next = last.seq + 1;
                    out.extend(page);
                }
            },
            None => {
                tracing::debug!(
                    filter,
                    next,
                    "batched direct get unavailable; reading one by one"
                );
                let rest = read_one_by_one(broker, filter, next, max - out.len()).await?;
                out.extend(rest);
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// [`read_from`] with one request per message, answered by the stream's leader.
async fn read_one_by_one(
    broker: &Broker,
    filter: &str,
    from: u64,
    max: usize,
) -> Result<Vec<Stored>, BrokerError> {
    let stream = broker.stream().await?;
    let mut out = Vec::new();
    let mut next = from.max(1);
    while out.len() < max {
        match crate::broker::read_retrying(|| stream.get_first_raw_message_by_subject(filter, next))
            .await
        {
            Ok(m) => {
                next = m.sequence + 1;
                out.push(Stored::from(m));
            }
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => break,
            Err(e) => return Err(BrokerError::Read(e.to_string())),
        }
    }
    Ok(out)
}

/// Every stored event of one job, in stream order, decoded.
pub async fn job_events(
    broker: &Broker,
    job_id: Uuid,
) -> Result<Vec<(Stored, Envelope)>, BrokerError> {
    let msgs = read_from(broker, &subject::of_job(job_id), 1, usize::MAX).await?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| decode_or_log(&m).map(|e| (m, e)))
        .collect())
}

/// The sequence of the first message stored at or after `t` (`None` if there is none).
pub async fn first_seq_since(
    broker: &Broker,
    t: DateTime<Utc>,
) -> Result<Option<u64>, BrokerError> {
    let b = bounds(broker).await?;
    if b.first > b.last {
        return Ok(None);
    }
    let stream = broker.stream().await?;
    // Stored times grow with the sequence: binary search over [first, last + 1).
    let (mut lo, mut hi) = (b.first, b.last + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match next_at_or_after(&stream, EVERYTHING, mid).await? {
            Some(m) if m.stored_at >= t => hi = mid.min(m.seq),
            Some(m) => lo = m.seq + 1,
            None => hi = mid,
        }
    }
    Ok((lo <= b.last).then_some(lo))
}

/// Every message from `start_seq` on, through one ordered (ephemeral, ack-less) consumer,
/// with the number of messages still pending after each one. Runs until dropped.
pub async fn ordered_from(
    broker: &Broker,
    start_seq: u64,
    description: &str,
) -> Result<impl Stream<Item = Result<(Stored, u64), BrokerError>> + use<>, BrokerError> {
    let stream = broker.stream().await?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            description: Some(description.to_owned()),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start_seq.max(1),
            },
            ..Default::default()
        })
        .await
        .map_err(|e| BrokerError::Read(e.to_string()))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| BrokerError::Read(e.to_string()))?;
    Ok(messages
        .map(|m| {
            let m = m.map_err(|e| BrokerError::Read(e.to_string()))?;
            let info = m.info().map_err(|e| BrokerError::Read(e.to_string()))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            let stored_at = utc(info.published.unix_timestamp_nanos());
            Ok((
                Stored {
                    seq,
                    subject: m.subject.to_string(),
                    headers: m.headers.clone(),
                    payload: m.payload.clone(),
                    stored_at,
                },
                pending,
            ))
        })
        // async-nats recreates an ordered consumer that has delivered nothing yet (after a
        // server restart, say) from the stream's start, not from `start_seq`: what comes
        // before `start_seq` is dropped here.
        .filter(move |m| {
            let before_start = matches!(m, Ok((stored, _)) if stored.seq < start_seq);
            std::future::ready(!before_start)
        }))
}

/// How long readers wait between retries after a failed read.
pub const RETRY_DELAY: Duration = Duration::from_millis(500);
