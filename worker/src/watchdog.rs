//! Tells a stalled puller from an idle one, from the server's counts of its lanes.

use std::time::Duration;

use tokio::time::Instant;

use crate::lanes::{QueueLanes, ROUND_TRIP};

/// The watchdog's heartbeat: how often an idle puller may ask the server about its lanes.
const WATCHDOG_BEAT: Duration = Duration::from_secs(2);
/// Missed beats before a puller with free permits, nothing delivered and messages
/// pending at the server counts as stalled and rebuilds its consumers and doorbell.
pub(crate) const WATCHDOG_MISSES: u32 = 3;

/// Nothing delivered while the server says messages are pending, for
/// [`WATCHDOG_MISSES`] looks [`WATCHDOG_BEAT`] apart, means stalled.
pub(crate) struct Watchdog {
    last_look: Instant,
    misses: u32,
}

impl Watchdog {
    pub(crate) fn new() -> Self {
        Watchdog {
            last_look: Instant::now(),
            misses: 0,
        }
    }

    /// A message came: all is well.
    pub(crate) fn delivered(&mut self) {
        self.misses = 0;
        self.last_look = Instant::now();
    }

    /// Whether an empty look is due to be checked against the server's counts.
    pub(crate) fn due(&self) -> bool {
        self.last_look.elapsed() >= WATCHDOG_BEAT
    }

    /// Records what the server said; returns the pending count once the puller is stalled.
    pub(crate) fn looked(&mut self, pending: Option<u64>) -> Option<u64> {
        self.last_look = Instant::now();
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

/// Messages waiting at the server in lanes that may deliver more now (not held back
/// by `max_ack_pending`); `None` when the server did not answer in time.
pub(crate) async fn pending_at_server(lanes: &QueueLanes) -> Option<u64> {
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

    #[tokio::test(start_paused = true)]
    async fn an_empty_look_is_checked_once_per_beat() {
        let mut w = Watchdog::new();
        assert!(!w.due());
        tokio::time::advance(WATCHDOG_BEAT).await;
        assert!(w.due());
        w.looked(Some(1));
        assert!(!w.due(), "a look starts a new beat");
        tokio::time::advance(WATCHDOG_BEAT).await;
        w.delivered();
        assert!(!w.due(), "so does a delivery");
    }
}
