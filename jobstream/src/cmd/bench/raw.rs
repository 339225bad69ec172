//! The raw JetStream loop: jobstream's round trip straight on JetStream, with no HTTP
//! and no SQL, as the floor the full system is measured against.
//!
//! - a publisher appends `queued` events (real [`Envelope`]s of an `echo` job, with the
//!   request-id header and `Nats-Msg-Id` the API sends, so messages are the same size),
//!   waiting for each PubAck as the API does before its `202`;
//! - a worker pull consumer (explicit acks) takes each, decodes it, appends `succeeded`
//!   and double-acks once that is stored, as the worker does;
//! - a second consumer over every event (ack-all, batches), standing in for the
//!   projector, decodes each event and marks the job done when its `succeeded` arrives.
//!
//! Its stream has the same settings as `JOBS` (file storage, limits, duplicate window)
//! on the same server, so both runs get the same durability. Subjects are
//! `jraw.<queue>.<job_id>.<event>`: the shape and length of `jobs.…`, without
//! overlapping the `JOBS` stream of a running system.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, message::PublishMessage, stream};
use futures::StreamExt;
use jobstream_core::event::{Event, JobSpec, Priority, REQUEST_ID_HEADER, RetryBackoff};
use jobstream_core::subject::{self, QueueName};
use jobstream_core::{Envelope, EventType, catalogue};
use serde_json::json;
use uuid::Uuid;

/// Name of the raw loop's stream.
pub const STREAM: &str = "JOBSRAW";
/// Subject prefix of the raw loop (as long as `jobs`).
const PREFIX: &str = "jraw";

/// How the raw publisher paces itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Closed loop: this many publishes in flight at once.
    Closed {
        /// Publishes in flight.
        concurrency: usize,
    },
    /// Open loop: this many jobs per second, whatever the pipeline does.
    Rate {
        /// Jobs per second.
        per_sec: u32,
    },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RawOptions {
    /// NATS server (or the servers of a cluster, comma-separated).
    pub nats_url: String,
    /// Replicas of the raw loop's stream.
    pub replicas: usize,
    /// Jobs.
    pub jobs: usize,
    /// Publisher pacing.
    pub pace: Pace,
    /// Jobs the raw worker handles at once (jobstream's worker default is 32).
    pub worker_concurrency: usize,
    /// Events the raw projector takes per batch (the projector's default is 500).
    pub projector_batch: usize,
    /// Print progress lines to stderr.
    pub progress: bool,
    /// Give up after this long.
    pub timeout: Duration,
}

/// What the raw loop measured.
#[derive(Debug, Clone)]
pub struct RawResult {
    /// `queued` events stored (PubAck received).
    pub published: usize,
    /// Distinct jobs whose `succeeded` the raw projector saw.
    pub succeeded: usize,
    /// Events the raw projector saw in all.
    pub events_seen: usize,
    /// First publish to the last PubAck.
    pub submit_elapsed: Duration,
    /// First publish to the last `succeeded` seen by the raw projector.
    pub elapsed: Duration,
    /// Per job: submission (scheduled time in an open loop) to the raw projector seeing `succeeded`, ms.
    pub latencies_ms: Vec<f64>,
    /// Messages the stream gained.
    pub stream_messages: u64,
    /// Bytes the stream gained.
    pub stream_bytes: u64,
}

/// The queued event of raw job `i`, as the API would build it for `{"kind":"echo","payload":{"i":i}}`.
fn queued_event(i: usize, owner: &str) -> Envelope {
    let kind = catalogue::find("echo").expect("echo is a built-in kind");
    Envelope::new(
        Uuid::now_v7(),
        0,
        Event::Queued(JobSpec {
            kind: kind.name.to_owned(),
            queue: QueueName::default_queue(),
            owner: owner.to_owned(),
            payload: json!({ "i": i }),
            priority: Priority::Normal,
            max_attempts: kind.default_max_attempts,
            timeout_ms: kind.default_timeout_ms,
            run_at: None,
            idempotency_key: None,
            result_ttl_ms: None,
            backoff: Some(RetryBackoff {
                base_ms: kind.default_backoff.base_ms,
                max_ms: kind.default_backoff.max_ms,
            }),
        }),
    )
}

fn raw_subject(queue: &QueueName, env: &Envelope) -> String {
    let real = subject::for_event(queue, env.job_id, &env.event);
    format!("{PREFIX}{}", &real[real.find('.').unwrap_or(0)..])
}

async fn publish(js: &jetstream::Context, env: &Envelope) -> anyhow::Result<()> {
    let queue = QueueName::default_queue();
    let mut headers = HeaderMap::new();
    headers.insert(REQUEST_ID_HEADER, Uuid::new_v4().to_string().as_str());
    let msg = PublishMessage::build()
        .payload(env.to_bytes().into())
        .headers(headers)
        .message_id(env.event_id.to_string());
    js.send_publish(raw_subject(&queue, env), msg)
        .await?
        .await
        .context("raw publish not acknowledged")?;
    Ok(())
}

async fn stream_state(js: &jetstream::Context) -> anyhow::Result<(u64, u64)> {
    let mut s = js.get_stream(STREAM).await?;
    let info = s.info().await?;
    Ok((info.state.messages, info.state.bytes))
}

/// Runs the raw loop once on a fresh stream (deleted again at the end).
pub async fn run(opts: &RawOptions) -> anyhow::Result<RawResult> {
    anyhow::ensure!(opts.jobs > 0, "the raw loop needs at least one job");
    let client = async_nats::ConnectOptions::new()
        .name("jobstream-bench-raw")
        .connect(jobstream_core::broker::server_addrs(&opts.nats_url)?)
        .await
        .with_context(|| format!("connecting to {}", opts.nats_url))?;
    let js = jetstream::new(client);
    let _ = js.delete_stream(STREAM).await;
    let defaults = jobstream_core::broker::StreamSettings::default();
    let stream = js
        .create_stream(stream::Config {
            name: STREAM.to_owned(),
            subjects: vec![format!("{PREFIX}.>")],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: defaults.max_age,
            duplicate_window: defaults.duplicate_window,
            num_replicas: opts.replicas,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .context("creating the raw loop's stream")?;
    let result = run_on(&js, &stream, opts).await;
    let _ = js.delete_stream(STREAM).await;
    result
}

async fn run_on(
    js: &jetstream::Context,
    stream: &stream::Stream,
    opts: &RawOptions,
) -> anyhow::Result<RawResult> {
    let worker = stream
        .create_consumer(pull::Config {
            durable_name: Some("raw-worker".into()),
            filter_subject: format!("{PREFIX}.*.*.{}", EventType::Queued.as_str()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await?;
    let projector = stream
        .create_consumer(pull::Config {
            durable_name: Some("raw-projector".into()),
            filter_subject: format!("{PREFIX}.>"),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::All,
            ack_wait: Duration::from_secs(60),
            max_ack_pending: i64::try_from(opts.projector_batch * 4).unwrap_or(i64::MAX),
            ..Default::default()
        })
        .await?;
    let before = stream_state(js).await?;

    // Submission times by job: written by the publisher, read by the raw projector.
    let submitted: Arc<Mutex<HashMap<Uuid, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(opts.jobs)));
    let started = Instant::now();

    // The raw worker.
    let worker_js = js.clone();
    let worker_concurrency = opts.worker_concurrency.max(1);
    let worker_task = tokio::spawn(async move {
        let messages = worker.messages().await?;
        messages
            .for_each_concurrent(worker_concurrency, |msg| {
                let js = worker_js.clone();
                async move {
                    let Ok(msg) = msg else { return };
                    let Ok(queued) = serde_json::from_slice::<Envelope>(&msg.payload) else {
                        let _ = msg.ack_with(jetstream::AckKind::Term).await;
                        return;
                    };
                    let Event::Queued(spec) = &queued.event else {
                        let _ = msg.ack_with(jetstream::AckKind::Term).await;
                        return;
                    };
                    let done = Envelope::new(
                        queued.job_id,
                        1,
                        Event::Succeeded {
                            result: spec.payload.clone(),
                        },
                    );
                    if publish(&js, &done).await.is_ok() {
                        let _ = msg.double_ack().await;
                    }
                }
            })
            .await;
        anyhow::Ok(())
    });

    // The raw projector.
    let jobs = opts.jobs;
    let batch = opts.projector_batch.max(1);
    let progress = opts.progress;
    let seen_by = Arc::clone(&submitted);
    let projector_task = tokio::spawn(async move {
        let mut messages = projector
            .stream()
            .max_messages_per_batch(batch * 2)
            .messages()
            .await?
            .ready_chunks(batch);
        let (mut events, mut latencies) = (0usize, Vec::with_capacity(jobs));
        let mut done = std::collections::HashSet::with_capacity(jobs);
        let step = (jobs / 10).max(1);
        while let Some(chunk) = messages.next().await {
            let mut last = None;
            for msg in chunk {
                let msg = msg.map_err(|e| anyhow::anyhow!("raw projector: {e}"))?;
                events += 1;
                if let Ok(env) = serde_json::from_slice::<Envelope>(&msg.payload)
                    && env.event_type() == EventType::Succeeded
                    && done.insert(env.job_id)
                {
                    let now = Instant::now();
                    if let Some(at) = seen_by.lock().expect("lock").get(&env.job_id) {
                        latencies.push(now.saturating_duration_since(*at).as_secs_f64() * 1e3);
                    }
                    if progress && done.len().is_multiple_of(step) {
                        eprintln!("raw loop: succeeded {}/{jobs}", done.len());
                    }
                }
                last = Some(msg);
            }
            if let Some(m) = last {
                m.ack().await.map_err(|e| anyhow::anyhow!("raw ack: {e}"))?;
            }
            if done.len() >= jobs {
                return anyhow::Ok((events, done.len(), latencies, Instant::now()));
            }
        }
        anyhow::bail!("the raw projector's message stream ended")
    });

    // The publisher.
    let owner = format!("bench-raw-{}", Uuid::now_v7().simple());
    let publish_one = |i: usize, at: Instant| {
        let (js, owner, submitted) = (js.clone(), owner.clone(), Arc::clone(&submitted));
        async move {
            let env = queued_event(i, &owner);
            submitted.lock().expect("lock").insert(env.job_id, at);
            publish(&js, &env).await
        }
    };
    let published = match opts.pace {
        Pace::Closed { concurrency } => {
            futures::stream::iter(0..opts.jobs)
                .map(|i| publish_one(i, Instant::now()))
                .buffer_unordered(concurrency.max(1))
                .filter(|r| std::future::ready(r.is_ok()))
                .count()
                .await
        }
        Pace::Rate { per_sec } => {
            let mut tasks = tokio::task::JoinSet::new();
            let interval = Duration::from_secs_f64(1.0 / f64::from(per_sec.max(1)));
            for i in 0..opts.jobs {
                let at = started + interval.mul_f64(i as f64);
                tokio::time::sleep_until(at.into()).await;
                tasks.spawn(publish_one(i, at));
            }
            tasks
                .join_all()
                .await
                .into_iter()
                .filter(Result::is_ok)
                .count()
        }
    };
    let submit_elapsed = started.elapsed();
    anyhow::ensure!(
        published == opts.jobs,
        "raw loop: only {published}/{} publishes were acknowledged",
        opts.jobs
    );

    let mut projector_task = projector_task;
    let outcome = tokio::time::timeout(opts.timeout, &mut projector_task).await;
    worker_task.abort();
    projector_task.abort();
    let (events_seen, succeeded, latencies_ms, finished) = outcome
        .map_err(|_| {
            anyhow::anyhow!(
                "raw loop: not every job succeeded within {:?}",
                opts.timeout
            )
        })?
        .context("raw projector task")??;
    let after = stream_state(js).await?;
    Ok(RawResult {
        published,
        succeeded,
        events_seen,
        submit_elapsed,
        elapsed: finished.saturating_duration_since(started),
        latencies_ms,
        stream_messages: after.0.saturating_sub(before.0),
        stream_bytes: after.1.saturating_sub(before.1),
    })
}
