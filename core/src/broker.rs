//! NATS JetStream: connecting, the `JOBS` stream, publishing and reading events.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use uuid::Uuid;

use crate::event::{Envelope, REQUEST_ID_HEADER};
use crate::subject;
use crate::trace::Correlation;

/// Oldest nats-server jobstream runs against: message schedules with `@every`/cron arrived in 2.14.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 14);

/// Settings of the `JOBS` stream, applied idempotently at start.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Stream name.
    pub name: String,
    /// How long events are kept (limits retention).
    pub max_age: Duration,
    /// Window within which a repeated `Nats-Msg-Id` is dropped as a duplicate.
    pub duplicate_window: Duration,
    /// Replicas: 1 in development, 3 in production clusters.
    pub replicas: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            name: "JOBS".to_owned(),
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(2 * 60),
            replicas: 1,
        }
    }
}

/// Errors talking to NATS.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The connection could not be made.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why.
        source: async_nats::ConnectError,
    },
    /// The server is older than jobstream supports.
    #[error(
        "nats-server {found} is too old: jobstream needs {}.{} or newer (message schedules). Install the pinned version with `make nats-server`",
        MIN_SERVER_VERSION.0,
        MIN_SERVER_VERSION.1
    )]
    ServerTooOld {
        /// Version the server reported.
        found: String,
    },
    /// The server does not have JetStream enabled.
    #[error(
        "nats-server at {0} does not have JetStream enabled (start it with -js or a jetstream block)"
    )]
    NoJetStream(String),
    /// Creating or updating the stream failed.
    #[error("cannot create or update stream {name}: {source}")]
    Stream {
        /// Stream name.
        name: String,
        /// Why.
        source: jetstream::context::CreateStreamError,
    },
    /// The server refused the publish for what it holds (a wrong expected sequence, a
    /// refused schedule, a batch too large): definitely not stored.
    #[error("event not stored: {0}")]
    Publish(#[from] jetstream::context::PublishError),
    /// The server answered, every time until the deadline, that it cannot store now
    /// (store full, an incomplete batch): definitely not stored; retry later.
    #[error("event not stored, the stream refuses writes: {0}")]
    NotStored(String),
    /// No answer until the deadline (timeouts, no responders during an election, a lost
    /// connection): the event may or may not be stored. Retrying with the same
    /// `Nats-Msg-Id` (or idempotency key) is safe; claiming "not stored" is not.
    #[error("unknown whether the event was stored: {0}")]
    OutcomeUnknown(String),
    /// Reading from the stream failed.
    #[error("cannot read the stream: {0}")]
    Read(String),
    /// A conditional append was refused: the job has a newer event than the caller folded.
    #[error("job {job_id} changed meanwhile; event not stored")]
    Conflict {
        /// The job.
        job_id: Uuid,
    },
}

/// How long a publish whose outcome is unknown is retried with the same `Nats-Msg-Id`
/// before the caller is told so (see [`Broker::with_publish_deadline`]); well inside
/// the API's 60 s request timeout.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(15);
/// Headers holding a request id, if any.
fn request_headers(request_id: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(rid) = request_id {
        headers.insert(REQUEST_ID_HEADER, rid);
    }
    headers
}

/// Longest wait for one attempt's PubAck; a slower answer counts as unknown and is
/// re-sent. Short, so a message lost in a server crash is re-sent soon after the
/// reconnect; cheap when the server was merely slow: the stream answers the re-sent
/// copy `duplicate` once the first is stored. The deadline above bounds the whole.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// First pause between attempts; doubles up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(50);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(500);

/// What one publish attempt tells about the message.
#[derive(Debug)]
pub(crate) enum Attempt<T> {
    /// Stored (now, or by an earlier attempt: a duplicate).
    Stored(T),
    /// The answer is definite and final: return it.
    Final(BrokerError),
    /// Not stored by this attempt, and the server may accept it soon (store full, an
    /// incomplete batch): retry.
    Refused(String),
    /// No answer: maybe stored. Retry with the same message id.
    Unknown(String),
}

/// Sorts a publish error: what the server definitely refused for its content, what it
/// cannot take now, and what left the outcome unknown.
pub(crate) fn classify<T>(e: jetstream::context::PublishError) -> Attempt<T> {
    use jetstream::context::PublishErrorKind as K;
    match e.kind() {
        K::TimedOut | K::BrokenPipe | K::StreamNotFound => Attempt::Unknown(e.to_string()),
        K::WrongLastSequence | K::WrongLastMessageId | K::MaxPayloadExceeded => {
            Attempt::Final(BrokerError::Publish(e))
        }
        // The client's own limit on outstanding acks: nothing was sent.
        K::MaxAckPending => Attempt::Refused(e.to_string()),
        K::Other => {
            let api = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<jetstream::Error>())
                .map(|a| a.error_code());
            match api {
                // A refusal of the content (bad schedule, batch too large …) is final.
                Some(_) if crate::atomic::is_content_refusal(&e.to_string()) => {
                    Attempt::Final(BrokerError::Publish(e))
                }
                // Any other JetStream answer (store full, incomplete batch, stream offline)
                // is a server condition that may clear.
                Some(_) => Attempt::Refused(e.to_string()),
                // Not an answer from the server (the request could not be sent or read).
                None => Attempt::Unknown(e.to_string()),
            }
        }
    }
}

/// Retries `attempt` until it gives a definite answer or `deadline` passes.
pub(crate) async fn with_retries<T, F, Fut>(
    deadline: Duration,
    mut attempt: F,
) -> Result<T, BrokerError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Attempt<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    let mut pause = RETRY_PAUSE_MIN;
    // Once an attempt may have stored the message, only a stored answer may say otherwise.
    let mut maybe_stored = false;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let why = match attempt().await {
            Attempt::Stored(t) => return Ok(t),
            Attempt::Final(e) => return Err(e),
            Attempt::Refused(why) => why,
            Attempt::Unknown(why) => {
                maybe_stored = true;
                why
            }
        };
        let now = tokio::time::Instant::now();
        if now + pause >= until {
            tracing::warn!(tries, maybe_stored, error = %why, "publish gave no definite answer before its deadline");
            return Err(if maybe_stored {
                BrokerError::OutcomeUnknown(why)
            } else {
                BrokerError::NotStored(why)
            });
        }
        tracing::debug!(tries, error = %why, "publish retried with the same message id");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_PAUSE_MAX);
    }
}

/// How long creating or updating the stream at start is asked again when unanswered.
const STREAM_SETUP_DEADLINE: Duration = Duration::from_secs(60);

/// How long a direct get waits for a replica before asking the stream leader instead.
pub const DIRECT_GET_WAIT: Duration = Duration::from_secs(1);

/// How long a direct read of the stream is retried when it times out or finds no
/// responder: what a read sees while the cluster elects a stream leader (a lame duck
/// node handing over, a leader killed). Short: an API request waits on it.
const READ_DEADLINE: Duration = Duration::from_secs(5);

/// Runs a direct read of the stream (`get_*_raw_message*`), retrying it while it fails
/// for want of an answer for up to 5 s; "no message" and a bad subject are answers.
pub async fn read_retrying<T, F, Fut>(mut read: F) -> Result<T, stream::LastRawMessageError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, stream::LastRawMessageError>>,
{
    use stream::LastRawMessageErrorKind as K;
    let until = tokio::time::Instant::now() + READ_DEADLINE;
    let mut pause = RETRY_PAUSE_MIN;
    loop {
        match read().await {
            Err(e)
                if !matches!(e.kind(), K::NoMessageFound | K::InvalidSubject)
                    && tokio::time::Instant::now() + pause < until =>
            {
                tracing::debug!(error = %e, "stream read retried");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_PAUSE_MAX);
            }
            other => return other,
        }
    }
}

/// Header: the subject filter (wildcards allowed) that `Nats-Expected-Last-Subject-Sequence` checks.
pub const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str =
    "Nats-Expected-Last-Subject-Sequence-Subject";

/// A connection to NATS plus the stream jobstream uses.
#[derive(Clone, Debug)]
pub struct Broker {
    client: async_nats::Client,
    js: jetstream::Context,
    stream_name: String,
    /// `$JS.API.DIRECT.GET.<stream>`, built once: every job's check before its first run
    /// sends a request to it.
    direct_get: async_nats::Subject,
    publish_deadline: Duration,
}

/// The servers of a `NATS_URL`: one URL or a comma-separated list (spaces allowed).
pub fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>, std::io::Error> {
    let servers = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<async_nats::ServerAddr>, _>>()?;
    if servers.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no NATS server URL given",
        ));
    }
    Ok(servers)
}

/// Parses `major.minor` out of a server version like `2.14.6` or `v2.14.0-beta`.
pub fn parse_version(v: &str) -> Option<(u64, u64)> {
    let mut it = v.trim_start_matches('v').split(['.', '-']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

impl Broker {
    /// Connects, refusing servers older than [`MIN_SERVER_VERSION`]. `url` may list
    /// several servers of one cluster, comma-separated: the client connects to any of
    /// them and reconnects to another (or one the cluster announces) when its server goes.
    pub async fn connect(
        url: &str,
        client_name: &str,
        stream_name: &str,
    ) -> Result<Self, BrokerError> {
        let connect_error = |source| BrokerError::Connect {
            url: url.to_owned(),
            source,
        };
        let servers = server_addrs(url).map_err(|e| {
            connect_error(async_nats::ConnectError::with_source(
                async_nats::ConnectErrorKind::ServerParse,
                e,
            ))
        })?;
        let client = async_nats::ConnectOptions::new()
            .name(client_name)
            .connection_timeout(Duration::from_secs(5))
            .connect(servers)
            .await
            .map_err(connect_error)?;
        let info = client.server_info();
        match parse_version(&info.version) {
            Some(v) if v >= MIN_SERVER_VERSION => {}
            _ => {
                return Err(BrokerError::ServerTooOld {
                    found: info.version,
                });
            }
        }
        if !info.jetstream {
            return Err(BrokerError::NoJetStream(url.to_owned()));
        }
        let js = jetstream::new(client.clone());
        Ok(Broker {
            client,
            js,
            stream_name: stream_name.to_owned(),
            direct_get: format!("$JS.API.DIRECT.GET.{stream_name}").into(),
            publish_deadline: PUBLISH_DEADLINE,
        })
    }

    /// Creates the stream, or updates it to `settings` when it exists. Safe to call from every process.
    pub async fn ensure_stream(
        &self,
        settings: &StreamSettings,
    ) -> Result<stream::Info, BrokerError> {
        let config = stream::Config {
            name: settings.name.clone(),
            subjects: subject::stream_subjects(),
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: settings.max_age,
            duplicate_window: settings.duplicate_window,
            num_replicas: settings.replicas,
            allow_direct: true,
            allow_message_ttl: true,
            allow_atomic_publish: true,
            allow_message_schedules: true,
            // Deleting a periodic schedule replaces its record with `Nats-Rollup: sub`.
            allow_rollup: true,
            ..Default::default()
        };
        // On a cluster several processes starting at once create the replicated stream
        // together, and the meta leader may be busy electing: a timeout is asked again.
        let until = tokio::time::Instant::now() + STREAM_SETUP_DEADLINE;
        loop {
            match self.js.create_or_update_stream(config.clone()).await {
                Err(e)
                    if matches!(
                        e.kind(),
                        jetstream::context::CreateStreamErrorKind::TimedOut
                            | jetstream::context::CreateStreamErrorKind::JetStreamUnavailable
                    ) && tokio::time::Instant::now() < until =>
                {
                    tracing::warn!(error = %e, "stream set-up not answered; asking again");
                }
                other => {
                    return other.map_err(|source| BrokerError::Stream {
                        name: settings.name.clone(),
                        source,
                    });
                }
            }
        }
    }

    /// The same connection with another deadline for publishes whose outcome is unknown
    /// (default [`PUBLISH_DEADLINE`]); the API keeps it inside its request timeout.
    pub fn with_publish_deadline(mut self, deadline: Duration) -> Self {
        self.publish_deadline = deadline;
        self
    }

    /// How long a publish whose outcome is unknown is retried.
    pub fn publish_deadline(&self) -> Duration {
        self.publish_deadline
    }

    /// The raw client (for consumers that need their own subscriptions).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Name of the job stream.
    pub fn stream_name(&self) -> &str {
        &self.stream_name
    }

    /// The subject of the stream's direct gets (`$JS.API.DIRECT.GET.<stream>`), which any
    /// replica answers.
    pub fn direct_get_subject(&self) -> &async_nats::Subject {
        &self.direct_get
    }

    /// A handle on the job stream, without fetching its info.
    pub async fn stream(&self) -> Result<stream::Stream<()>, BrokerError> {
        self.js
            .get_stream_no_info(&self.stream_name)
            .await
            .map_err(|e| BrokerError::Read(e.to_string()))
    }

    /// Appends an event and waits until the server has stored it; returns its stream sequence.
    ///
    /// The event id is the `Nats-Msg-Id`, so a retried publish is stored once.
    pub async fn publish(
        &self,
        env: &Envelope,
        queue: &subject::QueueName,
        request_id: Option<&str>,
    ) -> Result<u64, BrokerError> {
        self.publish_with(env, queue, request_headers(request_id), None)
            .await
    }

    /// [`Broker::publish`] with the job's request id and trace context (see [`crate::trace`]).
    pub async fn publish_correlated(
        &self,
        env: &Envelope,
        queue: &subject::QueueName,
        correlation: &Correlation,
    ) -> Result<u64, BrokerError> {
        let mut headers = HeaderMap::new();
        correlation.write(&mut headers);
        self.publish_with(env, queue, headers, None).await
    }

    /// [`Broker::publish_if_last`] with the job's request id and trace context.
    pub async fn publish_if_last_correlated(
        &self,
        env: &Envelope,
        queue: &subject::QueueName,
        correlation: &Correlation,
        last_seq: u64,
    ) -> Result<u64, BrokerError> {
        let mut headers = HeaderMap::new();
        correlation.write(&mut headers);
        self.publish_with(env, queue, headers, Some(last_seq)).await
    }

    /// Appends an event only if the job's latest stored event is at `last_seq`
    /// (JetStream optimistic concurrency over the job's subjects); so a decision
    /// made from the job's history cannot be overtaken by another event.
    /// [`BrokerError::Conflict`] means something happened to the job meanwhile: fold again.
    pub async fn publish_if_last(
        &self,
        env: &Envelope,
        queue: &subject::QueueName,
        request_id: Option<&str>,
        last_seq: u64,
    ) -> Result<u64, BrokerError> {
        self.publish_with(env, queue, request_headers(request_id), Some(last_seq))
            .await
    }

    /// Publishes with `headers`; with `last_seq`, only if the job's latest stored event is there.
    async fn publish_with(
        &self,
        env: &Envelope,
        queue: &subject::QueueName,
        mut headers: HeaderMap,
        last_seq: Option<u64>,
    ) -> Result<u64, BrokerError> {
        let subject = subject::for_event(queue, env.job_id, &env.event);
        if let Some(last_seq) = last_seq {
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                last_seq.to_string().as_str(),
            );
            headers.insert(
                EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT,
                subject::of_job(env.job_id).as_str(),
            );
        }
        let stored = self.publish_message(env, subject, headers).await;
        match stored {
            Err(BrokerError::Publish(e))
                if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence =>
            {
                Err(BrokerError::Conflict { job_id: env.job_id })
            }
            other => other,
        }
    }

    async fn publish_message(
        &self,
        env: &Envelope,
        subject: String,
        headers: HeaderMap,
    ) -> Result<u64, BrokerError> {
        let payload: bytes::Bytes = env.to_bytes().into();
        let msg_id = env.event_id.to_string();
        // The same `Nats-Msg-Id` every attempt: a repeat of a stored event is answered
        // `duplicate` (with the first copy's sequence), never stored twice.
        with_retries(self.publish_deadline, || {
            let msg = PublishMessage::build()
                .payload(payload.clone())
                .headers(headers.clone())
                .message_id(msg_id.as_str());
            let subject = subject.clone();
            async move {
                let ack = match self.js.send_publish(subject, msg).await {
                    Ok(fut) => tokio::time::timeout(ATTEMPT_TIMEOUT, fut.into_future()).await,
                    Err(e) => return classify(e),
                };
                match ack {
                    Ok(Ok(ack)) => Attempt::Stored(ack.sequence),
                    Ok(Err(e)) => classify(e),
                    Err(_) => Attempt::Unknown("no PubAck in time".to_owned()),
                }
            }
        })
        .await
    }

    /// The payload of the last event on `filter` (wildcards allowed), if any: what a
    /// caller compares with an event it holds to learn whether that event is still the
    /// latest (event ids make every event's bytes unique).
    ///
    /// A direct get (`$JS.API.DIRECT.GET`) without headers (`no_hdr`): any replica
    /// answers it without the JetStream API's request routing, which made
    /// `STREAM.MSG.GET` about a ninth of nats-server's CPU per job, and without headers
    /// nats-server does not rebuild the stored headers with its own four added (about
    /// 6 % of its CPU per job when every job asked for them). A replica may not have the
    /// newest events yet, so an append decided on the answer must be conditional on it
    /// ([`Broker::publish_if_last`]): the leader checks that. When no replica answers
    /// within [`DIRECT_GET_WAIT`], the leader is asked through the API
    /// ([`Broker::last_on_subject`]). Written out rather than async-nats's
    /// `direct_get_last_for_subject`, which puts the subject in the request's subject,
    /// where a wildcard filter cannot go, and always asks for the headers.
    pub async fn last_payload_on(&self, filter: &str) -> Result<Option<bytes::Bytes>, BrokerError> {
        let read =
            |e: &dyn std::fmt::Display| BrokerError::Read(format!("last event on {filter}: {e}"));
        /// The request (ADR-31): the last message on a subject filter, without its headers.
        #[derive(serde::Serialize)]
        struct LastBySubject<'a> {
            last_by_subj: &'a str,
            no_hdr: bool,
        }
        let request = serde_json::to_vec(&LastBySubject {
            last_by_subj: filter,
            no_hdr: true,
        })
        .map_err(|e| read(&e))?;
        let asked = tokio::time::timeout(
            DIRECT_GET_WAIT,
            self.client.request(self.direct_get.clone(), request.into()),
        );
        let reply = match asked.await {
            Ok(Ok(reply)) => reply,
            // No replica answers (none serves direct gets, or one that is catching up after
            // an election keeps silent): the leader does, through the API.
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    async_nats::RequestErrorKind::NoResponders
                        | async_nats::RequestErrorKind::TimedOut
                ) =>
            {
                return self.last_payload_from_leader(filter).await;
            }
            Err(_) => return self.last_payload_from_leader(filter).await,
            Ok(Err(e)) => return Err(read(&e)),
        };
        match reply.status {
            Some(async_nats::StatusCode::NOT_FOUND) => Ok(None),
            Some(status) if status != async_nats::StatusCode::OK => {
                let why = reply.description.unwrap_or_default();
                Err(read(&format!("{status} {why}")))
            }
            _ => Ok(Some(reply.payload)),
        }
    }

    /// The payload of the last message on `filter`, read from the stream leader.
    async fn last_payload_from_leader(
        &self,
        filter: &str,
    ) -> Result<Option<bytes::Bytes>, BrokerError> {
        Ok(self.last_on_subject(filter).await?.map(|m| m.payload))
    }

    /// Every stored event of one job, in stream order, as `(sequence, envelope)`.
    /// Undecodable messages are skipped with a warning.
    pub async fn job_history(&self, job_id: Uuid) -> Result<Vec<(u64, Envelope)>, BrokerError> {
        let stream = self.stream().await?;
        let filter = subject::of_job(job_id);
        let mut out = Vec::new();
        let mut next = 1;
        loop {
            match read_retrying(|| stream.get_first_raw_message_by_subject(&filter, next)).await {
                Ok(msg) => {
                    next = msg.sequence + 1;
                    match Envelope::from_stored(&crate::stored::StoredMessage::from_raw(&msg)) {
                        Ok(env) => out.push((msg.sequence, env)),
                        Err(e) => {
                            tracing::warn!(seq = msg.sequence, error = %e, "skipping undecodable event");
                        }
                    }
                }
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                    // A job fired by a periodic schedule: its `queued` event is on the schedule's subject.
                    if !out.iter().any(|(_, e)| {
                        matches!(
                            e.event_type(),
                            crate::EventType::Queued | crate::EventType::Scheduled
                        )
                    }) && let Some(fired) = self.fired_queued_event(job_id).await?
                    {
                        out.insert(out.partition_point(|(s, _)| *s < fired.0), fired);
                    }
                    return Ok(out);
                }
                Err(e) => return Err(BrokerError::Read(e.to_string())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nats_url_may_list_the_servers_of_a_cluster() {
        let servers = server_addrs("nats://a:4222, nats://b:4223,nats://c:4224").unwrap();
        let ports: Vec<u16> = servers.iter().map(async_nats::ServerAddr::port).collect();
        assert_eq!(ports, [4222, 4223, 4224]);
        assert_eq!(server_addrs("127.0.0.1:4222").unwrap().len(), 1);
        assert!(server_addrs(" , ").is_err());
        assert!(server_addrs("nats://a:4222,nats://b:notaport").is_err());
    }

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(parse_version("2.14.6"), Some((2, 14)));
        assert_eq!(parse_version("v2.15.0-beta.1"), Some((2, 15)));
        assert!(parse_version("2.9.10").unwrap() < MIN_SERVER_VERSION);
        assert_eq!(parse_version("garbage"), None);
    }
}
