//! What a delivery of a runnable message should do, decided from the job's
//! events in the stream (never from SQL).

use jobstream_core::broker::{Broker, BrokerError};
use jobstream_core::event::{Envelope, Event, JobSpec};
use jobstream_core::subject;
use jobstream_core::{JobState, JobStatus};
use uuid::Uuid;

/// What a delivery of a runnable message should do, decided from the job's history.
#[derive(Debug)]
pub(crate) enum Plan {
    /// Run an attempt; its `started` (if it runs long) and its outcome are stored only
    /// if the job's latest event is still `last_seq`.
    Run { spec: JobSpec, last_seq: u64 },
    /// The job was asked to cancel while its previous worker ran it: record `cancelled`.
    Cancel { spec: JobSpec, last_seq: u64 },
    /// Nothing to run (finished, cancelled, or superseded by a later retry request).
    Skip(String),
}

/// Folds a job's history (in stream order) and decides what the runnable message at
/// `msg_seq` should do. Only the latest accepted `queued`/`retry_requested` event may
/// run the job, so a job runs at most once per request, however its messages arrive.
pub(crate) fn plan(history: &[(u64, Envelope)], msg_seq: u64) -> Plan {
    let mut state: Option<JobState> = None;
    let mut trigger = 0;
    for (seq, env) in history {
        match &mut state {
            None => {
                state = JobState::from_queued(env, *seq);
                if state.is_some() {
                    trigger = *seq;
                }
            }
            Some(s) => {
                // A retry request, or a delayed job's `queued` event (fired by its timer
                // after `scheduled`), is what makes the job runnable.
                if s.apply(env, *seq).is_ok()
                    && matches!(env.event, Event::RetryRequested { .. } | Event::Queued(_))
                {
                    trigger = *seq;
                }
            }
        }
    }
    let Some(job) = state else {
        return Plan::Skip("the job's queued event is not in the stream".into());
    };
    if trigger != msg_seq {
        return Plan::Skip(format!("superseded by the job's event at seq {trigger}"));
    }
    // The condition of the next append is the last sequence under the job's own subjects
    // (`jobs.*.<job_id>.*`). A periodic job's `queued` event was fired onto its schedule's
    // subject (`jobs.<queue>.sched-<key>.…`, its sequence carried in the job id), so it
    // does not count there.
    let fired = jobstream_core::stored::fired_sequence(job.id);
    let last_seq = history
        .iter()
        .filter(|(seq, env)| !(*seq == fired && matches!(env.event, Event::Queued(_))))
        .map(|(seq, _)| *seq)
        .max()
        .unwrap_or(0);
    match job.status {
        s if s.is_terminal() => Plan::Skip(format!("the job is already {}", s.as_str())),
        JobStatus::Running if job.cancel_requested() => Plan::Cancel {
            spec: job.spec,
            last_seq,
        },
        _ => Plan::Run {
            spec: job.spec,
            last_seq,
        },
    }
}

/// Whether `event` (a stored message's payload) is still the latest event under its
/// job's own subjects (`jobs.*.<id>.*`): one direct get of the latest one's payload,
/// compared byte for byte (every event has its own id, so no other event has the same
/// bytes). A first delivery of a `queued` message that is still its job's latest event
/// has nothing to fold (a cancel request stored before it starts would be newer), so the
/// job runs without reading its history.
pub(crate) async fn is_latest_event(
    broker: &Broker,
    job_id: Uuid,
    event: &[u8],
) -> Result<bool, BrokerError> {
    let latest = broker.last_payload_on(&subject::of_job(job_id)).await?;
    Ok(latest.is_some_and(|latest| latest == event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobstream_core::event::Priority;
    use jobstream_core::subject::QueueName;
    use serde_json::Value;

    fn spec() -> JobSpec {
        JobSpec {
            kind: "echo".into(),
            queue: QueueName::default_queue(),
            owner: "alice".into(),
            payload: Value::Null,
            priority: Priority::Normal,
            max_attempts: 3,
            timeout_ms: 1000,
            run_at: None,
            idempotency_key: None,
            result_ttl_ms: None,
            backoff: None,
        }
    }

    fn history(events: Vec<Event>) -> Vec<(u64, Envelope)> {
        let id = Uuid::now_v7();
        events
            .into_iter()
            .enumerate()
            .map(|(i, e)| (i as u64 + 1, Envelope::new(id, 0, e)))
            .collect()
    }

    #[test]
    fn only_the_latest_runnable_event_runs_the_job() {
        let retry = || Event::RetryRequested {
            priority: Priority::Normal,
            by: None,
        };
        let h = history(vec![
            Event::Queued(spec()),
            Event::CancelRequested {
                reason: None,
                by: None,
            },
            retry(),
        ]);
        // The original queued message of a cancelled-then-retried job is superseded.
        assert!(matches!(plan(&h, 1), Plan::Skip(_)));
        assert!(matches!(plan(&h, 3), Plan::Run { last_seq: 3, .. }));
        // A retry request the fold refused (the job was not finished) never runs it.
        // (It is still stored under the job's subjects: the next append is conditional on it.)
        let h = history(vec![Event::Queued(spec()), retry()]);
        assert!(matches!(plan(&h, 1), Plan::Run { last_seq: 2, .. }));
        assert!(matches!(plan(&h, 2), Plan::Skip(_)));
    }

    #[test]
    fn finished_or_cancelled_jobs_never_run_again() {
        let cancelled = history(vec![
            Event::Queued(spec()),
            Event::CancelRequested {
                reason: None,
                by: None,
            },
        ]);
        assert!(matches!(plan(&cancelled, 1), Plan::Skip(_)));
        let done = history(vec![
            Event::Queued(spec()),
            Event::Started { worker: "w".into() },
            Event::Succeeded {
                result: Value::Null,
            },
        ]);
        assert!(matches!(plan(&done, 1), Plan::Skip(_)));
        // Its worker died while it ran, and it was asked to cancel meanwhile.
        let orphan = history(vec![
            Event::Queued(spec()),
            Event::Started { worker: "w".into() },
            Event::CancelRequested {
                reason: None,
                by: None,
            },
        ]);
        assert!(matches!(plan(&orphan, 1), Plan::Cancel { last_seq: 3, .. }));
        // Its worker died while it ran: run it again.
        let died = history(vec![
            Event::Queued(spec()),
            Event::Started { worker: "w".into() },
        ]);
        assert!(matches!(plan(&died, 1), Plan::Run { last_seq: 2, .. }));
        assert!(matches!(plan(&[], 1), Plan::Skip(_)));
    }
}
