//! The projector process: a durable consumer over every job event.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, FromConsumer, pull};
use futures::StreamExt;
use jobstream_core::Envelope;
use jobstream_core::broker::Broker;
use jobstream_core::stored::{Record, StoredMessage};
use sea_orm::{DatabaseConnection, DbErr};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::apply::{self, BatchOutcome};

/// How the projector folds and sweeps.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Durable consumer name; also the checkpoint's name.
    pub name: String,
    /// Most events folded in one transaction.
    pub batch_size: usize,
    /// How often finished jobs are swept.
    pub sweep_interval: Duration,
    /// Age after which a finished job is deleted from the projection.
    pub job_ttl: Duration,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        ProjectorConfig {
            name: "projector".to_owned(),
            batch_size: 500,
            sweep_interval: Duration::from_secs(60),
            job_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Errors that stop the projector.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// The consumer could not be created or read.
    #[error("JetStream consumer: {0}")]
    Consumer(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] DbErr),
}

/// Folds the job stream into SQL.
pub struct Projector {
    broker: Broker,
    db: DatabaseConnection,
    config: ProjectorConfig,
    consumer: consumer::Consumer<pull::Config>,
    applied_tx: watch::Sender<u64>,
}

impl Projector {
    /// Creates (or reuses) the durable consumer.
    pub async fn build(
        broker: Broker,
        db: DatabaseConnection,
        config: ProjectorConfig,
    ) -> Result<Self, ProjectorError> {
        let stream = broker
            .stream()
            .await
            .map_err(|e| ProjectorError::Consumer(e.to_string()))?;
        let mut consumer = stream
            .get_or_create_consumer(
                &config.name,
                pull::Config {
                    durable_name: Some(config.name.clone()),
                    description: Some(
                        "jobstream projector: folds every job event into SQL".to_owned(),
                    ),
                    // Every subject of the stream (jobs, schedules, users, …): the checkpoint is a stream sequence.
                    filter_subject: String::new(),
                    deliver_policy: DeliverPolicy::All,
                    // Acking the last message of a batch acknowledges the whole batch.
                    ack_policy: AckPolicy::All,
                    ack_wait: Duration::from_secs(60),
                    max_ack_pending: i64::try_from(config.batch_size * 4).unwrap_or(i64::MAX),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| ProjectorError::Consumer(e.to_string()))?;
        // A consumer created by an older version filtered `jobs.>` (and `schedules.>`) only: widen it to the whole
        // stream (users too). Updating keeps its position; the checkpoint decides anyway.
        let filters = &consumer.cached_info().config;
        if !filters.filter_subject.is_empty() || !filters.filter_subjects.is_empty() {
            let mut widened =
                pull::Config::try_from_consumer_config(consumer.cached_info().config.clone())
                    .map_err(|e| ProjectorError::Consumer(e.to_string()))?;
            widened.filter_subject = String::new();
            widened.filter_subjects = Vec::new();
            consumer = stream
                .update_consumer(widened)
                .await
                .map_err(|e| ProjectorError::Consumer(e.to_string()))?;
            tracing::info!(name = %config.name, "projector consumer widened to every subject of the stream");
        }
        let checkpoint = apply::load_checkpoint(&db, &config.name).await?;
        let (applied_tx, _) = watch::channel(checkpoint);
        Ok(Projector {
            broker,
            db,
            config,
            consumer,
            applied_tx,
        })
    }

    /// Watches the checkpoint: the last stream sequence committed to SQL.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    /// The broker this projector reads from.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Applies one batch of `(sequence, job event)` in one transaction.
    pub async fn apply_batch(
        &self,
        batch: &[(u64, Option<Envelope>)],
    ) -> Result<BatchOutcome, DbErr> {
        apply::apply_batch(&self.db, &self.config.name, batch).await
    }

    /// Deletes finished jobs older than the job TTL; returns how many.
    pub async fn sweep(&self) -> Result<u64, DbErr> {
        let ttl = chrono::Duration::from_std(self.config.job_ttl).unwrap_or(chrono::Duration::MAX);
        let cutoff = jobstream_core::event::now() - ttl;
        let n = apply::sweep_finished(&self.db, cutoff).await?;
        if n > 0 {
            tracing::info!(deleted = n, "swept finished jobs past their TTL");
        }
        Ok(n)
    }

    /// Folds events until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ProjectorError> {
        let mut messages = self
            .consumer
            .stream()
            .max_messages_per_batch(self.config.batch_size * 2)
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| ProjectorError::Consumer(e.to_string()))?
            .ready_chunks(self.config.batch_size);
        let mut sweep = tokio::time::interval(self.config.sweep_interval);
        tracing::info!(name = %self.config.name, "projector started");
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = sweep.tick() => {
                    if let Err(e) = self.sweep().await {
                        tracing::error!(error = %e, "TTL sweep failed; will try again");
                    }
                }
                chunk = messages.next() => {
                    let Some(chunk) = chunk else {
                        return Err(ProjectorError::Consumer("message stream ended".to_owned()));
                    };
                    let mut batch = Vec::with_capacity(chunk.len());
                    let mut last = None;
                    for m in chunk {
                        match m {
                            Ok(m) => {
                                let seq = match m.info() {
                                    Ok(i) => i.stream_sequence,
                                    Err(e) => { tracing::warn!(error = %e, "message without JetStream metadata"); continue; }
                                };
                                // The one decoder: fired jobs need the stored message, not just its payload.
                                let decoded = StoredMessage::from_delivered(&m).and_then(|s| Record::from_stored(&s));
                                let env = match decoded {
                                    Ok(rec) => Some(rec),
                                    Err(e) => {
                                        tracing::error!(seq, subject = %m.subject, error = %e, "undecodable event skipped");
                                        None
                                    }
                                };
                                batch.push((seq, env));
                                last = Some(m);
                            }
                            Err(e) => tracing::warn!(error = %e, "consumer error; continuing"),
                        }
                    }
                    let Some(last) = last else { continue };
                    // The consumer only delivers; order comes from the stream. Messages an earlier
                    // (crashed) instance held come back only after ack_wait, later ones may come
                    // first: read anything missing above the checkpoint straight from the stream.
                    batch.sort_by_key(|(seq, _)| *seq);
                    batch.dedup_by_key(|(seq, _)| *seq);
                    let checkpoint = *self.applied_tx.borrow();
                    if let Some(&(first, _)) = batch.iter().find(|(seq, _)| *seq > checkpoint)
                        && first > checkpoint + 1
                    {
                        match self.broker.records_between(checkpoint + 1, first).await {
                            Ok(mut missing) => {
                                tracing::info!(from = checkpoint + 1, until = first, read = missing.len(), "filled a delivery gap from the stream");
                                missing.append(&mut batch);
                                batch = missing;
                            }
                            Err(e) => {
                                // Do not fold past a gap: drop this batch, it is redelivered.
                                tracing::warn!(error = %e, "cannot fill a delivery gap; waiting for redelivery");
                                continue;
                            }
                        }
                    }
                    let Some(outcome) = self.apply_until_committed(&batch, &shutdown).await else { break };
                    tracing::debug!(?outcome, "batch committed");
                    if let Err(e) = last.ack().await {
                        // Harmless: the batch is redelivered and is a no-op below the checkpoint.
                        tracing::warn!(error = %e, "ack after commit failed");
                    }
                    self.applied_tx.send_replace(outcome.checkpoint);
                }
            }
        }
        tracing::info!("projector stopped");
        Ok(())
    }

    /// Applies one batch of `(sequence, record)` — job events, schedule and user records — in one transaction.
    pub async fn apply_records(
        &self,
        batch: &[(u64, Option<Record>)],
    ) -> Result<BatchOutcome, DbErr> {
        apply::apply_records(&self.db, &self.config.name, batch).await
    }

    /// Retries a batch until it commits: skipping it would lose events. `None` on shutdown.
    async fn apply_until_committed(
        &self,
        batch: &[(u64, Option<Record>)],
        shutdown: &CancellationToken,
    ) -> Option<BatchOutcome> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.apply_records(batch).await {
                Ok(o) => return Some(o),
                Err(e) => {
                    tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "batch not committed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
