//! Scrape-time gauges of the projection and of the stream and its consumers.
//!
//! The projector role exports them (one active projector), so summing over the
//! instances Prometheus scrapes never counts a job or a message twice.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use jobstream_core::JobStatus;
use jobstream_core::broker::Broker;
use jobstream_core::metrics::{self as m, GaugeSource, Refresh};
use jobstream_entity::{job_count, projector_checkpoint, queued_job};
use sea_orm::sea_query::{Alias, Expr, ExprTrait};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};

/// Reads job counts, backlog age, the checkpoint, the stream and its consumers.
pub struct ProjectionGauges {
    broker: Broker,
    db: DatabaseConnection,
    projector: String,
}

impl ProjectionGauges {
    /// Gauges of the projection in `db` kept by the projector named `projector`.
    pub fn new(broker: Broker, db: DatabaseConnection, projector: &str) -> Self {
        ProjectionGauges {
            broker,
            db,
            projector: projector.to_owned(),
        }
    }

    async fn projection(&self) -> Result<u64, sea_orm::DbErr> {
        // From the counts kept with the rows: a scrape reads a few rows, not every job.
        let counts: Vec<(String, String, i64)> = job_count::Entity::find()
            .select_only()
            .column(job_count::Column::Queue)
            .column(job_count::Column::Status)
            .column_as(
                Expr::expr(job_count::Column::Jobs.sum()).cast_as(Alias::new("BIGINT")),
                "n",
            )
            .group_by(job_count::Column::Queue)
            .group_by(job_count::Column::Status)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut by_queue: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for (queue, status, n) in counts {
            by_queue.entry(queue).or_default().insert(status, n);
        }
        for (queue, statuses) in &by_queue {
            // Every status of a known queue, so one that emptied reads 0 instead of its last value.
            for status in JobStatus::ALL {
                let n = statuses.get(status.as_str()).copied().unwrap_or(0);
                metrics::gauge!(m::JOBS, "queue" => queue.clone(), "status" => status.as_str())
                    .set(n as f64);
            }
        }
        let oldest: Vec<(String, Option<DateTime<Utc>>)> = queued_job::Entity::find()
            .select_only()
            .column(queued_job::Column::Queue)
            .column_as(queued_job::Column::CreatedAt.min(), "oldest")
            .filter(queued_job::Column::Status.eq(JobStatus::Queued.as_str()))
            .group_by(queued_job::Column::Queue)
            .into_tuple()
            .all(&self.db)
            .await?;
        let now = Utc::now();
        let waiting: BTreeMap<_, _> = oldest.into_iter().collect();
        for queue in by_queue.keys() {
            let age = waiting.get(queue).copied().flatten().map_or(0.0, |at| {
                (now - at).to_std().unwrap_or_default().as_secs_f64()
            });
            metrics::gauge!(m::QUEUE_OLDEST_WAITING_AGE, "queue" => queue.clone()).set(age);
        }
        let checkpoint = projector_checkpoint::Entity::find_by_id(self.projector.clone())
            .one(&self.db)
            .await?
            .map_or(0, |c| u64::try_from(c.last_seq).unwrap_or(0));
        metrics::gauge!(m::PROJECTOR_LAST_APPLIED).set(checkpoint as f64);
        Ok(checkpoint)
    }

    async fn stream(&self, checkpoint: u64) -> Result<(), String> {
        let name = self.broker.stream_name();
        let mut stream = (self.broker.jetstream().get_stream(name).await)
            .map_err(|e| format!("stream {name}: {e}"))?;
        let info = stream.info().await.map_err(|e| e.to_string())?.clone();
        metrics::gauge!(m::NATS_STREAM_MESSAGES).set(info.state.messages as f64);
        metrics::gauge!(m::NATS_STREAM_BYTES).set(info.state.bytes as f64);
        let lag = info.state.last_sequence.saturating_sub(checkpoint);
        metrics::gauge!(m::PROJECTOR_LAG).set(lag as f64);
        let mut workers: BTreeMap<String, usize> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut consumers = stream.consumers();
        while let Some(c) = consumers.next().await {
            let c = c.map_err(|e| format!("listing consumers: {e}"))?;
            let name = c.name.clone();
            metrics::gauge!(m::NATS_CONSUMER_PENDING, "consumer" => name.clone())
                .set(c.num_pending as f64);
            metrics::gauge!(m::NATS_CONSUMER_ACK_PENDING, "consumer" => name.clone())
                .set(c.num_ack_pending as f64);
            metrics::gauge!(m::NATS_CONSUMER_REDELIVERED, "consumer" => name.clone())
                .set(c.num_redelivered as f64);
            metrics::gauge!(m::NATS_CONSUMER_ACK_FLOOR, "consumer" => name.clone())
                .set(c.ack_floor.stream_sequence as f64);
            // A lane consumer is `worker-<queue>` or `worker_<lane>-<queue>`; its waiting
            // pull requests are the workers ready to take that queue's jobs.
            if jobstream_core::subject::is_lane_consumer(&name)
                && let Some((_, queue)) = name.split_once('-')
                && seen.insert(name.clone())
            {
                let n = workers.entry(queue.to_owned()).or_default();
                *n = (*n).max(c.num_waiting);
            }
        }
        for (queue, n) in workers {
            metrics::gauge!(m::WORKERS, "queue" => queue).set(n as f64);
        }
        Ok(())
    }
}

impl GaugeSource for ProjectionGauges {
    fn refresh(&self) -> Refresh<'_> {
        Box::pin(async move {
            let checkpoint = match self.projection().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: cannot read the projection");
                    return;
                }
            };
            if let Err(e) = self.stream(checkpoint).await {
                tracing::warn!(error = %e, "metrics: cannot read the stream");
            }
        })
    }
}
