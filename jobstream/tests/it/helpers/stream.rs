//! The job stream as a test reads and writes it, beside the services.

use std::time::Duration;

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures::StreamExt;
use jobstream_core::stored::StoredMessage;
use jobstream_core::subject::QueueName;
use jobstream_core::{Envelope, EventType, schedule};
use uuid::Uuid;

use super::TestApp;

/// The subject of the `queued` events `owner`'s schedule `name` fires.
pub(crate) fn fired_subject(owner: &str, name: &str) -> String {
    let key = schedule::schedule_key(owner, name);
    format!("jobs.default.{}.queued", schedule::fired_token(&key))
}

impl TestApp {
    /// Number of job events in the stream (`jobs.>`; a caller's first authenticated request
    /// also stores their `user.registered` under `users.>`, not counted here).
    pub(crate) async fn stream_messages(&self) -> u64 {
        use async_nats::jetstream::consumer::{AckPolicy, pull};
        let consumer = self
            .broker
            .jetstream()
            .get_stream("JOBS")
            .await
            .expect("stream")
            .create_consumer(pull::Config {
                filter_subject: "jobs.>".into(),
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(5),
                ..Default::default()
            })
            .await
            .expect("counting consumer");
        consumer.cached_info().num_pending
    }

    /// Every message in the stream, job and user events alike.
    pub(crate) async fn stream_total(&self) -> u64 {
        self.broker
            .jetstream()
            .get_stream("JOBS")
            .await
            .expect("stream")
            .info()
            .await
            .expect("info")
            .state
            .messages
    }

    /// The stream's last sequence.
    pub(crate) async fn stream_last(&self) -> u64 {
        jobstream_core::stream_read::bounds(&self.broker)
            .await
            .expect("bounds")
            .last
    }

    /// Every event of a job in the stream, in order.
    pub(crate) async fn history_of(&self, id: &str) -> Vec<Envelope> {
        let id = Uuid::parse_str(id).expect("uuid");
        self.broker
            .job_history(id)
            .await
            .expect("history")
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    /// The events of a job in the stream, of one type.
    pub(crate) async fn events_of(&self, id: &str, t: EventType) -> Vec<Envelope> {
        let mut events = self.history_of(id).await;
        events.retain(|e| e.event_type() == t);
        events
    }

    /// The attempts of a job that ran, as the stream tells them, in order: `(attempt,
    /// started_at)` from each `started` event, and from each outcome that names an
    /// attempt no `started` was stored for (the fast path).
    pub(crate) async fn attempts_run(&self, id: &str) -> Vec<(u32, chrono::DateTime<chrono::Utc>)> {
        let mut out: Vec<(u32, chrono::DateTime<chrono::Utc>)> = Vec::new();
        for env in self.history_of(id).await {
            let start = match (&env.event, &env.run) {
                (jobstream_core::Event::Started { .. }, _) => env.at,
                (_, Some(run)) => run.started_at,
                _ => continue,
            };
            if !out.iter().any(|(a, at)| *a == env.attempt && *at == start) {
                out.push((env.attempt, start));
            }
        }
        out
    }

    /// The jobs fired so far by `owner`'s schedule `name`, decoded from the stream, in order.
    pub(crate) async fn fired_jobs(&self, owner: &str, name: &str) -> Vec<(u64, Envelope)> {
        let subject = fired_subject(owner, name);
        let stream = self.broker.stream().await.expect("stream");
        let mut out = Vec::new();
        let mut next = 1;
        loop {
            match stream
                .get_first_raw_message_by_subject(&subject, next)
                .await
            {
                Ok(msg) => {
                    next = msg.sequence + 1;
                    let env = Envelope::from_stored(&StoredMessage::from_raw(&msg))
                        .expect("fired message decodes");
                    out.push((msg.sequence, env));
                }
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return out,
                Err(e) => panic!("reading fired jobs: {e}"),
            }
        }
    }

    /// Publishes the events `job_events(i)` of each job of `range` through the broker, many
    /// jobs at once, each job's events in order.
    pub(crate) async fn publish_jobs(
        &self,
        range: std::ops::Range<usize>,
        job_events: fn(usize) -> Vec<Envelope>,
    ) {
        let queue = QueueName::default_queue();
        futures::stream::iter(range)
            .map(|i| {
                let (broker, queue) = (&self.broker, &queue);
                async move {
                    for env in job_events(i) {
                        broker.publish(&env, queue, None).await.expect("publish");
                    }
                }
            })
            .buffer_unordered(256)
            .collect::<()>()
            .await;
    }

    /// Makes the job stream refuse every write, or accept them again. (A full store
    /// refuses the same way; `max_bytes` with `discard: new` cannot be used here, as the
    /// stream allows message schedules, and `discard: old` would drop events, so the
    /// stream's largest message size is cut to one byte instead.)
    pub(crate) async fn refuse_writes(&self, refuse: bool) {
        let js = self.broker.jetstream();
        let mut stream = js.get_stream("JOBS").await.expect("stream");
        let mut config = stream.info().await.expect("info").config.clone();
        config.max_message_size = if refuse { 1 } else { -1 };
        js.update_stream(config).await.expect("update stream");
    }
}
