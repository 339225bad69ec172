//! What an idle puller waits for: the doorbell, a message it `Nak`ed coming due
//! back, [`IDLE_POLL`], or shutdown.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use jobstream_core::event::Priority;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long an idle puller waits for a doorbell before looking again anyway (this
/// bounds how late it notices a message redelivered after a dead worker's `ack_wait`).
pub(crate) const IDLE_POLL: Duration = Duration::from_secs(1);
/// Margin after a `Nak(delay)` before looking for the message again.
pub(crate) const REDELIVERY_SLACK: Duration = Duration::from_millis(20);

/// Messages this puller `Nak`ed, by the time they are due back at the server.
#[derive(Debug, Default)]
pub(crate) struct DueBack(BinaryHeap<Reverse<Instant>>);

impl DueBack {
    /// Remembers a message due back at `at`.
    pub(crate) fn push(&mut self, at: Instant) {
        self.0.push(Reverse(at));
    }

    /// Forgets every message due by `now`; whether there was one (time to look again).
    pub(crate) fn pop_past_due(&mut self, now: Instant) -> bool {
        let mut past_due = false;
        while self.0.peek().is_some_and(|Reverse(at)| *at <= now) {
            self.0.pop();
            past_due = true;
        }
        past_due
    }

    /// When an idle puller looks again at the latest: the next message due, or [`IDLE_POLL`].
    pub(crate) fn look_at(&self, now: Instant) -> Instant {
        let poll = now + IDLE_POLL;
        self.0.peek().map_or(poll, |Reverse(at)| (*at).min(poll))
    }
}

/// Why an idle puller looks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idle {
    /// Shutdown.
    Stop,
    /// The doorbell rang: a runnable message of this lane was stored (or is about to be).
    Rang(Priority),
    /// A message this puller `Nak`ed was already due when the wait began.
    Due,
    /// The wait ran out: a `Nak`ed message came due, or [`IDLE_POLL`] passed. A message
    /// that came due stays remembered until the next wait, so an empty look now is
    /// followed by a second one at once (the redelivery can trail its delay).
    Timeout,
}

/// Waits, with every lane empty, for whichever comes first: the doorbell, a `Nak`ed
/// message due back (`wakeups` says when each is), [`IDLE_POLL`], or shutdown.
pub(crate) async fn wait_idle(
    bell: &mut (impl Stream<Item = Priority> + Unpin),
    wakeups: &mut UnboundedReceiver<Instant>,
    due: &mut DueBack,
    shutdown: &CancellationToken,
) -> Idle {
    loop {
        while let Ok(at) = wakeups.try_recv() {
            due.push(at);
        }
        let now = Instant::now();
        if due.pop_past_due(now) {
            return Idle::Due;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Idle::Stop,
            Some(lane) = bell.next() => return Idle::Rang(lane),
            () = tokio::time::sleep_until(due.look_at(now)) => return Idle::Timeout,
            Some(at) = wakeups.recv() => due.push(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle puller's inputs: the doorbell, the `Nak` wake-ups and shutdown.
    struct Idling {
        bell: futures::channel::mpsc::UnboundedSender<Priority>,
        bell_rx: futures::channel::mpsc::UnboundedReceiver<Priority>,
        wake: tokio::sync::mpsc::UnboundedSender<Instant>,
        wakeups: UnboundedReceiver<Instant>,
        due: DueBack,
        shutdown: CancellationToken,
    }

    impl Idling {
        fn new() -> Self {
            let (bell, bell_rx) = futures::channel::mpsc::unbounded();
            let (wake, wakeups) = tokio::sync::mpsc::unbounded_channel();
            Idling {
                bell,
                bell_rx,
                wake,
                wakeups,
                due: DueBack::default(),
                shutdown: CancellationToken::new(),
            }
        }

        /// Waits idle; returns why it woke and how much (virtual) time that took.
        async fn wait(&mut self) -> (Idle, Duration) {
            let start = Instant::now();
            let why = wait_idle(
                &mut self.bell_rx,
                &mut self.wakeups,
                &mut self.due,
                &self.shutdown,
            )
            .await;
            (why, start.elapsed())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_puller_looks_again_after_the_idle_poll() {
        let mut idle = Idling::new();
        assert_eq!(idle.wait().await, (Idle::Timeout, IDLE_POLL));
        assert_eq!(idle.wait().await, (Idle::Timeout, IDLE_POLL));
    }

    #[tokio::test(start_paused = true)]
    async fn the_doorbell_wakes_an_idle_puller_at_once() {
        let mut idle = Idling::new();
        idle.bell.unbounded_send(Priority::High).unwrap();
        assert_eq!(
            idle.wait().await,
            (Idle::Rang(Priority::High), Duration::ZERO)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_naked_message_wakes_the_puller_when_due_and_gets_a_second_look() {
        let mut idle = Idling::new();
        let now = Instant::now();
        idle.wake.send(now + Duration::from_millis(300)).unwrap();
        idle.wake.send(now + Duration::from_millis(700)).unwrap();
        assert_eq!(
            idle.wait().await,
            (Idle::Timeout, Duration::from_millis(300))
        );
        // Still remembered: the next idle wait ends at once and forgets it.
        assert_eq!(idle.wait().await, (Idle::Due, Duration::ZERO));
        assert_eq!(
            idle.wait().await,
            (Idle::Timeout, Duration::from_millis(400))
        );
        assert_eq!(idle.wait().await, (Idle::Due, Duration::ZERO));
        // Both forgotten: nothing but the idle poll is left.
        assert_eq!(idle.wait().await, (Idle::Timeout, IDLE_POLL));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_sent_while_waiting_shortens_the_wait() {
        let mut idle = Idling::new();
        let wake = idle.wake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = wake.send(Instant::now() + Duration::from_millis(50));
        });
        assert_eq!(
            idle.wait().await,
            (Idle::Timeout, Duration::from_millis(150))
        );
        assert_eq!(idle.wait().await, (Idle::Due, Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_due_beyond_the_idle_poll_waits_for_the_poll_first() {
        let mut idle = Idling::new();
        idle.wake.send(Instant::now() + IDLE_POLL * 3).unwrap();
        for _ in 0..3 {
            assert_eq!(idle.wait().await, (Idle::Timeout, IDLE_POLL));
        }
        assert_eq!(idle.wait().await, (Idle::Due, Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_an_idle_wait() {
        let mut idle = Idling::new();
        idle.shutdown.cancel();
        assert_eq!(idle.wait().await, (Idle::Stop, Duration::ZERO));
    }

    #[test]
    fn due_back_orders_messages_by_time() {
        let now = Instant::now();
        let mut due = DueBack::default();
        assert_eq!(due.look_at(now), now + IDLE_POLL);
        due.push(now + Duration::from_millis(500));
        due.push(now + Duration::from_millis(200));
        assert_eq!(due.look_at(now), now + Duration::from_millis(200));
        assert!(!due.pop_past_due(now + Duration::from_millis(199)));
        assert!(due.pop_past_due(now + Duration::from_millis(200)));
        assert_eq!(due.look_at(now), now + Duration::from_millis(500));
        assert!(due.pop_past_due(now + IDLE_POLL));
        assert!(!due.pop_past_due(now + IDLE_POLL));
    }
}
