//! Cancel and retry: requests appended as events.
//!
//! Both decide from the job's events in the stream (folded with the same state machine
//! as the projector), never from the SQL projection, and append their event only if
//! nothing happened to the job since that fold (JetStream optimistic concurrency on the
//! job's subjects). If something did, they fold again and decide again.

use jobstream_core::broker::BrokerError;
use jobstream_core::event::{Envelope, Event};
use jobstream_core::trace::{Correlation, TraceParent};
use jobstream_core::{JobState, JobStatus, fold};
use uuid::Uuid;

use super::{CancelJob, JobService, JobsError};
use crate::auth::Caller;

/// How often a request folds again when the job keeps changing under it.
const MAX_CONFLICTS: usize = 8;

impl JobService {
    /// Cancels a job: a queued or retrying job is cancelled at once and never starts; a
    /// running job's handler is told to stop, and the job ends `cancelled` when it has.
    pub async fn cancel(
        &self,
        caller: &Caller,
        id: Uuid,
        input: CancelJob,
        request_id: Option<&str>,
    ) -> Result<JobState, JobsError> {
        let reason = input.validate().map_err(JobsError::Invalid)?;
        let job = self
            .append_after_fold(caller, id, request_id, |job| {
                if job.status.is_terminal() {
                    return Err(JobsError::Conflict(format!(
                        "job {id} is already {}; only unfinished jobs can be cancelled",
                        job.status.as_str()
                    )));
                }
                if job.cancel_requested() {
                    // Asked before; its worker is stopping it.
                    return Ok(None);
                }
                Ok(Some(Event::CancelRequested {
                    reason: reason.clone(),
                    by: Some(caller.sub.clone()),
                }))
            })
            .await?;
        if job.status == JobStatus::Cancelled && job.spec.run_at.is_some() {
            // A delayed job cancelled before it fired: drop its timer so it never fires. Best
            // effort: a timer that fires anyway is ignored by the fold and by the workers.
            if let Err(e) = self.state.broker.cancel_timer(&job.spec.queue, id).await {
                tracing::warn!(error = %e, "cancelled delayed job: timer not purged");
            }
        }
        Ok(job)
    }

    /// Runs a failed or cancelled job again, with a fresh set of attempts. The
    /// `retry_requested` event stays in its history; earlier attempts' errors are kept.
    pub async fn retry(
        &self,
        caller: &Caller,
        id: Uuid,
        request_id: Option<&str>,
    ) -> Result<JobState, JobsError> {
        self.append_after_fold(caller, id, request_id, |job| {
            if !matches!(job.status, JobStatus::Failed | JobStatus::Cancelled) {
                return Err(JobsError::Conflict(format!(
                    "job {id} is {}; only failed or cancelled jobs can be retried",
                    job.status.as_str()
                )));
            }
            Ok(Some(Event::RetryRequested {
                priority: job.spec.priority,
                by: Some(caller.sub.clone()),
            }))
        })
        .await
    }

    /// Folds the job's history, lets `decide` choose an event (or none, or refuse),
    /// and appends it only if the job has no newer event; on a conflict, starts over.
    /// Returns the job's state including the appended event.
    async fn append_after_fold(
        &self,
        caller: &Caller,
        job_id: Uuid,
        request_id: Option<&str>,
        decide: impl Fn(&JobState) -> Result<Option<Event>, JobsError>,
    ) -> Result<JobState, JobsError> {
        for _ in 0..MAX_CONFLICTS {
            let history = self.state.broker.job_history(job_id).await?;
            let mut job = fold::fold_history(history.iter().map(|(seq, env)| (*seq, env)))
                .filter(|job| caller.may_see(&job.spec.owner))
                .ok_or_else(|| JobsError::no_job(job_id))?;
            let Some(event) = decide(&job)? else {
                return Ok(job);
            };
            // A retry request opens a fresh set of attempts: attempt 0, like `queued`.
            let attempt = match event {
                Event::RetryRequested { .. } => 0,
                _ => job.attempt,
            };
            let env = Envelope::new(job_id, attempt, event);
            let correlation = Correlation {
                request_id: request_id.map(str::to_owned),
                trace: self.job_trace(job_id).await,
            };
            match self
                .state
                .broker
                .publish_if_last_correlated(&env, &job.spec.queue, &correlation, job.last_seq)
                .await
            {
                Ok(seq) => {
                    job.apply(&env, seq)
                        .map_err(|e| anyhow::anyhow!("stored event does not fold: {e}"))?;
                    tracing::info!(
                        stream_seq = seq,
                        event = env.event_type().as_str(),
                        "event appended"
                    );
                    return Ok(job);
                }
                Err(BrokerError::Conflict { .. }) => {
                    tracing::debug!("job changed while deciding; folding again");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(JobsError::Busy(format!(
            "job {job_id} keeps changing; retry the request"
        )))
    }

    /// The job's trace (from its first event), with a span id of this request.
    async fn job_trace(&self, job_id: Uuid) -> TraceParent {
        match self.state.broker.job_trace(job_id).await {
            Ok(trace) => trace,
            Err(e) => {
                // Never refuse the request over its trace: the job's own is the usual one.
                tracing::debug!(error = %e, "job's trace not read; using the job's own");
                TraceParent::for_job(job_id)
            }
        }
    }
}
