//! Prometheus metrics: every metric name, bounded label values, the recorder and the
//! `/metrics` text (see `docs/metrics.md` for what each one means and which role exports it).
//!
//! Counters and histograms are recorded where things happen (`metrics::counter!` …) into
//! the process's one recorder ([`install`]). Gauges read from the projection or from NATS
//! are computed at scrape time by [`GaugeSource`]s, at most once per [`GAUGE_CACHE`], so a
//! busy scraper does not load the database or the server.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::event::{Envelope, Event};
use crate::fold::{JobState, JobStatus};

/// `jobs_enqueued_total{queue,kind,source}`: jobs accepted (api, batch: the API; schedule: the projector).
pub const JOBS_ENQUEUED: &str = "jobstream_jobs_enqueued_total";
/// `job_attempts_total{queue,kind,outcome}`: attempts ended (projector).
pub const JOB_ATTEMPTS: &str = "jobstream_job_attempts_total";
/// `jobs_finished_total{queue,kind,status}`: jobs that reached a final status (projector).
pub const JOBS_FINISHED: &str = "jobstream_jobs_finished_total";
/// Histogram `{queue,kind}`: how long one attempt ran (projector).
pub const JOB_RUN_DURATION: &str = "jobstream_job_run_duration_seconds";
/// Histogram `{queue,kind}`: from enqueue (or `run_at`) to the first attempt's start (projector).
pub const JOB_QUEUE_WAIT: &str = "jobstream_job_queue_wait_seconds";
/// Histogram `{queue,kind,status}`: from enqueue to the final status (projector).
pub const JOB_E2E_DURATION: &str = "jobstream_job_e2e_duration_seconds";
/// `schedule_fires_total{queue,kind}`: jobs fired by periodic schedules (projector).
pub const SCHEDULE_FIRES: &str = "jobstream_schedule_fires_total";
/// Gauge `{queue,status}`: jobs in the projection (projector, at scrape time).
pub const JOBS: &str = "jobstream_jobs";
/// Gauge `{queue}`: age of the oldest job waiting to run (projector, at scrape time).
pub const QUEUE_OLDEST_WAITING_AGE: &str = "jobstream_queue_oldest_waiting_job_age_seconds";
/// Gauge `{queue}`: workers pulling from the queue (projector, from NATS, at scrape time).
pub const WORKERS: &str = "jobstream_workers";
/// Gauge: job slots of this worker process (its concurrency).
pub const WORKER_SLOTS: &str = "jobstream_worker_slots";
/// Gauge: job slots of this worker process running a handler now.
pub const WORKER_SLOTS_BUSY: &str = "jobstream_worker_slots_busy";
/// Gauge: stream messages the projection has not applied yet (projector, at scrape time).
pub const PROJECTOR_LAG: &str = "jobstream_projector_lag_messages";
/// Gauge: the projector's checkpoint, the last stream sequence in SQL (projector).
pub const PROJECTOR_LAST_APPLIED: &str = "jobstream_projector_last_applied_sequence";
/// Gauge `{consumer}`: messages not yet delivered to a consumer (projector, at scrape time).
pub const NATS_CONSUMER_PENDING: &str = "jobstream_nats_consumer_pending_messages";
/// Gauge `{consumer}`: messages delivered and not yet acked (projector, at scrape time).
pub const NATS_CONSUMER_ACK_PENDING: &str = "jobstream_nats_consumer_ack_pending_messages";
/// Gauge `{consumer}`: messages delivered more than once and not yet acked (projector, at scrape time).
pub const NATS_CONSUMER_REDELIVERED: &str = "jobstream_nats_consumer_redelivered_messages";
/// Gauge `{consumer}`: the consumer's last acked stream sequence (projector, at scrape time),
/// so "pending but no progress" is a rule on it.
pub const NATS_CONSUMER_ACK_FLOOR: &str = "jobstream_nats_consumer_ack_floor_sequence";
/// Gauge: messages in the job stream (projector, at scrape time).
pub const NATS_STREAM_MESSAGES: &str = "jobstream_nats_stream_messages";
/// Gauge: bytes in the job stream (projector, at scrape time).
pub const NATS_STREAM_BYTES: &str = "jobstream_nats_stream_bytes";
/// Gauge: 1 while this process is connected to NATS (every role).
pub const NATS_CONNECTED: &str = "jobstream_nats_connected";
/// `http_requests_total{route,method,status}` (API).
pub const HTTP_REQUESTS: &str = "jobstream_http_requests_total";
/// Histogram `{route,method}` (API).
pub const HTTP_REQUEST_DURATION: &str = "jobstream_http_request_duration_seconds";
/// Gauge: open SSE streams of this API process.
pub const SSE_CONNECTIONS: &str = "jobstream_sse_connections";
/// Gauge `{version}`, always 1 (every role).
pub const BUILD_INFO: &str = "jobstream_build_info";

/// How long scrape-time gauges are reused before they are read again.
pub const GAUGE_CACHE: Duration = Duration::from_secs(5);

/// The kind label for `kind`: built-in kinds by name, anything else `other`, so a client
/// cannot grow the label set.
pub fn kind_label(kind: &str) -> &'static str {
    crate::catalogue::find(kind).map_or("other", |k| k.name)
}

/// The recorder's handle, once [`install`]ed.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same handle) and
/// sets `build_info`. Histograms get buckets, so they are real Prometheus histograms.
/// Until it is called (`--metrics off` never calls it) every `metrics::counter!` … is a
/// no-op, which is what `jobstream bench --metrics compare` measures against.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = bucketed(PrometheusBuilder::new());
            let handle = match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is global already (a test harness): serve an empty registry.
                Err(e) => {
                    tracing::warn!(error = %e, "a metrics recorder is installed already");
                    bucketed(PrometheusBuilder::new()).build_recorder().handle()
                }
            };
            let upkeep = handle.clone();
            // Drains histogram samples even when nobody scrapes, so memory stays flat.
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(GAUGE_CACHE);
                        upkeep.run_upkeep();
                    }
                })
                .ok();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

fn bucketed(builder: PrometheusBuilder) -> PrometheusBuilder {
    // Jobs run from milliseconds to an hour; requests from microseconds to a minute.
    const JOB: &[f64] = &[
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
        3600.0,
    ];
    const HTTP: &[f64] = &[
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    ];
    let mut b = builder;
    for (name, buckets) in [
        (JOB_RUN_DURATION, JOB),
        (JOB_QUEUE_WAIT, JOB),
        (JOB_E2E_DURATION, JOB),
        (HTTP_REQUEST_DURATION, HTTP),
    ] {
        b = match b.set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets) {
            Ok(b) => b,
            Err(_) => unreachable!("bucket lists are not empty"),
        };
    }
    b
}

/// A future returned by a [`GaugeSource`].
pub type Refresh<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Something that sets gauges from the outside world (the projection, NATS) when scraped.
pub trait GaugeSource: Send + Sync + 'static {
    /// Reads the world and sets the gauges; errors are logged, the old values stay.
    fn refresh(&self) -> Refresh<'_>;
}

/// What `/metrics` serves: the recorder's text, after the gauge sources refreshed (cached).
#[derive(Clone)]
pub struct Exporter {
    sources: Vec<Arc<dyn GaugeSource>>,
    refreshed: Arc<tokio::sync::Mutex<Option<Instant>>>,
}

impl Exporter {
    /// The process's exporter, without gauge sources; it serves what the recorder holds
    /// once [`install`]ed.
    pub fn new() -> Self {
        Exporter {
            sources: Vec::new(),
            refreshed: Arc::default(),
        }
    }

    /// Adds a source of scrape-time gauges.
    pub fn with_source(mut self, source: Arc<dyn GaugeSource>) -> Self {
        self.sources.push(source);
        self
    }

    /// The Prometheus text; refreshes the scrape-time gauges first when older than [`GAUGE_CACHE`].
    pub async fn render(&self) -> String {
        let Some(handle) = HANDLE.get() else {
            return "# metrics are off in this process (--metrics off)\n".to_owned();
        };
        {
            // Held across the refresh: concurrent scrapes wait for one refresh, not run many.
            let mut refreshed = self.refreshed.lock().await;
            if refreshed.is_none_or(|at| at.elapsed() >= GAUGE_CACHE) {
                for source in &self.sources {
                    source.refresh().await;
                }
                *refreshed = Some(Instant::now());
            }
        }
        handle.render()
    }
}

impl Default for Exporter {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("sources", &self.sources.len())
            .finish()
    }
}

/// Sets `nats_connected` from a process's NATS client.
#[derive(Debug)]
pub struct NatsConnected(pub async_nats::Client);

impl GaugeSource for NatsConnected {
    fn refresh(&self) -> Refresh<'_> {
        let up = self.0.connection_state() == async_nats::connection::State::Connected;
        metrics::gauge!(NATS_CONNECTED).set(if up { 1.0 } else { 0.0 });
        Box::pin(std::future::ready(()))
    }
}

/// Keeps a gauge of things in progress (`worker_slots_busy`, `sse_connections`) up by one
/// while it lives.
#[derive(Debug)]
pub struct InProgress(&'static str);

impl InProgress {
    /// One more on the gauge `name` until the guard drops.
    pub fn enter(name: &'static str) -> Self {
        metrics::gauge!(name).increment(1.0);
        InProgress(name)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}

/// Sets `worker_slots`: the job slots (concurrency) of this worker process.
pub fn worker_slots(n: usize) {
    metrics::gauge!(WORKER_SLOTS).set(n as f64);
}

/// Counts a job the API stored (`source`: `api` or `batch`).
pub fn job_enqueued(queue: &str, kind: &str, source: &'static str) {
    metrics::counter!(JOBS_ENQUEUED, "queue" => queue.to_owned(), "kind" => kind_label(kind), "source" => source)
        .increment(1);
}

/// What one applied job event means for the job metrics, taken inside the projector's
/// transaction and recorded ([`JobTransition::record`]) only after it commits, so a batch
/// retried after a fault is never counted twice.
#[derive(Debug, Clone, PartialEq)]
pub struct JobTransition {
    queue: String,
    kind: &'static str,
    /// A periodic schedule fired this job (its `queued` event came from nats-server).
    fired: bool,
    /// Outcome of the attempt the event ended, if it ended one.
    attempt_outcome: Option<&'static str>,
    /// How long that attempt ran.
    run: Option<f64>,
    /// From enqueue to the first attempt's start, on the first attempt's outcome.
    queue_wait: Option<f64>,
    /// The final status the job reached, with its end-to-end time.
    finished: Option<(&'static str, f64)>,
}

impl JobTransition {
    /// The transition from `before` (`None`: a new job) to `after` by `env`, stored at
    /// `seq`; `None` when it moves no metric.
    pub fn observe(
        before: Option<JobStatus>,
        after: &JobState,
        env: &Envelope,
        seq: u64,
    ) -> Option<Self> {
        let fired = before.is_none()
            && matches!(env.event, Event::Queued(_))
            && crate::stored::fired_sequence(env.job_id) == seq;
        let attempt_outcome = match &env.event {
            Event::Succeeded { .. } => Some("succeeded"),
            Event::Retrying { .. } | Event::Failed { .. } if env.attempt > 0 => {
                // The worker says so (its deadline fired), whatever the error text.
                Some(if env.run.as_ref().is_some_and(|r| r.timed_out) {
                    "timeout"
                } else if matches!(env.event, Event::Retrying { .. }) {
                    "retrying"
                } else {
                    "failed"
                })
            }
            // Only a cancel that stopped a running attempt ends one.
            Event::Cancelled { .. } if env.run.is_some() => Some("cancelled"),
            _ => None,
        };
        let started = env.run.as_ref().map(|r| r.started_at);
        let run = started.map(|s| seconds(s, env.at));
        let enqueued = after
            .spec
            .run_at
            .map_or(after.created_at, |r| r.max(after.created_at));
        let queue_wait = (env.attempt == 1 && attempt_outcome.is_some())
            .then_some(started)
            .flatten()
            .map(|s| seconds(enqueued, s));
        let finished = (after.status.is_terminal() && before.is_some_and(|b| !b.is_terminal()))
            .then(|| (after.status.as_str(), seconds(after.created_at, env.at)));
        let t = JobTransition {
            queue: after.spec.queue.as_str().to_owned(),
            kind: kind_label(&after.spec.kind),
            fired,
            attempt_outcome,
            run: run.filter(|_| attempt_outcome.is_some()),
            queue_wait,
            finished,
        };
        (fired || attempt_outcome.is_some() || finished.is_some()).then_some(t)
    }

    /// Moves the counters and histograms.
    pub fn record(&self) {
        let (queue, kind) = (self.queue.clone(), self.kind);
        if self.fired {
            metrics::counter!(SCHEDULE_FIRES, "queue" => queue.clone(), "kind" => kind)
                .increment(1);
            metrics::counter!(JOBS_ENQUEUED, "queue" => queue.clone(), "kind" => kind, "source" => "schedule")
                .increment(1);
        }
        if let Some(outcome) = self.attempt_outcome {
            metrics::counter!(JOB_ATTEMPTS, "queue" => queue.clone(), "kind" => kind, "outcome" => outcome)
                .increment(1);
        }
        if let Some(run) = self.run {
            metrics::histogram!(JOB_RUN_DURATION, "queue" => queue.clone(), "kind" => kind)
                .record(run);
        }
        if let Some(wait) = self.queue_wait {
            metrics::histogram!(JOB_QUEUE_WAIT, "queue" => queue.clone(), "kind" => kind)
                .record(wait);
        }
        if let Some((status, e2e)) = self.finished {
            metrics::counter!(JOBS_FINISHED, "queue" => queue.clone(), "kind" => kind, "status" => status)
                .increment(1);
            metrics::histogram!(JOB_E2E_DURATION, "queue" => queue, "kind" => kind, "status" => status)
                .record(e2e);
        }
    }
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).to_std().map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_outside_the_catalogue_are_other() {
        assert_eq!(kind_label("echo"), "echo");
        assert_eq!(kind_label("anything-a-client-sends"), "other");
    }

    /// The outcome of attempt 1 of a job, ended by `event` with `timed_out` on its run.
    fn outcome(event: Event, timed_out: bool) -> Option<&'static str> {
        use crate::event::{AttemptRun, JobSpec, Priority};
        let id = uuid::Uuid::now_v7();
        let spec = JobSpec {
            kind: "sleep".into(),
            queue: crate::subject::QueueName::default_queue(),
            owner: "alice".into(),
            payload: serde_json::json!({}),
            priority: Priority::Normal,
            max_attempts: 2,
            timeout_ms: 10,
            run_at: None,
            idempotency_key: None,
            result_ttl_ms: None,
            backoff: None,
        };
        let mut job = JobState::from_queued(&Envelope::new(id, 0, Event::Queued(spec)), 1)?;
        let before = job.status;
        let env = Envelope::new(id, 1, event).with_run(AttemptRun {
            worker: "w".into(),
            started_at: crate::event::now(),
            timed_out,
        });
        job.apply(&env, 2).ok()?;
        JobTransition::observe(Some(before), &job, &env, 2)?.attempt_outcome
    }

    #[test]
    fn timeout_comes_from_the_workers_deadline_not_the_error_text() {
        let retrying = |error: &str| Event::Retrying {
            error: error.into(),
            retry_in_ms: 10,
        };
        assert_eq!(outcome(retrying("slow"), true), Some("timeout"));
        let failed = Event::Failed {
            error: "slow".into(),
        };
        assert_eq!(outcome(failed, true), Some("timeout"));
        // A handler's own error that reads like a timeout is its failure, not our deadline.
        assert_eq!(
            outcome(retrying("timed out after 5 ms"), false),
            Some("retrying")
        );
    }
}
