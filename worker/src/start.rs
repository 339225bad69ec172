//! The `started` event of an attempt, stored only when it is worth a write.
//!
//! # The fast path: two writes per job
//! A job that succeeds on its first attempt costs two stream writes, `queued` and
//! its outcome. Before it runs a job, a worker stores nothing: it checks (one direct
//! get, or a fold of the history) that the runnable message is still the job's latest
//! event, and remembers that sequence. The outcome is then appended on condition that
//! the job's latest event is still that sequence (`Nats-Expected-Last-Subject-Sequence`
//! over `jobs.*.<id>.*`), and it carries what `started` would have said (worker,
//! `started_at`: [`jobstream_core::event::AttemptRun`]). So:
//! - a cancel request stored before the attempt started wins: a first delivery sees it
//!   in the direct get and does not run; one stored while the attempt runs is newer than
//!   the remembered sequence, so the outcome append is refused, the worker folds again
//!   and decides ([`crate::run`]); the job was `cancelled` from the moment of the request
//!   (the fold saw no `started`), and the handler is stopped by the cancel notification;
//! - the history stays complete: the outcome says where and since when the attempt ran.
//!
//! # What the threshold trades
//! `running` is only visible once `started` is stored. A [`StartGate`] stores it when the
//! attempt has run for [`STARTED_AFTER`], or before its first progress report (a
//! `progress` needs a running job), whichever comes first; from then on the job is
//! `running` and a cancel request only flags it (its worker stops it and appends
//! `cancelled`), as before the fast path. The price: for up to [`STARTED_AFTER`] a
//! running job reads `queued`, and a cancel request in that window cancels it at once,
//! so a handler that finishes its work anyway has its result dropped (the job stays
//! `cancelled`, the state its client was told). Shorter thresholds cost a third write
//! for more jobs; longer ones widen that window.
//!
//! A worker that dies before the outcome leaves no trace of the attempt in the stream
//! (unless it ran past the threshold); the redelivery's count still numbers the next
//! attempt, so a poison job still runs out of attempts.

use std::time::Duration;

use jobstream_core::broker::{Broker, BrokerError};
use jobstream_core::event::{AttemptRun, Envelope, Event};
use jobstream_core::subject::QueueName;
use jobstream_core::trace::Correlation;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::decide::{Plan, plan};

/// How long an attempt runs before its `started` event is stored.
pub const STARTED_AFTER: Duration = Duration::from_secs(1);

/// Where the attempt's appends stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Appends {
    /// Nothing of this attempt is stored; the next append is conditional on `last_seq`.
    Pending {
        /// The job's latest event when this attempt was decided (or decided again).
        last_seq: u64,
    },
    /// `started` is stored: the job is `running`, a cancel request only flags it, and
    /// the outcome needs no condition (as before the fast path).
    Started,
}

/// Stores an attempt's `started` event at most once, when it is first needed.
pub(crate) struct StartGate {
    broker: Broker,
    queue: QueueName,
    correlation: Correlation,
    /// Sequence of the runnable message this attempt runs (to decide again on a conflict).
    msg_seq: u64,
    /// The `started` event (one id per delivery: a copy stored whose answer was lost is
    /// not stored twice).
    started: Envelope,
    state: Mutex<Appends>,
    /// Cancelled when the job turned out to be no longer this attempt's (cancelled,
    /// finished, superseded) while storing `started`.
    lost: CancellationToken,
}

impl StartGate {
    /// A gate for an attempt decided at `last_seq`; `started_id` is the delivery's `started` event id.
    pub(crate) fn new(
        broker: Broker,
        queue: QueueName,
        correlation: Correlation,
        (job_id, started_id): (Uuid, Uuid),
        (msg_seq, last_seq): (u64, u64),
        (attempt, run): (u32, &AttemptRun),
    ) -> Self {
        let started = Envelope {
            event_id: started_id,
            at: run.started_at,
            ..Envelope::new(
                job_id,
                attempt,
                Event::Started {
                    worker: run.worker.clone(),
                },
            )
        };
        StartGate {
            broker,
            queue,
            correlation,
            msg_seq,
            started,
            state: Mutex::new(Appends::Pending { last_seq }),
            lost: CancellationToken::new(),
        }
    }

    /// Completes when storing `started` found the job no longer this attempt's.
    pub(crate) async fn lost(&self) {
        self.lost.cancelled().await;
    }

    /// Stores `started` unless it is stored already; `true` once it is. A conflict
    /// means the job changed meanwhile: fold again, and either try again on the new
    /// latest sequence or, when the job is no longer this attempt's, give up (the
    /// handler is stopped through [`StartGate::lost`]).
    pub(crate) async fn ensure_started(&self) -> bool {
        let mut state = self.state.lock().await;
        let mut conflicts = 0;
        loop {
            let Appends::Pending { last_seq } = *state else {
                return true;
            };
            let stored = self
                .broker
                .publish_if_last_correlated(&self.started, &self.queue, &self.correlation, last_seq)
                .await;
            match stored {
                Ok(_) => {
                    *state = Appends::Started;
                    tracing::debug!("job started");
                    return true;
                }
                Err(BrokerError::Conflict { .. }) if conflicts < 8 => {
                    conflicts += 1;
                    let history = match self.broker.job_history(self.started.job_id).await {
                        Ok(h) => h,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the job's history to store its start");
                            return false;
                        }
                    };
                    match plan(&history, self.msg_seq) {
                        Plan::Run { last_seq, .. } => *state = Appends::Pending { last_seq },
                        Plan::Cancel { .. } | Plan::Skip(_) => {
                            tracing::info!(
                                "the job was cancelled or superseded while it ran: stopping the handler"
                            );
                            self.lost.cancel();
                            return false;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "started not stored");
                    return false;
                }
            }
        }
    }

    /// Where the appends stand (the outcome's condition), waiting for a `started` being stored.
    pub(crate) async fn appends(&self) -> Appends {
        *self.state.lock().await
    }

    /// Records that the job's latest event moved on to `last_seq` without changing what
    /// this attempt may do (decided again after a conflict).
    pub(crate) async fn moved_on(&self, last_seq: u64) {
        let mut state = self.state.lock().await;
        if let Appends::Pending { .. } = *state {
            *state = Appends::Pending { last_seq };
        }
    }
}
