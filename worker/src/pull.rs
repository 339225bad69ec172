//! The puller of one queue: permits, then (for a limited queue) tokens, then a look at
//! the lanes that may have messages ([`crate::look`]), most urgent first; when nothing
//! came, an idle wait ([`crate::idle`]).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{self, pull},
};
use futures::{FutureExt, StreamExt};
use jobstream_core::event::Priority;
use jobstream_core::subject;
use tokio::sync::mpsc::{Sender, UnboundedSender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::idle::{DueBack, IDLE_POLL, Idle, wait_idle};
use crate::lanes::{Doorbell, QueueLanes, ROUND_TRIP, doorbell};
use crate::limit::{self, Slots};
use crate::look::{Look, LookPlan};
use crate::watchdog::{Watchdog, pending_at_server};

/// Most messages one look asks for (and permits it holds).
const MAX_BATCH: usize = 256;
/// How long a pull request on the most urgent lane that rang may wait at the server for
/// the message (it is answered the moment the stream stores it). Core NATS usually
/// delivers the ring before the store; polling again after a wait made that wait
/// (0.25 ms, doubling) the largest part of an idle worker's latency.
const RING_WAIT: Duration = Duration::from_millis(30);

/// A message handed from a puller to the worker, with the local permit it holds
/// and where to say when a `Nak`ed message is due back.
pub(crate) struct Delivery {
    /// The runnable message.
    pub(crate) msg: jetstream::Message,
    /// The local concurrency permit it holds.
    pub(crate) permit: OwnedSemaphorePermit,
    /// Where to say when the message, `Nak`ed, is due back.
    pub(crate) wake: UnboundedSender<Instant>,
    /// The queue's concurrency token, when the queue is limited.
    pub(crate) slot: Option<jetstream::Message>,
}

/// Where a puller hands its messages, and when it stops.
struct Handoff {
    tx: Sender<Delivery>,
    wake: UnboundedSender<Instant>,
    shutdown: CancellationToken,
}

/// Pulls one queue, highest lane first, in batches sized to the free local permits,
/// so no message waits in a buffer while its ack timer runs. When every lane is
/// empty it waits for a "doorbell" (a core NATS subscription on the queue's
/// runnable subjects, which sees each new `queued`/`retry_requested` as it is
/// stored), for a message it `Nak`ed to be due back, or for [`IDLE_POLL`]. While the
/// lanes are known to be empty, a look asks only the lanes that rang (and every lane
/// at least every [`crate::look::FULL_LOOK_EVERY`]). A ring usually comes before the
/// store, so the most urgent lane that rang is asked with a pull request that waits at
/// the server for up to [`RING_WAIT`] and is answered the moment the message is stored
/// (a `no_wait` request with an expiry).
///
/// Every round trip to the server is bounded ([`ROUND_TRIP`]), and a watchdog
/// ([`crate::watchdog`]) covers what a bound cannot see: when the lanes have messages
/// pending at the server but none was delivered for a few beats while permits were
/// free, the consumer handles and the doorbell are rebuilt (logged at `warn`).
pub(crate) async fn pull_loop(
    mut lanes: QueueLanes,
    client: async_nats::Client,
    permits: Arc<Semaphore>,
    tx: Sender<Delivery>,
    shutdown: CancellationToken,
) {
    let mut bell = doorbell(&client, &lanes.queue).await;
    let (wake, mut wakeups) = tokio::sync::mpsc::unbounded_channel();
    let handoff = Handoff {
        tx,
        wake,
        shutdown: shutdown.clone(),
    };
    let mut due = DueBack::default();
    let mut plan = LookPlan::new();
    let mut watchdog = Watchdog::new();
    loop {
        // A paused queue takes no new jobs (and holds no permits other queues could use).
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = lanes.pause.until_running() => {}
        }
        let Some(mut held) = take_permits(&permits, &shutdown).await else {
            break;
        };
        let Some(mut tokens) = take_tokens(lanes.slots.as_ref(), &mut held, &shutdown).await else {
            break;
        };
        if lanes.slots.is_some() && tokens.is_empty() {
            continue;
        }
        if lanes.pause.is_paused() {
            // Paused while this puller waited for permits or tokens: hand them back.
            release(&mut tokens).await;
            continue;
        }
        // Whatever rang so far is covered by the look below.
        while let Some(Some(ring)) = bell.next().now_or_never() {
            if let Some(lane) = subject::runnable_lane(&ring.subject) {
                plan.rang(lane);
            }
        }
        let now = Instant::now();
        // `None`: no lane can have anything new, so the puller waits without looking.
        let received = match plan.next(now) {
            Some(look) => {
                let asked = held.len();
                let Some((received, unanswered_ring)) =
                    look_at(&lanes, &look, &plan, (&mut held, &mut tokens), &handoff).await
                else {
                    break;
                };
                plan.looked(&look, now, (asked, received), unanswered_ring);
                Some(received)
            }
            None => None,
        };
        release(&mut tokens).await;
        if received.is_some_and(|n| n > 0) {
            watchdog.delivered();
            continue;
        }
        if received.is_some() && watchdog.due() {
            match recover_if_stalled(&mut lanes, &mut watchdog, &client, &shutdown).await {
                Recovery::Stop => break,
                Recovery::Rebuilt(new_bell) => {
                    bell = new_bell;
                    plan.unsure();
                    continue;
                }
                Recovery::Fine => {}
            }
        }
        drop(held);
        // The doorbell hears only runnable subjects, so every ring names its lane.
        let mut rings =
            (&mut bell).map(|m| subject::runnable_lane(&m.subject).unwrap_or(Priority::Normal));
        match wait_idle(&mut rings, &mut wakeups, &mut due, &shutdown).await {
            Idle::Stop => break,
            Idle::Rang(lane) => plan.rang(lane),
            Idle::Due | Idle::Timeout => plan.unsure(),
        }
    }
}

/// Waits for one free local permit, then takes every other free one (up to
/// [`MAX_BATCH`]): a look asks for as many messages as can start at once. `None` on
/// shutdown or when the permits are closed.
async fn take_permits(
    permits: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<Vec<OwnedSemaphorePermit>> {
    let first = tokio::select! {
        () = shutdown.cancelled() => return None,
        p = permits.clone().acquire_owned() => p.ok()?,
    };
    let mut held = vec![first];
    while held.len() < MAX_BATCH {
        match permits.clone().try_acquire_owned() {
            Ok(p) => held.push(p),
            Err(_) => break,
        }
    }
    Some(held)
}

/// For a limited queue, the server-held tokens for up to `held.len()` jobs (waiting up
/// to [`IDLE_POLL`] for one), with `held` cut to as many; nothing for an unlimited
/// queue. `None` on shutdown.
async fn take_tokens(
    slots: Option<&Slots>,
    held: &mut Vec<OwnedSemaphorePermit>,
    shutdown: &CancellationToken,
) -> Option<Vec<jetstream::Message>> {
    let Some(slots) = slots else {
        return Some(Vec::new());
    };
    let tokens = tokio::select! {
        () = shutdown.cancelled() => return None,
        t = slots.acquire(held.len(), IDLE_POLL) => t,
    };
    if !tokens.is_empty() {
        held.truncate(tokens.len());
    }
    Some(tokens)
}

/// Hands unused tokens back to the queue.
async fn release(tokens: &mut Vec<jetstream::Message>) {
    for token in tokens.drain(..) {
        limit::release(token).await;
    }
}

/// One look at the lanes `look` names, most urgent first, while permits are held: each
/// message fetched goes to the worker with a permit (and a token). The most urgent lane
/// that rang is asked with a wait at the server ([`RING_WAIT`]), since its ring can beat
/// the store; the others are answered at once. How many were handed over, and whether a
/// lane that rang gave nothing; `None` on shutdown or when the worker is gone.
async fn look_at(
    lanes: &QueueLanes,
    look: &Look,
    plan: &LookPlan,
    (held, tokens): (&mut Vec<OwnedSemaphorePermit>, &mut Vec<jetstream::Message>),
    handoff: &Handoff,
) -> Option<(usize, bool)> {
    let mut received = 0;
    let mut unanswered_ring = false;
    let wait_on = plan.most_urgent_rung();
    for (lane, consumer) in &lanes.lanes {
        if held.is_empty() {
            break;
        }
        if !look.lanes.contains(lane) {
            continue;
        }
        let ask = LanePull {
            lane: *lane,
            consumer,
            wait: (wait_on == Some(*lane)).then_some(RING_WAIT),
        };
        let n = fetch_lane(lanes, ask, held, tokens, handoff).await?;
        unanswered_ring |= n == 0 && plan.did_ring(*lane);
        received += n;
    }
    Some((received, unanswered_ring))
}

/// What one pull request asks: a lane, its consumer, and how long the server may hold
/// the request for a message (`None`: it answers at once).
#[derive(Clone, Copy)]
struct LanePull<'a> {
    lane: Priority,
    consumer: &'a consumer::Consumer<pull::Config>,
    wait: Option<Duration>,
}

/// One pull request on one lane for as many messages as permits are held, answered at
/// once, or (with `wait`) as soon as the lane has a message, for up to `wait`. How many
/// were handed over; `None` on shutdown or when the worker is gone.
async fn fetch_lane(
    lanes: &QueueLanes,
    ask: LanePull<'_>,
    held: &mut Vec<OwnedSemaphorePermit>,
    tokens: &mut Vec<jetstream::Message>,
    handoff: &Handoff,
) -> Option<usize> {
    let mut received = 0;
    let Some(mut batch) = request_batch(lanes, ask, held.len(), handoff).await? else {
        return Some(0);
    };
    loop {
        let next = tokio::select! {
            () = handoff.shutdown.cancelled() => return None,
            next = tokio::time::timeout(ROUND_TRIP, batch.next()) => next,
        };
        match next {
            Ok(Some(Ok(msg))) => {
                let Some(permit) = held.pop() else { break };
                received += 1;
                let delivery = Delivery {
                    msg,
                    permit,
                    wake: handoff.wake.clone(),
                    slot: tokens.pop(),
                };
                // The worker's receiver never blocks for long (it only spawns the job).
                handoff.tx.send(delivery).await.ok()?;
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(queue = %lanes.queue, error = %e, "pull batch ended");
            }
            Ok(None) => break,
            Err(_) => {
                // Lost with a server that died before answering: ask again.
                tracing::warn!(queue = %lanes.queue, lane = ask.lane.as_str(), "no answer to a pull request; pulling again");
                break;
            }
        }
    }
    Some(received)
}

/// Asks one lane for up to `max` messages. Outer `None` on shutdown; inner `None`
/// when the request failed (logged; the next lane is tried).
async fn request_batch(
    lanes: &QueueLanes,
    ask: LanePull<'_>,
    max: usize,
    handoff: &Handoff,
) -> Option<Option<pull::Batch>> {
    let LanePull {
        lane,
        consumer,
        wait,
    } = ask;
    let mut request = consumer.fetch().max_messages(max);
    if let Some(wait) = wait {
        // Still `no_wait`: with an expiry the server answers as soon as it has any message.
        request = request.expires(wait);
    }
    let request = request.messages();
    let batch = tokio::select! {
        () = handoff.shutdown.cancelled() => return None,
        b = tokio::time::timeout(ROUND_TRIP, request) => b,
    };
    let queue = &lanes.queue;
    Some(match batch {
        Ok(Ok(b)) => Some(b),
        Ok(Err(e)) => {
            tracing::warn!(%queue, lane = lane.as_str(), error = %e, "pull request failed; retrying");
            None
        }
        Err(_) => {
            tracing::warn!(%queue, lane = lane.as_str(), "pull request not sent in time (reconnecting?); retrying");
            None
        }
    })
}

/// What the watchdog's check after an empty look came to.
enum Recovery {
    /// Shutdown.
    Stop,
    /// Idle, or not stalled long enough yet.
    Fine,
    /// Stalled: the consumers were rebuilt, and this is the new doorbell.
    Rebuilt(Doorbell),
}

/// After an empty look with the watchdog due: asks the server what is pending and,
/// once the puller counts as stalled, rebuilds its consumer handles and doorbell.
async fn recover_if_stalled(
    lanes: &mut QueueLanes,
    watchdog: &mut Watchdog,
    client: &async_nats::Client,
    shutdown: &CancellationToken,
) -> Recovery {
    let pending = tokio::select! {
        () = shutdown.cancelled() => return Recovery::Stop,
        p = pending_at_server(lanes) => p,
    };
    let Some(pending) = watchdog.looked(pending) else {
        return Recovery::Fine;
    };
    let queue = lanes.queue.clone();
    tracing::warn!(%queue, pending, "worker stalled: messages pending at the server but none delivered; rebuilding its consumers and doorbell");
    lanes.rebuild().await;
    tokio::select! {
        () = shutdown.cancelled() => Recovery::Stop,
        d = doorbell(client, &queue) => Recovery::Rebuilt(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_look_takes_every_free_permit_up_to_a_batch() {
        let shutdown = CancellationToken::new();
        let permits = Arc::new(Semaphore::new(3));
        let held = take_permits(&permits, &shutdown).await.unwrap();
        assert_eq!((held.len(), permits.available_permits()), (3, 0));
        drop(held);
        assert_eq!(permits.available_permits(), 3, "dropped permits go back");
        let many = Arc::new(Semaphore::new(MAX_BATCH + 10));
        let held = take_permits(&many, &shutdown).await.unwrap();
        assert_eq!((held.len(), many.available_permits()), (MAX_BATCH, 10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_look_waits_for_a_permit_to_come_free() {
        let shutdown = CancellationToken::new();
        let permits = Arc::new(Semaphore::new(2));
        let busy = permits.clone().acquire_many_owned(2).await.unwrap();
        let start = Instant::now();
        let freed = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            drop(busy);
        });
        let held = take_permits(&permits, &shutdown).await.unwrap();
        assert_eq!(held.len(), 2);
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        freed.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_permits_stops_on_shutdown_or_closed_permits() {
        let shutdown = CancellationToken::new();
        let permits = Arc::new(Semaphore::new(0));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.cancel();
        });
        assert!(take_permits(&permits, &shutdown).await.is_none());
        permits.close();
        assert!(
            take_permits(&permits, &CancellationToken::new())
                .await
                .is_none()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unlimited_queue_needs_no_tokens() {
        let permits = Arc::new(Semaphore::new(4));
        let shutdown = CancellationToken::new();
        let mut held = take_permits(&permits, &shutdown).await.unwrap();
        let tokens = take_tokens(None, &mut held, &shutdown).await.unwrap();
        assert!(tokens.is_empty());
        assert_eq!(held.len(), 4, "every permit stays held");
    }
}
