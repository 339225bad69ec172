//! Admission control: the API refuses (`429` + `Retry-After`) what the workers cannot
//! finish in bounded time, so the jobs it accepts keep bounded latency.
//!
//! A queue's backlog is read from NATS, never from this process's memory alone, so
//! every API instance answers the same: the lane consumers of the queue
//! (`worker_high-<queue>`, `worker-<queue>`, `worker_low-<queue>`) say how many runnable
//! jobs wait (`num_pending`) and how many run (`num_ack_pending`), and the first
//! undelivered message of a lane says how long the oldest waiting job has waited.
//!
//! Reading consumer info on every request would cost more than the submission, so a
//! queue's reading is kept for [`AdmissionConfig::refresh`] (one reader refreshes, the
//! others use the reading meanwhile). Between readings the jobs this process admitted
//! since the reading began are added to it, so a burst on one instance cannot run past
//! the bound by a whole refresh period. Other instances' admissions show up at the next
//! reading: N instances may overshoot by at most what they admit in one period.
//!
//! A queue no worker ever served has no lane consumers; its backlog is unknown and it
//! is admitted. When the reading fails (NATS unreachable) the submission is admitted
//! too: the publish then fails on its own, and a 503 says more than a 429 would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::RawMessageErrorKind;
use jobstream_core::broker::Broker;
use jobstream_core::event::Priority;
use jobstream_core::subject::{self, QueueName};

/// Bounds on each queue's backlog; both off by default.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// Runnable jobs (waiting plus running) a queue may hold before submissions are
    /// refused; `None`: no bound. [`Self::queue_depth`] overrides it per queue.
    pub max_queue_depth: Option<u64>,
    /// Per-queue depth bounds, by queue name.
    pub queue_depth: HashMap<String, u64>,
    /// How long the oldest waiting job of a queue may have waited before submissions
    /// are refused; `None`: no bound.
    pub max_queue_age: Option<Duration>,
    /// How long one reading of a queue's backlog is used before it is read again.
    pub refresh: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_queue_depth: None,
            queue_depth: HashMap::new(),
            max_queue_age: None,
            refresh: Duration::from_millis(200),
        }
    }
}

impl AdmissionConfig {
    /// The depth bound of `queue`, if any.
    pub fn depth_bound(&self, queue: &str) -> Option<u64> {
        self.queue_depth
            .get(queue)
            .copied()
            .or(self.max_queue_depth)
    }

    fn is_off(&self) -> bool {
        self.max_queue_depth.is_none()
            && self.queue_depth.is_empty()
            && self.max_queue_age.is_none()
    }
}

/// A refusal: why, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shed {
    /// What is over its bound, for the problem's `detail`.
    pub reason: String,
    /// When a retry has a fair chance (the `Retry-After` header).
    pub retry_after: Duration,
}

/// Admission control of one API process (cheap to clone; clones share the readings).
#[derive(Clone, Default)]
pub struct Admission {
    config: Arc<AdmissionConfig>,
    queues: Arc<Mutex<HashMap<String, Arc<QueueGate>>>>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The backlog of one queue as last read, and the admissions since.
#[derive(Default)]
struct QueueGate {
    state: Mutex<GateState>,
    /// Held by the one request that refreshes the reading.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct GateState {
    reading: Option<Reading>,
    /// Jobs this process admitted to the queue, ever (monotonic).
    admitted: u64,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    /// When the reading began.
    at: Instant,
    /// `admitted` when the reading began: later admissions are not in it.
    admitted: u64,
    /// Runnable jobs waiting or running.
    depth: u64,
    /// Age of the oldest waiting job (zero when none waits).
    oldest: Duration,
    /// Deliveries so far over every lane (to measure the drain rate).
    delivered: u64,
    /// Jobs per second the workers took since the previous reading (`None`: unknown).
    drain_rate: Option<f64>,
    /// Whether the queue has lane consumers at all.
    served: bool,
}

/// Longest `Retry-After` given, and the one given when the queue does not drain at all.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
const STALLED_RETRY_AFTER: Duration = Duration::from_secs(5);

impl Admission {
    /// Admission control with these bounds.
    pub fn new(config: AdmissionConfig) -> Self {
        Admission {
            config: Arc::new(config),
            queues: Arc::default(),
        }
    }

    /// The bounds in force.
    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// Admits `jobs` new runnable jobs per queue (all or none), or says why not. The
    /// admitted jobs count against the bound until the next reading shows them.
    pub async fn admit(&self, broker: &Broker, jobs: &[(&QueueName, u64)]) -> Result<(), Shed> {
        if self.config.is_off() {
            return Ok(());
        }
        let mut gates = Vec::with_capacity(jobs.len());
        for &(queue, n) in jobs {
            let gate = self.gate(queue);
            gate.fresh(broker, queue, &self.config).await;
            gates.push((queue, gate, n));
        }
        // Check every queue first, then count: a refused batch is refused whole.
        for (queue, gate, n) in &gates {
            gate.check(queue, *n, &self.config)?;
        }
        for (_, gate, n) in &gates {
            gate.lock().admitted += n;
        }
        Ok(())
    }

    fn gate(&self, queue: &QueueName) -> Arc<QueueGate> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.entry(queue.to_string()).or_default().clone()
    }
}

impl QueueGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes sure a reading no older than `config.refresh` is there, or that another
    /// request is taking one while an older one serves.
    async fn fresh(&self, broker: &Broker, queue: &QueueName, config: &AdmissionConfig) {
        let stale = |s: &GateState| s.reading.is_none_or(|r| r.at.elapsed() >= config.refresh);
        if !stale(&self.lock()) {
            return;
        }
        let _refreshing = match self.refreshing.try_lock() {
            Ok(guard) => guard,
            // Someone refreshes: use the old reading meanwhile, or wait for the first one.
            Err(_) if self.lock().reading.is_some() => return,
            Err(_) => self.refreshing.lock().await,
        };
        if !stale(&self.lock()) {
            return;
        }
        let (at, admitted) = (Instant::now(), self.lock().admitted);
        match read_backlog(broker, queue, config.max_queue_age.is_some()).await {
            Ok(backlog) => {
                let mut state = self.lock();
                let drain_rate = state.reading.and_then(|prev| {
                    let secs = at.duration_since(prev.at).as_secs_f64();
                    (secs > 0.0 && backlog.delivered >= prev.delivered)
                        .then(|| (backlog.delivered - prev.delivered) as f64 / secs)
                });
                state.reading = Some(Reading {
                    at,
                    admitted,
                    depth: backlog.depth,
                    oldest: backlog.oldest,
                    delivered: backlog.delivered,
                    drain_rate,
                    served: backlog.served,
                });
            }
            Err(e) => {
                // Fail open (see the module docs); keep the old reading, if any, for now.
                tracing::debug!(queue = %queue, error = %e, "queue backlog unreadable; admitting");
            }
        }
    }

    /// Whether `n` more jobs fit in the queue.
    fn check(&self, queue: &QueueName, n: u64, config: &AdmissionConfig) -> Result<(), Shed> {
        let state = self.lock();
        let Some(r) = state.reading.filter(|r| r.served) else {
            return Ok(());
        };
        let depth = r.depth + state.admitted.saturating_sub(r.admitted);
        if let Some(bound) = config.depth_bound(queue.as_str())
            && depth + n > bound
        {
            let excess = (depth + n - bound) as f64;
            return Err(Shed {
                reason: format!(
                    "queue {queue} holds {depth} runnable jobs and takes at most {bound}; retry later"
                ),
                retry_after: retry_after(r.drain_rate.map(|rate| excess / rate)),
            });
        }
        if let Some(max_age) = config.max_queue_age
            && r.oldest > max_age
        {
            return Err(Shed {
                reason: format!(
                    "the oldest waiting job of queue {queue} has waited {} ms (bound {} ms); retry later",
                    r.oldest.as_millis(),
                    max_age.as_millis()
                ),
                retry_after: retry_after(Some((r.oldest - max_age).as_secs_f64())),
            });
        }
        Ok(())
    }
}

/// Whole seconds to wait for `secs` (unknown or not draining: a few seconds), clamped.
fn retry_after(secs: Option<f64>) -> Duration {
    match secs {
        Some(s) if s.is_finite() => {
            Duration::from_secs(s.ceil().max(1.0) as u64).min(MAX_RETRY_AFTER)
        }
        _ => STALLED_RETRY_AFTER,
    }
}

/// A queue's backlog as NATS sees it.
struct Backlog {
    depth: u64,
    oldest: Duration,
    delivered: u64,
    served: bool,
}

/// Reads the lane consumers of `queue` (and, with `ages`, their oldest waiting messages).
async fn read_backlog(broker: &Broker, queue: &QueueName, ages: bool) -> Result<Backlog, String> {
    let stream = broker.stream().await.map_err(|e| e.to_string())?;
    let mut backlog = Backlog {
        depth: 0,
        oldest: Duration::ZERO,
        delivered: 0,
        served: false,
    };
    for lane in [Priority::High, Priority::Normal, Priority::Low] {
        let info = match stream
            .consumer_info(subject::lane_consumer(queue, lane))
            .await
        {
            Ok(info) => info,
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => continue,
            Err(e) => return Err(e.to_string()),
        };
        backlog.served = true;
        backlog.depth += info.num_pending + info.num_ack_pending as u64;
        backlog.delivered += info.delivered.consumer_sequence;
        if ages && info.num_pending > 0 {
            // The first message after the last delivered one is the oldest still waiting.
            for filter in subject::runnable_in(queue, lane) {
                match stream
                    .get_first_raw_message_by_subject(&filter, info.delivered.stream_sequence + 1)
                    .await
                {
                    Ok(msg) => {
                        backlog.oldest = backlog.oldest.max(since(msg.time.unix_timestamp_nanos()));
                    }
                    Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
    }
    Ok(backlog)
}

/// How long ago a Unix time in nanoseconds was (zero if in the future).
fn since(unix_nanos: i128) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i128;
    u64::try_from(now - unix_nanos).map_or(Duration::ZERO, Duration::from_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_follows_the_drain_rate_within_bounds() {
        assert_eq!(retry_after(Some(0.2)), Duration::from_secs(1));
        assert_eq!(retry_after(Some(3.5)), Duration::from_secs(4));
        assert_eq!(retry_after(Some(1e9)), MAX_RETRY_AFTER);
        assert_eq!(retry_after(None), STALLED_RETRY_AFTER);
        assert_eq!(retry_after(Some(f64::INFINITY)), STALLED_RETRY_AFTER);
    }

    #[test]
    fn per_queue_bounds_override_the_default() {
        let config = AdmissionConfig {
            max_queue_depth: Some(10),
            queue_depth: HashMap::from([("mail".to_owned(), 3)]),
            ..AdmissionConfig::default()
        };
        assert_eq!(config.depth_bound("mail"), Some(3));
        assert_eq!(config.depth_bound("default"), Some(10));
        assert!(AdmissionConfig::default().is_off());
    }
}
