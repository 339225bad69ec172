//! Which lanes a puller's next look asks, from the doorbell's rings and what its last
//! look found.
//!
//! A look asks each lane in a round trip of its own. Asking every lane after every
//! ring cost three round trips per wake-up, and a second full look after any delivery
//! to see that the lanes were empty again: most of a puller's requests at light load.
//! A lane that neither rang nor had messages left at the last look can only have new
//! messages the doorbell did not announce (a lost ring, say), so the planner asks
//! only the lanes that rang while
//! the rest are known to be empty, and asks every lane at least every
//! [`FULL_LOOK_EVERY`] to bound how long an unannounced message waits. A lane with a
//! backlog (a look that filled every free permit) keeps the looks full, so priorities
//! still hold: the high lane is asked first whenever anything may be waiting.

use std::time::Duration;

use jobstream_core::event::Priority;
use jobstream_core::subject::LANES;
use tokio::time::Instant;

/// The longest a look may ask only the lanes that rang: a message stored without a ring
/// the puller heard waits at most this long while other lanes keep ringing (an idle
/// puller looks everywhere after [`crate::idle::IDLE_POLL`]).
pub(crate) const FULL_LOOK_EVERY: Duration = Duration::from_millis(100);

/// What the puller knows about its lanes since its last look.
#[derive(Debug)]
pub(crate) struct LookPlan {
    /// Lanes that rang since the last look, by position in [`LANES`].
    rung: [bool; LANES.len()],
    /// Whether the last look left every lane empty (each came back with fewer messages
    /// than permits were free, and none that rang came back empty).
    quiet: bool,
    /// When every lane was last asked.
    last_full: Option<Instant>,
}

/// The lanes one look asks, most urgent first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Look {
    /// The lanes, in [`LANES`] order.
    pub(crate) lanes: Vec<Priority>,
}

impl Look {
    /// Whether the look asks every lane.
    pub(crate) fn is_full(&self) -> bool {
        self.lanes.len() == LANES.len()
    }
}

impl LookPlan {
    /// A new puller knows nothing: its first look is full.
    pub(crate) fn new() -> Self {
        LookPlan {
            rung: [false; LANES.len()],
            quiet: false,
            last_full: None,
        }
    }

    /// The doorbell rang for `lane`.
    pub(crate) fn rang(&mut self, lane: Priority) {
        if let Some(i) = position(lane) {
            self.rung[i] = true;
        }
    }

    /// Something may be waiting that no ring announced (a `Nak`ed message is due, the
    /// idle wait ran out, the consumers were rebuilt): the next look is full.
    pub(crate) fn unsure(&mut self) {
        self.quiet = false;
    }

    /// The lanes that rang since the last look, most urgent first.
    fn rung_lanes(&self) -> impl Iterator<Item = Priority> + '_ {
        LANES
            .iter()
            .zip(self.rung)
            .filter(|(_, r)| *r)
            .map(|(l, _)| *l)
    }

    /// The most urgent lane that rang since the last look.
    pub(crate) fn most_urgent_rung(&self) -> Option<Priority> {
        self.rung_lanes().next()
    }

    /// Whether `lane` rang since the last look.
    pub(crate) fn did_ring(&self, lane: Priority) -> bool {
        position(lane).is_some_and(|i| self.rung[i])
    }

    /// The next look at `now`; `None` when no lane can have anything (wait idle).
    pub(crate) fn next(&self, now: Instant) -> Option<Look> {
        let full_due = self
            .last_full
            .is_none_or(|at| now.duration_since(at) >= FULL_LOOK_EVERY);
        if !self.quiet || full_due {
            return Some(Look {
                lanes: LANES.to_vec(),
            });
        }
        let lanes: Vec<Priority> = self.rung_lanes().collect();
        (!lanes.is_empty()).then_some(Look { lanes })
    }

    /// The look `look` was made at `now`: `asked` messages (the free permits) were asked
    /// for, `received` came, and `unanswered_ring` says whether a lane that rang gave
    /// nothing (its ring beat the store, or another worker took the message).
    pub(crate) fn looked(
        &mut self,
        look: &Look,
        now: Instant,
        (asked, received): (usize, usize),
        unanswered_ring: bool,
    ) {
        self.quiet = received < asked && !unanswered_ring;
        self.rung = [false; LANES.len()];
        if look.is_full() {
            self.last_full = Some(now);
        }
    }
}

fn position(lane: Priority) -> Option<usize> {
    LANES.iter().position(|l| *l == lane)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Look {
        Look {
            lanes: LANES.to_vec(),
        }
    }

    /// A plan whose last look was full, found the lanes empty, and was made at `at`.
    fn quiet_since(at: Instant) -> LookPlan {
        let mut plan = LookPlan::new();
        plan.looked(&full(), at, (8, 0), false);
        plan
    }

    #[test]
    fn a_new_puller_asks_every_lane() {
        assert_eq!(LookPlan::new().next(Instant::now()), Some(full()));
    }

    #[test]
    fn after_an_empty_look_only_the_lanes_that_rang_are_asked_most_urgent_first() {
        let now = Instant::now();
        let mut plan = quiet_since(now);
        assert_eq!(plan.next(now), None, "nothing rang: wait idle");
        plan.rang(Priority::Low);
        plan.rang(Priority::High);
        let look = plan.next(now).expect("a look");
        assert_eq!(look.lanes, vec![Priority::High, Priority::Low]);
        assert!(!look.is_full());
        assert_eq!(plan.most_urgent_rung(), Some(Priority::High));
        assert!(plan.did_ring(Priority::Low) && !plan.did_ring(Priority::Normal));
        plan.looked(&look, now, (8, 2), false);
        assert_eq!(plan.next(now), None, "the rings were answered");
    }

    /// A quiet plan after one ring of `lane` and the look that answered it.
    fn after_one_ring(
        lane: Priority,
        now: Instant,
        counts: (usize, usize),
        unanswered: bool,
    ) -> LookPlan {
        let mut plan = quiet_since(now);
        plan.rang(lane);
        let look = plan.next(now).expect("a look");
        plan.looked(&look, now, counts, unanswered);
        plan
    }

    #[test]
    fn a_look_that_used_every_permit_makes_the_next_one_full_so_priorities_hold() {
        let now = Instant::now();
        let plan = after_one_ring(Priority::Low, now, (4, 4), false);
        // The low lane may hold more; a high job may have come without a ring heard.
        assert_eq!(plan.next(now), Some(full()));
    }

    #[test]
    fn a_lane_that_rang_but_gave_nothing_makes_the_next_look_full() {
        let now = Instant::now();
        let plan = after_one_ring(Priority::Normal, now, (8, 0), true);
        assert_eq!(plan.next(now), Some(full()));
    }

    #[test]
    fn every_lane_is_asked_again_once_the_last_full_look_is_old() {
        let start = Instant::now();
        let mut plan = quiet_since(start);
        plan.rang(Priority::Normal);
        let later = start + FULL_LOOK_EVERY;
        assert_eq!(plan.next(later), Some(full()));
        plan.looked(&full(), later, (8, 1), false);
        assert_eq!(plan.next(later), None);
    }

    #[test]
    fn a_due_message_or_an_idle_timeout_makes_the_next_look_full() {
        let now = Instant::now();
        let mut plan = quiet_since(now);
        plan.unsure();
        assert_eq!(plan.next(now), Some(full()));
    }
}
