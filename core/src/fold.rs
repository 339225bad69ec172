//! The job state machine: folding a job's events, in stream order, into its state.
//!
//! `queued → [running] → (succeeded | retrying → [running] … | failed)`;
//! `queued | retrying | running → cancelled`; `failed | cancelled → queued`
//! (`retry_requested`, a fresh set of attempts); a delayed job starts `scheduled`:
//! `scheduled → (queued | cancelled)`. A `cancel_requested` cancels a
//! job that is not running at once; a running job stays running (flagged) until
//! its worker appends `cancelled`. `running` is optional: a short attempt stores
//! no `started`, and its outcome (which carries [`crate::event::AttemptRun`]) ends it
//! straight from `queued` or `retrying`. Impossible transitions are
//! rejected (and so recorded as ignored by callers), never applied. Pure: no I/O,
//! so the projector, the API's stream fallback and `verify` share it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::event::{Envelope, Event, JobSpec};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker runs an attempt.
    Running,
    /// An attempt failed; waits for its next attempt.
    Retrying,
    /// Finished with a result.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Waits for its `run_at` (a delayed job); becomes `queued` then.
    Scheduled,
}

impl JobStatus {
    /// Every status.
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Retrying,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Scheduled,
    ];

    /// The wire/SQL name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Retrying => "retrying",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Scheduled => "scheduled",
        }
    }

    /// Parses the wire/SQL name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the job is finished (no event can change it any more).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// The error of one failed attempt (every one is kept, in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    /// The attempt's number.
    pub attempt: u32,
    /// What went wrong.
    pub error: String,
    /// When the attempt failed.
    pub at: DateTime<Utc>,
}

/// The current state of one job: what the projection stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    /// The job id.
    pub id: Uuid,
    /// What was submitted.
    pub spec: JobSpec,
    /// Where the job is.
    pub status: JobStatus,
    /// Number of the latest attempt (0 before the first).
    pub attempt: u32,
    /// Result of a succeeded job.
    pub result: Option<Value>,
    /// Error of the latest failed attempt.
    pub error: Option<String>,
    /// Latest reported progress, 0..=100.
    pub progress: Option<u8>,
    /// Latest progress message.
    pub progress_message: Option<String>,
    /// When the job was queued.
    pub created_at: DateTime<Utc>,
    /// When the latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the job finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Time of the latest applied event.
    pub updated_at: DateTime<Utc>,
    /// Stream sequence of the latest applied event.
    pub last_seq: u64,
    /// Every failed attempt's error, oldest first (across retries requested by clients).
    pub errors: Vec<AttemptError>,
    /// When a client asked to cancel the job while it ran (it stops once its worker appends `cancelled`).
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// The job's trace id (32 hex digits): its first event's `traceparent` trace id, or the
    /// job's own (see [`crate::trace`]). The event alone does not hold it (headers do), so
    /// readers that have the headers set it; `None` until one has.
    pub trace_id: Option<String>,
}

/// An event the state machine refused; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The event is at or below the last applied sequence (a redelivery or replay).
    #[error("event at seq {seq} already applied (last applied {last_seq})")]
    AlreadyApplied {
        /// The event's sequence.
        seq: u64,
        /// The job's last applied sequence.
        last_seq: u64,
    },
    /// The event cannot follow the job's current status.
    #[error("{event} is impossible after {from}")]
    Impossible {
        /// The job's status.
        from: &'static str,
        /// The refused event type.
        event: &'static str,
    },
    /// The event is for another job.
    #[error("event of job {0} applied to another job")]
    WrongJob(Uuid),
}

impl JobState {
    /// A job's first state, from its `queued` (or, for a delayed job, `scheduled`) event;
    /// `None` for any other event (an event of a job whose first event is unknown cannot be folded).
    pub fn from_queued(env: &Envelope, seq: u64) -> Option<Self> {
        let (spec, status) = match &env.event {
            Event::Queued(spec) => (spec, JobStatus::Queued),
            Event::Scheduled(spec) => (spec, JobStatus::Scheduled),
            _ => return None,
        };
        Some(JobState {
            id: env.job_id,
            spec: spec.clone(),
            status,
            attempt: 0,
            result: None,
            error: None,
            progress: None,
            progress_message: None,
            created_at: env.at,
            started_at: None,
            finished_at: None,
            updated_at: env.at,
            last_seq: seq,
            errors: Vec::new(),
            cancel_requested_at: None,
            trace_id: None,
        })
    }

    /// Applies the event stored at `seq`, or says why it cannot be applied.
    pub fn apply(&mut self, env: &Envelope, seq: u64) -> Result<(), Rejected> {
        use JobStatus::*;
        if env.job_id != self.id {
            return Err(Rejected::WrongJob(env.job_id));
        }
        if seq <= self.last_seq {
            return Err(Rejected::AlreadyApplied {
                seq,
                last_seq: self.last_seq,
            });
        }
        let allowed = match (&env.event, self.status) {
            // A running job may be started again: its worker died and the message was redelivered.
            (Event::Started { .. }, Queued | Retrying | Running) => true,
            (Event::Progress { .. }, Running) => true,
            (Event::Retrying { .. } | Event::Succeeded { .. }, Running) => true,
            // The fast path: an attempt too short to store `started` ends straight from
            // `queued` (or `retrying`); its outcome says where and since when it ran.
            (Event::Retrying { .. } | Event::Succeeded { .. }, Queued | Retrying)
                if env.run.is_some() =>
            {
                true
            }
            (Event::Failed { .. } | Event::Cancelled { .. }, Queued | Retrying | Running) => true,
            // A delayed job: its message schedule fired, or it was cancelled before that.
            (Event::Queued(_), Scheduled) | (Event::Cancelled { .. }, Scheduled) => true,
            // Any unfinished job may be asked to stop (written with `!is_terminal`, so
            // statuses added later, such as delayed jobs, are cancellable the same way).
            (Event::CancelRequested { .. }, s) => !s.is_terminal(),
            (Event::RetryRequested { .. }, Failed | Cancelled) => true,
            _ => false,
        };
        if !allowed {
            return Err(Rejected::Impossible {
                from: self.status.as_str(),
                event: env.event_type().as_str(),
            });
        }
        match &env.event {
            Event::Queued(_) if self.status == Scheduled => self.status = Queued,
            Event::Queued(_) | Event::Scheduled(_) => {}
            Event::Started { .. } => {
                self.status = Running;
                self.attempt = env.attempt;
                self.started_at = Some(env.at);
                self.progress = None;
                self.progress_message = None;
            }
            Event::Progress { percent, message } => {
                if percent.is_some() {
                    self.progress = *percent;
                }
                if message.is_some() {
                    self.progress_message.clone_from(message);
                }
            }
            Event::Retrying { error, .. } => {
                self.status = Retrying;
                self.error = Some(error.clone());
                self.push_error(env, error);
            }
            Event::Succeeded { result } => {
                self.status = Succeeded;
                self.result = Some(result.clone());
                self.error = None;
                self.progress = Some(100);
                self.finished_at = Some(env.at);
            }
            Event::Failed { error } => {
                self.status = Failed;
                self.error = Some(error.clone());
                self.finished_at = Some(env.at);
                self.push_error(env, error);
            }
            Event::Cancelled { reason } => {
                self.status = Cancelled;
                if reason.is_some() {
                    self.error.clone_from(reason);
                }
                self.finished_at = Some(env.at);
            }
            Event::CancelRequested { reason, .. } => {
                if self.status == Running {
                    // Its worker stops the handler and appends `cancelled`.
                    self.cancel_requested_at = Some(env.at);
                } else {
                    self.status = Cancelled;
                    self.error = Some(reason.clone().unwrap_or_else(|| "cancelled".to_owned()));
                    self.finished_at = Some(env.at);
                }
            }
            Event::RetryRequested { .. } => {
                // A fresh set of attempts; the errors of earlier ones stay in `errors`.
                self.status = Queued;
                self.attempt = 0;
                self.result = None;
                self.error = None;
                self.progress = None;
                self.progress_message = None;
                self.started_at = None;
                self.finished_at = None;
                self.cancel_requested_at = None;
            }
        }
        // An outcome names the attempt it ends: it sets `started_at` even when no
        // `started` was stored (the fast path), and matches it when one was.
        if let Some(run) = &env.run {
            self.started_at = Some(run.started_at);
        }
        // A retry request starts a fresh count, whatever attempt its envelope names.
        if env.attempt > self.attempt && !matches!(env.event, Event::RetryRequested { .. }) {
            self.attempt = env.attempt;
        }
        self.updated_at = env.at;
        self.last_seq = seq;
        Ok(())
    }
}

impl JobState {
    fn push_error(&mut self, env: &Envelope, error: &str) {
        self.errors.push(AttemptError {
            attempt: env.attempt,
            error: error.to_owned(),
            at: env.at,
        });
    }

    /// Whether a client asked to cancel this (running) job.
    pub fn cancel_requested(&self) -> bool {
        self.cancel_requested_at.is_some()
    }
}

/// Folds one job's history (in stream order) into its state; events the state
/// machine rejects are skipped, exactly as the projector skips them.
pub fn fold_history<'a>(events: impl IntoIterator<Item = (u64, &'a Envelope)>) -> Option<JobState> {
    let mut state: Option<JobState> = None;
    for (seq, env) in events {
        match &mut state {
            None => state = JobState::from_queued(env, seq),
            Some(s) => {
                let _ = s.apply(env, seq);
            }
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Priority;
    use crate::subject::QueueName;

    fn queued(id: Uuid) -> Envelope {
        Envelope::new(
            id,
            0,
            Event::Queued(JobSpec {
                kind: "echo".into(),
                queue: QueueName::default_queue(),
                owner: "alice".into(),
                payload: serde_json::json!({"x": 1}),
                priority: Priority::Normal,
                max_attempts: 3,
                timeout_ms: 1000,
                run_at: None,
                idempotency_key: None,
                result_ttl_ms: None,
                backoff: None,
            }),
        )
    }

    fn ev(id: Uuid, attempt: u32, event: Event) -> Envelope {
        Envelope::new(id, attempt, event)
    }

    #[test]
    fn happy_path_with_a_retry() {
        let id = Uuid::now_v7();
        let q = queued(id);
        let mut s = JobState::from_queued(&q, 1).unwrap();
        s.apply(&ev(id, 1, Event::Started { worker: "w".into() }), 2)
            .unwrap();
        s.apply(
            &ev(
                id,
                1,
                Event::Retrying {
                    error: "boom".into(),
                    retry_in_ms: 10,
                },
            ),
            3,
        )
        .unwrap();
        assert_eq!(s.status, JobStatus::Retrying);
        s.apply(&ev(id, 2, Event::Started { worker: "w".into() }), 4)
            .unwrap();
        s.apply(
            &ev(
                id,
                2,
                Event::Succeeded {
                    result: serde_json::json!(7),
                },
            ),
            5,
        )
        .unwrap();
        assert_eq!(s.status, JobStatus::Succeeded);
        assert_eq!(s.attempt, 2);
        assert_eq!(s.result, Some(serde_json::json!(7)));
        assert_eq!(s.error, None);
        assert!(s.finished_at.is_some());
        assert_eq!(s.last_seq, 5);
    }

    #[test]
    fn redelivered_events_are_no_ops() {
        let id = Uuid::now_v7();
        let mut s = JobState::from_queued(&queued(id), 1).unwrap();
        let started = ev(id, 1, Event::Started { worker: "w".into() });
        s.apply(&started, 2).unwrap();
        let before = s.clone();
        assert!(matches!(
            s.apply(&started, 2),
            Err(Rejected::AlreadyApplied { .. })
        ));
        assert_eq!(s, before);
    }

    #[test]
    fn nothing_follows_a_terminal_state() {
        let id = Uuid::now_v7();
        let mut s = JobState::from_queued(&queued(id), 1).unwrap();
        s.apply(&ev(id, 0, Event::Cancelled { reason: None }), 2)
            .unwrap();
        let before = s.clone();
        for (i, e) in [
            Event::Started { worker: "w".into() },
            Event::Succeeded {
                result: Value::Null,
            },
            Event::Failed { error: "x".into() },
            Event::Progress {
                percent: Some(5),
                message: None,
            },
        ]
        .into_iter()
        .enumerate()
        {
            let r = s.apply(&ev(id, 1, e), 3 + i as u64);
            assert!(
                matches!(
                    r,
                    Err(Rejected::Impossible {
                        from: "cancelled",
                        ..
                    })
                ),
                "{r:?}"
            );
        }
        assert_eq!(s, before);
    }

    fn ran(id: Uuid, attempt: u32, event: Event) -> Envelope {
        ev(id, attempt, event).with_run(crate::event::AttemptRun {
            worker: "w".into(),
            started_at: crate::event::now(),
            timed_out: false,
        })
    }

    #[test]
    fn a_short_attempt_ends_straight_from_queued_and_keeps_when_it_ran() {
        let id = Uuid::now_v7();
        let mut s = JobState::from_queued(&queued(id), 1).unwrap();
        let failed_once = ran(
            id,
            1,
            Event::Retrying {
                error: "boom".into(),
                retry_in_ms: 10,
            },
        );
        s.apply(&failed_once, 2).unwrap();
        assert_eq!(s.status, JobStatus::Retrying);
        assert_eq!(s.started_at, failed_once.run.as_ref().map(|r| r.started_at));
        let done = ran(
            id,
            2,
            Event::Succeeded {
                result: Value::Null,
            },
        );
        s.apply(&done, 3).unwrap();
        assert_eq!(s.status, JobStatus::Succeeded);
        assert_eq!(s.attempt, 2);
        assert_eq!(s.started_at, done.run.as_ref().map(|r| r.started_at));
        assert_eq!(s.errors.len(), 1);
    }

    #[test]
    fn a_cancel_stored_before_a_short_attempt_ends_wins() {
        let id = Uuid::now_v7();
        let mut s = JobState::from_queued(&queued(id), 1).unwrap();
        s.apply(
            &ev(
                id,
                0,
                Event::CancelRequested {
                    reason: None,
                    by: None,
                },
            ),
            2,
        )
        .unwrap();
        let late = ran(
            id,
            1,
            Event::Succeeded {
                result: Value::Null,
            },
        );
        assert!(s.apply(&late, 3).is_err());
        assert_eq!(s.status, JobStatus::Cancelled);
    }

    #[test]
    fn succeeded_needs_a_running_attempt() {
        let id = Uuid::now_v7();
        let mut s = JobState::from_queued(&queued(id), 1).unwrap();
        assert!(
            s.apply(
                &ev(
                    id,
                    1,
                    Event::Succeeded {
                        result: Value::Null
                    }
                ),
                2
            )
            .is_err()
        );
        assert_eq!(s.status, JobStatus::Queued);
    }

    #[test]
    fn a_delayed_job_is_scheduled_then_queued_or_cancelled() {
        let id = Uuid::now_v7();
        let Event::Queued(spec) = queued(id).event else {
            unreachable!()
        };
        let scheduled = ev(id, 0, Event::Scheduled(spec.clone()));
        let mut s = JobState::from_queued(&scheduled, 1).unwrap();
        assert_eq!(s.status, JobStatus::Scheduled);
        // Nothing runs a scheduled job before its `queued` event.
        assert!(
            s.apply(&ev(id, 1, Event::Started { worker: "w".into() }), 2)
                .is_err()
        );
        s.apply(&ev(id, 0, Event::Queued(spec.clone())), 3).unwrap();
        assert_eq!(s.status, JobStatus::Queued);
        assert_eq!(s.created_at, scheduled.at);
        s.apply(&ev(id, 1, Event::Started { worker: "w".into() }), 4)
            .unwrap();
        assert_eq!(s.status, JobStatus::Running);

        let mut c = JobState::from_queued(&scheduled, 1).unwrap();
        c.apply(&ev(id, 0, Event::Cancelled { reason: None }), 2)
            .unwrap();
        assert_eq!(c.status, JobStatus::Cancelled);
        // The schedule firing after a cancel changes nothing.
        assert!(c.apply(&ev(id, 0, Event::Queued(spec)), 3).is_err());
        assert_eq!(c.status, JobStatus::Cancelled);
    }

    #[test]
    fn fold_history_skips_rejected_events() {
        let id = Uuid::now_v7();
        let q = queued(id);
        let st = ev(id, 1, Event::Started { worker: "w".into() });
        let ok = ev(
            id,
            1,
            Event::Succeeded {
                result: serde_json::json!(1),
            },
        );
        let late = ev(
            id,
            2,
            Event::Failed {
                error: "late".into(),
            },
        );
        let s = fold_history([(1, &q), (2, &st), (3, &ok), (4, &late)]).unwrap();
        assert_eq!(s.status, JobStatus::Succeeded);
        assert_eq!(s.last_seq, 3);
        assert!(fold_history([(2, &st)]).is_none());
    }

    #[test]
    fn a_cancel_request_cancels_a_waiting_job_at_once() {
        let id = Uuid::now_v7();
        for before in [
            vec![],
            vec![
                Event::Started { worker: "w".into() },
                Event::Retrying {
                    error: "boom".into(),
                    retry_in_ms: 10,
                },
            ],
        ] {
            let mut s = JobState::from_queued(&queued(id), 1).unwrap();
            for (i, e) in before.into_iter().enumerate() {
                s.apply(&ev(id, 1, e), 2 + i as u64).unwrap();
            }
            let req = Event::CancelRequested {
                reason: Some("no longer needed".into()),
                by: Some("alice".into()),
            };
            s.apply(&ev(id, 0, req.clone()), 10).unwrap();
            assert_eq!(s.status, JobStatus::Cancelled);
            assert_eq!(s.error.as_deref(), Some("no longer needed"));
            assert!(s.finished_at.is_some());
            // A second request, or a late start, changes nothing.
            assert!(s.apply(&ev(id, 0, req), 11).is_err());
            assert!(
                s.apply(&ev(id, 1, Event::Started { worker: "w".into() }), 12)
                    .is_err()
            );
        }
    }

    #[test]
    fn a_running_job_stays_running_until_its_worker_cancels_it() {
        let id = Uuid::now_v7();
        let mut s = JobState::from_queued(&queued(id), 1).unwrap();
        s.apply(&ev(id, 1, Event::Started { worker: "w".into() }), 2)
            .unwrap();
        s.apply(
            &ev(
                id,
                0,
                Event::CancelRequested {
                    reason: None,
                    by: None,
                },
            ),
            3,
        )
        .unwrap();
        assert_eq!(s.status, JobStatus::Running);
        assert!(s.cancel_requested());
        s.apply(
            &ev(
                id,
                1,
                Event::Cancelled {
                    reason: Some("cancelled while running".into()),
                },
            ),
            4,
        )
        .unwrap();
        assert_eq!(s.status, JobStatus::Cancelled);
    }

    #[test]
    fn a_retry_request_gives_a_failed_job_fresh_attempts_and_keeps_every_error() {
        let id = Uuid::now_v7();
        let mut s = JobState::from_queued(&queued(id), 1).unwrap();
        let mut seq = 1;
        let mut next = || {
            seq += 1;
            seq
        };
        for attempt in 1..=2 {
            s.apply(
                &ev(id, attempt, Event::Started { worker: "w".into() }),
                next(),
            )
            .unwrap();
            let error = format!("boom {attempt}");
            let e = if attempt == 1 {
                Event::Retrying {
                    error,
                    retry_in_ms: 1,
                }
            } else {
                Event::Failed { error }
            };
            s.apply(&ev(id, attempt, e), next()).unwrap();
        }
        assert_eq!(s.status, JobStatus::Failed);
        let retry = Event::RetryRequested {
            priority: Priority::Normal,
            by: None,
        };
        s.apply(&ev(id, 0, retry.clone()), next()).unwrap();
        assert_eq!(s.status, JobStatus::Queued);
        assert_eq!(
            (s.attempt, s.error.as_deref(), s.finished_at),
            (0, None, None)
        );
        let errors: Vec<(u32, &str)> = s
            .errors
            .iter()
            .map(|e| (e.attempt, e.error.as_str()))
            .collect();
        assert_eq!(errors, [(1, "boom 1"), (2, "boom 2")]);
        // Only a finished-but-unsuccessful job can be retried.
        assert!(s.apply(&ev(id, 0, retry.clone()), next()).is_err());
        s.apply(&ev(id, 1, Event::Started { worker: "w".into() }), next())
            .unwrap();
        s.apply(
            &ev(
                id,
                1,
                Event::Succeeded {
                    result: Value::Null,
                },
            ),
            next(),
        )
        .unwrap();
        assert!(s.apply(&ev(id, 0, retry), next()).is_err());
        assert_eq!(s.errors.len(), 2);
    }
}
