//! The conductor: publishes what the workflow fold decided (the `action` of
//! `workflow_steps` rows, an outbox written with the checkpoint) and nothing else.
//!
//! It runs beside the projector, woken by each committed batch. Every publish is
//! exactly once whatever happens: a step's `queued` event is appended only while its
//! job has no event at all (`Nats-Expected-Last-Subject-Sequence: 0` over the job's
//! subjects) and with a derived `Nats-Msg-Id`; retries and cancels are appended after a
//! fold of the job's history, on condition that it has not changed since. A conductor
//! that crashes after publishing and before the fold cleared the action publishes again
//! and is refused; two conductors (a projector hand-over) race the same way.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jobstream_core::atomic::{EXPECTED_LAST_SUBJECT_SEQUENCE, Outgoing};
use jobstream_core::broker::{Broker, BrokerError, EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT};
use jobstream_core::event::{Envelope, Event};
use jobstream_core::fold;
use jobstream_core::subject::{self, QueueName};
use jobstream_core::workflow::{StepAction, StepState, derived_event_id, resolve};
use jobstream_entity::{workflow, workflow_step};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Outbox rows handled per round.
const ROUND: u64 = 10_000;
/// Ready steps per atomic batch.
const ENQUEUE_BATCH: usize = 500;
/// Publishes in flight at once.
const IN_FLIGHT: usize = 64;
/// How long a published action is not published again while the fold catches up (a
/// projector far behind must not make the conductor publish the same steps over again;
/// a stored publish never needs repeating, this only bounds the memory).
const RECENT: Duration = Duration::from_secs(300);
/// Backstop: a round this often even when no batch is committed.
const TICK: Duration = Duration::from_secs(1);

/// Publishes the workflow fold's pending step actions.
pub struct Conductor {
    broker: Broker,
    db: DatabaseConnection,
    /// What was published lately: (job id, action, generation) → when.
    recent: HashMap<(Uuid, StepAction, u32), Instant>,
}

/// One outbox row, ready to publish.
struct Pending {
    step: StepState,
    generation: u32,
    /// Results of the workflow's succeeded steps, for `$from` (enqueues only).
    results: HashMap<String, serde_json::Value>,
}

impl Conductor {
    /// A conductor publishing to `broker` from the projection in `db`.
    pub fn new(broker: Broker, db: DatabaseConnection) -> Self {
        Conductor {
            broker,
            db,
            recent: HashMap::new(),
        }
    }

    /// Starts the conductor of `projector` (publishing from `db`, the projector's database)
    /// as a task that stops with `shutdown`.
    pub fn spawn_beside(
        projector: &crate::Projector,
        db: DatabaseConnection,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let conductor = Conductor::new(projector.broker().clone(), db);
        tokio::spawn(conductor.run(projector.applied(), shutdown))
    }

    /// Publishes pending actions after each committed batch (`applied` is the
    /// projector's checkpoint) until `shutdown`.
    pub async fn run(mut self, mut applied: watch::Receiver<u64>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = applied.changed() => if changed.is_err() { break },
                _ = tick.tick() => {}
            }
            match self.round().await {
                Ok(n) if n > 0 => tracing::debug!(published = n, "workflow steps published"),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "workflow conductor round failed; will try again");
                }
            }
        }
    }

    /// One round: every pending action not published lately; returns how many were published.
    pub async fn round(&mut self) -> Result<usize, DbErr> {
        self.recent.retain(|_, at| at.elapsed() < RECENT);
        let rows = workflow_step::Entity::find()
            .filter(workflow_step::Column::Action.is_not_null())
            .limit(ROUND)
            .all(&self.db)
            .await?;
        let mut generations: HashMap<String, u32> = HashMap::new();
        let mut results: HashMap<String, HashMap<String, serde_json::Value>> = HashMap::new();
        let mut pending = Vec::new();
        for row in rows {
            let wf_id = row.workflow_id.clone();
            let step = match StepState::try_from(row) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "unreadable workflow step row");
                    continue;
                }
            };
            let Some(action) = step.action else { continue };
            let generation = match generations.get(&wf_id) {
                Some(g) => *g,
                None => {
                    let g = workflow::Entity::find_by_id(wf_id.clone())
                        .one(&self.db)
                        .await?
                        .map_or(0, |w| u32::try_from(w.generation).unwrap_or(0));
                    generations.insert(wf_id.clone(), g);
                    g
                }
            };
            if self.recent.contains_key(&(step.job_id, action, generation)) {
                continue;
            }
            let results = if action == StepAction::Enqueue {
                if !results.contains_key(&wf_id) {
                    results.insert(wf_id.clone(), self.results_of(&wf_id).await?);
                }
                results[&wf_id].clone()
            } else {
                HashMap::new()
            };
            pending.push(Pending {
                step,
                generation,
                results,
            });
        }
        let (enqueues, others): (Vec<Pending>, Vec<Pending>) = pending
            .into_iter()
            .partition(|p| p.step.action == Some(StepAction::Enqueue));
        let mut published = 0;
        // Ready steps go out in atomic batches (one PubAck, one fsync per batch, like
        // `POST /v1/jobs/batch`); a batch the stream refuses goes out one by one below.
        let mut one_by_one = others;
        for chunk in chunks(enqueues, ENQUEUE_BATCH) {
            let msgs: Vec<Outgoing> = chunk.iter().map(enqueue_message).collect();
            match self.broker.publish_atomic(msgs).await {
                // `last_seq` 0: a message of it was stored before; which ones is not said.
                Ok(ack) if ack.last_seq != 0 => {
                    published += chunk.len();
                    for p in &chunk {
                        self.recent.insert(
                            (p.step.job_id, StepAction::Enqueue, p.generation),
                            Instant::now(),
                        );
                    }
                }
                Ok(_) => one_by_one.extend(chunk),
                Err(e) => {
                    tracing::debug!(error = %e, "batch of workflow steps refused; publishing them one by one");
                    one_by_one.extend(chunk);
                }
            }
        }
        let broker = &self.broker;
        let outcomes: Vec<_> = futures::stream::iter(one_by_one)
            .map(|p| async move {
                let key = (p.step.job_id, p.step.action, p.generation);
                (key, publish(broker, &p).await)
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        for ((job_id, action, generation), outcome) in outcomes {
            let Some(action) = action else { continue };
            match outcome {
                Ok(()) => {
                    published += 1;
                    self.recent
                        .insert((job_id, action, generation), Instant::now());
                }
                Err(e) => {
                    tracing::warn!(%job_id, action = action.as_str(), error = %e, "workflow step not published; will try again");
                }
            }
        }
        Ok(published)
    }

    /// Results of the succeeded steps of a workflow, by step id.
    async fn results_of(&self, wf_id: &str) -> Result<HashMap<String, serde_json::Value>, DbErr> {
        Ok(workflow_step::Entity::find()
            .filter(workflow_step::Column::WorkflowId.eq(wf_id))
            .filter(workflow_step::Column::Status.eq(jobstream_core::JobStatus::Succeeded.as_str()))
            .all(&self.db)
            .await?
            .into_iter()
            .filter_map(|s| s.result.map(|r| (s.step_id, r)))
            .collect())
    }
}

/// Splits `v` into chunks of at most `n`.
fn chunks<T>(mut v: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    while !v.is_empty() {
        let rest = v.split_off(v.len().min(n));
        out.push(std::mem::replace(&mut v, rest));
    }
    out
}

/// A ready step's `queued` event (its payload's references resolved) and queue.
fn queued_event(p: &Pending) -> (Envelope, QueueName) {
    let refs: HashMap<&str, &serde_json::Value> =
        p.results.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut spec = p.step.spec.clone();
    spec.payload = resolve(&spec.payload, &refs);
    let queue = spec.queue.clone();
    let job_id = p.step.job_id;
    let mut env = Envelope::new(job_id, 0, Event::Queued(spec));
    env.event_id = derived_event_id(job_id, "queued", p.generation);
    (env, queue)
}

/// A ready step's `queued` event as a batch message: stored only while its job has no event.
fn enqueue_message(p: &Pending) -> Outgoing {
    let (env, queue) = queued_event(p);
    Outgoing::event(&env, &queue, None)
        .with_header(EXPECTED_LAST_SUBJECT_SEQUENCE, "0")
        .with_header(
            EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT,
            &subject::of_job(env.job_id),
        )
}

/// Publishes one action; `Ok` also when the stream already has it (nothing left to do).
async fn publish(broker: &Broker, p: &Pending) -> Result<(), BrokerError> {
    let step = &p.step;
    let job_id = step.job_id;
    match step.action {
        Some(StepAction::Enqueue) => {
            let (env, queue) = queued_event(p);
            match broker.publish_if_last(&env, &queue, None, 0).await {
                Ok(seq) => {
                    tracing::info!(%job_id, step = %step.step_id, stream_seq = seq, "workflow step enqueued");
                    Ok(())
                }
                // The job exists: an earlier round (or another conductor) enqueued it.
                Err(BrokerError::Conflict { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Some(action @ (StepAction::Retry | StepAction::Cancel)) => {
            let history = broker.job_history(job_id).await?;
            let Some(job) = fold::fold_history(history.iter().map(|(seq, env)| (*seq, env))) else {
                return Ok(());
            };
            let event = match action {
                StepAction::Retry
                    if matches!(
                        job.status,
                        jobstream_core::JobStatus::Failed | jobstream_core::JobStatus::Cancelled
                    ) =>
                {
                    Event::RetryRequested {
                        priority: job.spec.priority,
                        by: Some("workflow".to_owned()),
                    }
                }
                StepAction::Cancel if !job.status.is_terminal() && !job.cancel_requested() => {
                    Event::CancelRequested {
                        reason: Some("workflow stopped".to_owned()),
                        by: Some("workflow".to_owned()),
                    }
                }
                // Already done (by an earlier round, or the job moved on): nothing to publish.
                _ => return Ok(()),
            };
            let attempt = if action == StepAction::Retry {
                0
            } else {
                job.attempt
            };
            let mut env = Envelope::new(job_id, attempt, event);
            env.event_id = derived_event_id(job_id, action.as_str(), p.generation);
            // A conflict (the job moved meanwhile) is an error: the next round decides again.
            broker
                .publish_if_last(&env, &job.spec.queue, None, job.last_seq)
                .await
                .map(|_| ())
        }
        None => Ok(()),
    }
}
