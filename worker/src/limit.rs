//! Per-queue global concurrency limits, enforced by the NATS server across every
//! worker and every priority lane.
//!
//! A limited queue has a *slots* consumer, `slots-<queue>`, on the stream
//! `<JOBS>_SLOTS`. Its subject `slots.<JOBS>.<queue>` holds at least `limit`
//! token messages, and the consumer's `max_ack_pending` is the limit. A worker
//! holds one token (delivered, not acked, kept alive by in-progress acks) while it
//! runs a job of the queue, and gives it back with a `Nak` when the attempt is
//! over. The server never has more than `limit` tokens out at once, however many
//! workers there are and whichever lane a job comes from; a worker that dies
//! loses its tokens to the server after `ack_wait`.
//!
//! The limit is configured by starting a worker with `--queue-limit queue=N`
//! (applied to an existing consumer, so the latest start wins); workers started
//! without it use the slots consumer if the queue has one.

use std::time::Duration;

use async_nats::jetstream::{
    self, Message,
    consumer::{self, AckPolicy, DeliverPolicy, pull},
    stream,
};
use futures::StreamExt;
use jobstream_core::broker::Broker;
use jobstream_core::subject::{self, QueueName};

/// The tokens of one limited queue.
pub struct Slots {
    consumer: consumer::Consumer<pull::Config>,
}

/// Name of the stream holding the tokens, beside the job stream.
pub fn slots_stream_name(job_stream: &str) -> String {
    subject::slots_stream(job_stream)
}

/// Durable name of a queue's slots consumer.
pub fn slots_consumer_name(queue: &QueueName) -> String {
    subject::slots_consumer(queue.as_str())
}

impl Slots {
    /// Sets the queue's limit: creates the slots stream, enough tokens and the
    /// consumer, or updates an existing consumer's `max_ack_pending`. Idempotent.
    pub async fn ensure(
        broker: &Broker,
        queue: &QueueName,
        limit: i64,
        ack_wait: Duration,
    ) -> Result<Slots, String> {
        let js = broker.jetstream();
        let job_stream = broker.stream_name();
        let replicas = js
            .get_stream(job_stream)
            .await
            .map_err(|e| e.to_string())?
            .cached_info()
            .config
            .num_replicas;
        let name = slots_stream_name(job_stream);
        js.create_or_update_stream(stream::Config {
            name: name.clone(),
            description: Some("jobstream: per-queue concurrency tokens".into()),
            subjects: vec![subject::all_slots(job_stream)],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
        let stream = js
            .get_stream_no_info(&name)
            .await
            .map_err(|e| e.to_string())?;
        let tokens_subject = subject::slots_of(job_stream, queue);
        let mut counts = stream
            .info_with_subjects(&tokens_subject)
            .await
            .map_err(|e| e.to_string())?;
        let mut have: i64 = 0;
        while let Some(entry) = counts.next().await {
            let (_, n) = entry.map_err(|e| e.to_string())?;
            have += i64::try_from(n).unwrap_or(i64::MAX);
        }
        // More tokens than the limit are harmless: `max_ack_pending` is the bound.
        for _ in have..limit {
            js.publish(tokens_subject.clone(), "slot".into())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
        }
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(slots_consumer_name(queue)),
                description: Some(format!(
                    "jobstream: at most {limit} jobs of queue {queue} run at once"
                )),
                filter_subject: tokens_subject,
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait,
                max_deliver: -1,
                max_ack_pending: limit,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(Slots { consumer })
    }

    /// The queue's slots, if a limit was ever set for it.
    pub async fn find(broker: &Broker, queue: &QueueName) -> Result<Option<Slots>, String> {
        use jetstream::context::ConsumerInfoErrorKind as Kind;
        let stream = broker
            .jetstream()
            .get_stream_no_info(slots_stream_name(broker.stream_name()))
            .await
            .map_err(|e| e.to_string())?;
        let name = slots_consumer_name(queue);
        match stream.consumer_info(&name).await {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), Kind::NotFound | Kind::StreamNotFound) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        }
        let consumer = stream
            .get_consumer(&name)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some(Slots { consumer }))
    }

    /// How long the server waits for a held token's in-progress ack before taking it back.
    pub fn ack_wait(&self) -> Duration {
        self.consumer.cached_info().config.ack_wait
    }

    /// Takes up to `n` tokens: what is free now, else waits up to `wait` for one.
    ///
    /// Tokens are requested one per pull request: a request for several that the
    /// server can only partly fill (the limit is reached) would be parked by the
    /// server until more are released, while this worker holds the ones it got.
    pub async fn acquire(&self, n: usize, wait: Duration) -> Vec<Message> {
        let mut tokens = Vec::new();
        while tokens.len() < n {
            match self.take_one(None).await {
                Some(t) => tokens.push(t),
                None => break,
            }
        }
        if tokens.is_empty()
            && let Some(t) = self.take_one(Some(wait)).await
        {
            tokens.push(t);
        }
        tokens
    }

    /// One token: at once (`None`: the server answers "none free" if it has none), or
    /// within `wait`.
    async fn take_one(&self, wait: Option<Duration>) -> Option<Message> {
        // Bounded: a request lost with a crashed server is never answered.
        let bound = wait.unwrap_or_default() + crate::lanes::ROUND_TRIP;
        let take = async {
            let batch = match wait {
                None => self.consumer.fetch().max_messages(1).messages().await,
                Some(wait) => {
                    self.consumer
                        .batch()
                        .max_messages(1)
                        .expires(wait)
                        .messages()
                        .await
                }
            };
            match batch {
                Ok(mut b) => match b.next().await {
                    Some(Ok(m)) => Some(m),
                    // No token free (404), the limit reached (409), or the wait ran out (408).
                    Some(Err(_)) | None => None,
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot request a concurrency slot");
                    None
                }
            }
        };
        tokio::time::timeout(bound, take).await.ok().flatten()
    }
}

/// Gives a token back to the server (another worker may take it at once).
pub async fn release(token: Message) {
    if let Err(e) = token.ack_with(jetstream::AckKind::Nak(None)).await {
        tracing::warn!(error = %e, "slot not released; the server takes it back after ack_wait");
    }
}
