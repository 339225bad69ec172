//! Priority lanes: one durable consumer per queue and lane (pulled most urgent first
//! by [`crate::pull`]), and the doorbell that tells an idle puller a message came.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{self, AckPolicy, DeliverPolicy, pull},
};
use jobstream_core::event::Priority;
use jobstream_core::subject::{self, QueueName};

use crate::limit::Slots;
use crate::pause::PauseGate;
use crate::run::{WorkerConfig, lane_consumer_name};

/// The lane consumers of one queue, most urgent first, and its slots when it is limited.
pub(crate) struct QueueLanes {
    pub(crate) queue: QueueName,
    /// The job stream (to rebuild the lane consumers' handles).
    pub(crate) stream: jetstream::stream::Stream<()>,
    pub(crate) lanes: Vec<(Priority, consumer::Consumer<pull::Config>)>,
    pub(crate) slots: Option<Slots>,
    /// Whether the queue is paused (then nothing is pulled).
    pub(crate) pause: PauseGate,
}

/// Creates a lane consumer, or brings an existing one up to date (its filters; its
/// other settings, such as `max_ack_pending`, are kept). A queue's global limit is
/// not set here but with tokens ([`crate::limit`]): a lane's `max_ack_pending` also
/// counts messages waiting out their retry back-off, which are not running.
pub(crate) async fn ensure_lane_consumer(
    stream: &jetstream::stream::Stream<()>,
    config: &WorkerConfig,
    queue: &QueueName,
    lane: Priority,
) -> Result<consumer::Consumer<pull::Config>, String> {
    use async_nats::jetstream::consumer::FromConsumer;
    let name = lane_consumer_name(queue, lane);
    let mut wanted = match stream.consumer_info(&name).await {
        Ok(info) => {
            pull::Config::try_from_consumer_config(info.config).map_err(|e| e.to_string())?
        }
        Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
            pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!(
                    "jobstream workers of queue {queue}, {} priority",
                    lane.as_str()
                )),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                // Attempts are counted by the worker against each job's own max_attempts.
                max_deliver: -1,
                max_ack_pending: config.queue_max_in_flight,
                ..Default::default()
            }
        }
        Err(e) => return Err(e.to_string()),
    };
    wanted.filter_subject = String::new();
    wanted.filter_subjects = subject::runnable_in(queue, lane);
    stream
        .create_consumer(wanted)
        .await
        .map_err(|e| e.to_string())
}

/// Longest wait for any answer of the server to the puller (a pull request is
/// `no_wait`: the server answers at once, with messages or "none"). A request lost
/// in a server crash is never answered; without this bound the puller waits forever
/// (the async-nats pull-consumer stall, nats.rs #860/#1285).
pub(crate) const ROUND_TRIP: Duration = Duration::from_secs(5);

/// The doorbell of a queue: one core NATS subscription per runnable subject filter.
pub(crate) type Doorbell = futures::stream::SelectAll<async_nats::Subscriber>;

impl QueueLanes {
    /// Fresh consumer handles for every lane (what a stalled puller does before pulling again).
    pub(crate) async fn rebuild(&mut self) {
        for (lane, consumer) in &mut self.lanes {
            let name = lane_consumer_name(&self.queue, *lane);
            match tokio::time::timeout(ROUND_TRIP, self.stream.get_consumer(&name)).await {
                Ok(Ok(c)) => *consumer = c,
                Ok(Err(e)) => {
                    tracing::warn!(queue = %self.queue, lane = lane.as_str(), error = %e, "cannot rebuild the lane consumer");
                }
                Err(_) => {
                    tracing::warn!(queue = %self.queue, lane = lane.as_str(), "cannot rebuild the lane consumer: no answer");
                }
            }
        }
    }
}

/// New runnable messages of a queue (any lane), as a signal only.
pub(crate) async fn doorbell(client: &async_nats::Client, queue: &QueueName) -> Doorbell {
    let mut subs = Vec::new();
    for lane in subject::LANES {
        for filter in subject::runnable_in(queue, lane) {
            match tokio::time::timeout(ROUND_TRIP, client.subscribe(filter)).await {
                Ok(Ok(s)) => subs.push(s),
                // Without it the puller still looks every IDLE_POLL (crate::idle).
                Ok(Err(e)) => tracing::warn!(%queue, error = %e, "doorbell subscription failed"),
                Err(_) => tracing::warn!(%queue, "doorbell subscription not made in time"),
            }
        }
    }
    futures::stream::select_all(subs)
}
