//! Priority lanes: one durable consumer per queue and lane, pulled most urgent
//! first, with a doorbell so idle workers neither poll hard nor sleep long.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{self, AckPolicy, DeliverPolicy, pull},
};
use futures::{FutureExt, StreamExt};
use jobstream_core::event::Priority;
use jobstream_core::subject::{self, QueueName};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::limit::{self, Slots};
use crate::run::{WorkerConfig, lane_consumer_name};

/// The lane consumers of one queue, most urgent first, and its slots when it is limited.
pub(crate) struct QueueLanes {
    pub(crate) queue: QueueName,
    /// The job stream (to rebuild the lane consumers' handles).
    pub(crate) stream: jetstream::stream::Stream<()>,
    pub(crate) lanes: Vec<(Priority, consumer::Consumer<pull::Config>)>,
    pub(crate) slots: Option<Slots>,
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

/// How long an idle puller waits for a doorbell before looking again anyway (this
/// bounds how late it notices a message redelivered after a dead worker's `ack_wait`).
pub(crate) const IDLE_POLL: Duration = Duration::from_secs(1);
/// After a doorbell with nothing to fetch yet, how often and how soon to look again.
const RING_RECHECKS: u32 = 5;
const RING_RECHECK: Duration = Duration::from_millis(5);
/// Margin after a `Nak(delay)` before looking for the message again.
pub(crate) const REDELIVERY_SLACK: Duration = Duration::from_millis(20);
/// Longest wait for any answer of the server to the puller (a pull request is
/// `no_wait`: the server answers at once, with messages or "none"). A request lost
/// in a server crash is never answered; without this bound the puller waits forever
/// (the async-nats pull-consumer stall, nats.rs #860/#1285).
pub(crate) const ROUND_TRIP: Duration = Duration::from_secs(5);
/// The watchdog's heartbeat: how often an idle puller may ask the server about its lanes.
const WATCHDOG_BEAT: Duration = Duration::from_secs(2);
/// Missed beats before a puller with free permits, nothing delivered and messages
/// pending at the server counts as stalled and rebuilds its consumers and doorbell.
const WATCHDOG_MISSES: u32 = 3;

/// A message handed from a puller to the worker, with the local permit it holds
/// and where to say when a `Nak`ed message is due back.
pub(crate) struct Delivery {
    /// The runnable message.
    pub(crate) msg: jetstream::Message,
    /// The local concurrency permit it holds.
    pub(crate) permit: OwnedSemaphorePermit,
    /// Where to say when the message, `Nak`ed, is due back.
    pub(crate) wake: tokio::sync::mpsc::UnboundedSender<tokio::time::Instant>,
    /// The queue's concurrency token, when the queue is limited.
    pub(crate) slot: Option<jetstream::Message>,
}

/// Pulls one queue, highest lane first, in batches sized to the free local permits,
/// so no message waits in a buffer while its ack timer runs. When every lane is
/// empty it waits for a "doorbell" (a core NATS subscription on the queue's
/// runnable subjects, which sees each new `queued`/`retry_requested` as it is
/// stored), for a message it `Nak`ed to be due back, or for [`IDLE_POLL`].
///
/// Every round trip to the server is bounded ([`ROUND_TRIP`]), and a watchdog
/// covers what a bound cannot see: when the lanes have messages pending at the
/// server but none was delivered for [`WATCHDOG_MISSES`] × [`WATCHDOG_BEAT`]
/// while permits were free, the consumer handles and the doorbell are rebuilt
/// (logged at `warn` with the queue).
pub(crate) async fn pull_loop(
    mut lanes: QueueLanes,
    client: async_nats::Client,
    permits: Arc<Semaphore>,
    tx: tokio::sync::mpsc::Sender<Delivery>,
    shutdown: CancellationToken,
) {
    use std::cmp::Reverse;
    const MAX_BATCH: usize = 256;
    let queue = lanes.queue.clone();
    let queue = &queue;
    let mut bell = doorbell(&client, queue).await;
    let (wake, mut wakeups) = tokio::sync::mpsc::unbounded_channel();
    let mut due = std::collections::BinaryHeap::new();
    // Looks left after a doorbell rang: core NATS can deliver the doorbell before the
    // stream has stored the message, so an empty look right after a ring looks again soon.
    let mut rechecks = 0u32;
    let mut watchdog = Watchdog::new();
    'outer: loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let mut held = vec![first];
        while held.len() < MAX_BATCH {
            match permits.clone().try_acquire_owned() {
                Ok(p) => held.push(p),
                Err(_) => break,
            }
        }
        // A limited queue: no more jobs than the server hands out tokens.
        let mut tokens = Vec::new();
        if let Some(slots) = &lanes.slots {
            tokens = tokio::select! {
                () = shutdown.cancelled() => break,
                t = slots.acquire(held.len(), IDLE_POLL) => t,
            };
            if tokens.is_empty() {
                continue;
            }
            held.truncate(tokens.len());
        }
        // Whatever rang so far is covered by the look below.
        while let Some(Some(_)) = bell.next().now_or_never() {}
        let mut received = 0usize;
        for (lane, consumer) in &lanes.lanes {
            if held.is_empty() {
                break;
            }
            let request = consumer.fetch().max_messages(held.len()).messages();
            let batch = tokio::select! {
                () = shutdown.cancelled() => break 'outer,
                b = tokio::time::timeout(ROUND_TRIP, request) => b,
            };
            let mut batch = match batch {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    tracing::warn!(%queue, lane = lane.as_str(), error = %e, "pull request failed; retrying");
                    continue;
                }
                Err(_) => {
                    tracing::warn!(%queue, lane = lane.as_str(), "pull request not sent in time (reconnecting?); retrying");
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => break 'outer,
                    next = tokio::time::timeout(ROUND_TRIP, batch.next()) => next,
                };
                match next {
                    Ok(Some(Ok(msg))) => {
                        let Some(permit) = held.pop() else { break };
                        received += 1;
                        let delivery = Delivery {
                            msg,
                            permit,
                            wake: wake.clone(),
                            slot: tokens.pop(),
                        };
                        // The worker's receiver never blocks for long (it only spawns the job).
                        if tx.send(delivery).await.is_err() {
                            break 'outer;
                        }
                    }
                    Ok(Some(Err(e))) => tracing::debug!(%queue, error = %e, "pull batch ended"),
                    Ok(None) => break,
                    Err(_) => {
                        // Lost with a server that died before answering: ask again.
                        tracing::warn!(%queue, lane = lane.as_str(), "no answer to a pull request; pulling again");
                        break;
                    }
                }
            }
        }
        for token in tokens.drain(..) {
            limit::release(token).await;
        }
        if received > 0 {
            rechecks = 0;
            watchdog.delivered();
        } else if watchdog.due() {
            let pending = tokio::select! {
                () = shutdown.cancelled() => break 'outer,
                p = pending_at_server(&lanes) => p,
            };
            if let Some(pending) = watchdog.looked(pending) {
                tracing::warn!(%queue, pending, "worker stalled: messages pending at the server but none delivered; rebuilding its consumers and doorbell");
                lanes.rebuild().await;
                bell = tokio::select! {
                    () = shutdown.cancelled() => break 'outer,
                    d = doorbell(&client, queue) => d,
                };
                continue 'outer;
            }
        }
        if received == 0 && rechecks > 0 {
            rechecks -= 1;
            drop(held);
            tokio::select! {
                () = shutdown.cancelled() => break 'outer,
                () = tokio::time::sleep(RING_RECHECK) => continue 'outer,
            }
        }
        if received == 0 {
            drop(held);
            loop {
                while let Ok(at) = wakeups.try_recv() {
                    due.push(Reverse(at));
                }
                let now = tokio::time::Instant::now();
                let mut past_due = false;
                while due.peek().is_some_and(|Reverse(at)| *at <= now) {
                    due.pop();
                    past_due = true;
                }
                if past_due {
                    break;
                }
                let until = due
                    .peek()
                    .map_or(now + IDLE_POLL, |Reverse(at)| (*at).min(now + IDLE_POLL));
                tokio::select! {
                    () = shutdown.cancelled() => break 'outer,
                    _ = bell.next() => {
                        rechecks = RING_RECHECKS;
                        break;
                    }
                    () = tokio::time::sleep_until(until) => break,
                    Some(at) = wakeups.recv() => due.push(Reverse(at)),
                }
            }
        }
    }
}

impl QueueLanes {
    /// Fresh consumer handles for every lane (what a stalled puller does before pulling again).
    async fn rebuild(&mut self) {
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

/// Messages waiting at the server in lanes that may deliver more now (not held back
/// by `max_ack_pending`); `None` when the server did not answer in time.
async fn pending_at_server(lanes: &QueueLanes) -> Option<u64> {
    let mut pending = 0;
    for (_, consumer) in &lanes.lanes {
        let info = tokio::time::timeout(ROUND_TRIP, consumer.get_info())
            .await
            .ok()?
            .ok()?;
        let limit = usize::try_from(info.config.max_ack_pending).unwrap_or(usize::MAX);
        if info.num_ack_pending < limit {
            pending += info.num_pending;
        }
    }
    Some(pending)
}

/// Tells a stalled puller from an idle one: nothing delivered while the server
/// says messages are pending, for [`WATCHDOG_MISSES`] looks [`WATCHDOG_BEAT`] apart.
struct Watchdog {
    last_look: tokio::time::Instant,
    misses: u32,
}

impl Watchdog {
    fn new() -> Self {
        Watchdog {
            last_look: tokio::time::Instant::now(),
            misses: 0,
        }
    }

    /// A message came: all is well.
    fn delivered(&mut self) {
        self.misses = 0;
        self.last_look = tokio::time::Instant::now();
    }

    /// Whether an empty look is due to be checked against the server's counts.
    fn due(&self) -> bool {
        self.last_look.elapsed() >= WATCHDOG_BEAT
    }

    /// Records what the server said; returns the pending count once the puller is stalled.
    fn looked(&mut self, pending: Option<u64>) -> Option<u64> {
        self.last_look = tokio::time::Instant::now();
        match pending {
            Some(n) if n > 0 => self.misses += 1,
            // Idle, or the server is away (the bounded requests cover that case).
            _ => self.misses = 0,
        }
        if self.misses >= WATCHDOG_MISSES {
            self.misses = 0;
            pending
        } else {
            None
        }
    }
}

/// New runnable messages of a queue (any lane), as a signal only.
pub(crate) async fn doorbell(
    client: &async_nats::Client,
    queue: &QueueName,
) -> futures::stream::SelectAll<async_nats::Subscriber> {
    let mut subs = Vec::new();
    for lane in subject::LANES {
        for filter in subject::runnable_in(queue, lane) {
            match tokio::time::timeout(ROUND_TRIP, client.subscribe(filter)).await {
                Ok(Ok(s)) => subs.push(s),
                // Without it the puller still looks every IDLE_POLL.
                Ok(Err(e)) => tracing::warn!(%queue, error = %e, "doorbell subscription failed"),
                Err(_) => tracing::warn!(%queue, "doorbell subscription not made in time"),
            }
        }
    }
    futures::stream::select_all(subs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_fires_only_after_repeated_looks_with_messages_pending() {
        let mut w = Watchdog::new();
        for _ in 1..WATCHDOG_MISSES {
            assert_eq!(w.looked(Some(7)), None);
        }
        // A delivery in between means the puller is moving.
        w.delivered();
        for _ in 1..WATCHDOG_MISSES {
            assert_eq!(w.looked(Some(7)), None);
        }
        assert_eq!(w.looked(Some(7)), Some(7), "stalled");
        // Idle (nothing pending) or the server away never counts as a stall.
        for _ in 0..2 * WATCHDOG_MISSES {
            assert_eq!(w.looked(Some(0)), None);
            assert_eq!(w.looked(None), None);
        }
    }
}
