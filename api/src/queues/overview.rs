//! `QueueService::list`: every known queue with its depth (from the projection), its
//! pause state (projected from its control records) and its consumers' counts (NATS);
//! `QueueService::job_counts`: the same counts for any caller, over their own jobs.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream::context::ConsumerInfoErrorKind;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use jobstream_core::JobStatus;
use jobstream_core::broker::BrokerError;
use jobstream_core::subject::{self, QueueName};
use jobstream_entity::{job_count, queue_state, queued_job};
use sea_orm::sea_query::{Alias, Expr};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{QueueService, QueuesError, require_admin};
use crate::auth::Caller;

/// The statuses of jobs that are not finished: a queue's depth.
const UNFINISHED: [JobStatus; 4] = [
    JobStatus::Scheduled,
    JobStatus::Queued,
    JobStatus::Retrying,
    JobStatus::Running,
];

/// Counts of a queue's lane consumers (all priority lanes together), as NATS sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsumerCounts {
    /// Messages not yet delivered to any worker.
    pub pending: u64,
    /// Messages delivered and not yet acknowledged (running, or waiting out a back-off).
    pub ack_pending: u64,
    /// Messages delivered more than once and not yet acknowledged.
    pub redelivered: u64,
}

/// One queue's jobs that a caller may see (the console's overview).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Queue name.
    pub queue: String,
    /// Jobs per status name (statuses without jobs absent).
    pub counts: BTreeMap<String, u64>,
    /// Creation time of the oldest `queued` job.
    pub oldest_waiting: Option<DateTime<Utc>>,
}

/// The projection's jobs `caller` may see: an admin every job, a user their own.
fn visible(caller: &Caller) -> sea_orm::Select<queued_job::Entity> {
    let all = queued_job::Entity::find();
    if caller.is_admin {
        all
    } else {
        all.filter(queued_job::Column::Owner.eq(caller.sub.as_str()))
    }
}

/// One queue as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueView {
    /// The queue name.
    pub name: String,
    /// Whether its workers take no new jobs.
    pub paused: bool,
    /// Who paused or resumed it last, and when (absent for a queue never paused).
    pub changed_by: Option<String>,
    /// When it was paused or resumed last.
    pub changed_at: Option<DateTime<Utc>>,
    /// Unfinished jobs by status (`scheduled`, `queued`, `retrying`, `running`), from the projection.
    pub depth: BTreeMap<String, u64>,
    /// How long the oldest `queued` job has waited, in milliseconds.
    pub oldest_waiting_ms: Option<u64>,
    /// The lane consumers' counts; absent before any worker made them.
    pub consumer: Option<ConsumerCounts>,
    /// The global concurrency limit (jobs running at once across all workers), if any.
    pub global_limit: Option<i64>,
}

impl QueueService {
    /// Every queue known to the projection (jobs, pause state) or to NATS (lane
    /// consumers), by name. Admins only.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<QueueView>, QueuesError> {
        require_admin(caller)?;
        let now = jobstream_core::event::now();
        let states: BTreeMap<String, queue_state::Model> = queue_state::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|s| (s.queue.clone(), s))
            .collect();
        let depths = self.counts_by_status(caller, &UNFINISHED).await?;
        let consumers = self.consumer_counts().await?;
        let names: BTreeSet<&String> = states
            .keys()
            .chain(depths.keys())
            .chain(consumers.keys())
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let state = states.get(name);
            let oldest = match depths.get(name).and_then(|d| d.get("queued")) {
                Some(_) => self.oldest_queued(caller, name).await?,
                None => None,
            };
            out.push(QueueView {
                name: name.clone(),
                paused: state.is_some_and(|s| s.paused),
                changed_by: state.map(|s| s.changed_by.clone()),
                changed_at: state.map(|s| s.changed_at),
                depth: depths.get(name).cloned().unwrap_or_default(),
                oldest_waiting_ms: oldest
                    .map(|at| u64::try_from((now - at).num_milliseconds().max(0)).unwrap_or(0)),
                consumer: consumers.get(name).cloned(),
                global_limit: self.global_limit(name).await?,
            });
        }
        Ok(out)
    }

    /// Jobs per queue and status, only `statuses`, as `caller` may see them (an admin
    /// every job, a user their own): the one count the queues page, `GET /v1/queues`
    /// and the console's overview show, read from the counts the projector keeps with
    /// the rows (`job_counts`: a few rows per queue and owner, however many jobs).
    async fn counts_by_status(
        &self,
        caller: &Caller,
        statuses: &[JobStatus],
    ) -> Result<BTreeMap<String, BTreeMap<String, u64>>, QueuesError> {
        use job_count::Column as C;
        use sea_orm::sea_query::ExprTrait as _;
        let mut rows = job_count::Entity::find()
            .select_only()
            .column(C::Queue)
            .column(C::Status)
            // SUM of BIGINT is NUMERIC on PostgreSQL: back to BIGINT on every backend.
            .column_as(Expr::expr(C::Jobs.sum()).cast_as(Alias::new("BIGINT")), "n")
            .filter(C::Status.is_in(statuses.iter().map(|s| s.as_str())))
            .group_by(C::Queue)
            .group_by(C::Status);
        if !caller.is_admin {
            rows = rows.filter(C::Owner.eq(caller.sub.as_str()));
        }
        let rows: Vec<(String, String, i64)> = rows.into_tuple().all(&self.db).await?;
        let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (queue, status, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            if n > 0 {
                out.entry(queue).or_default().insert(status, n);
            }
        }
        Ok(out)
    }

    /// Every queue holding jobs the caller may see, with their counts by status (every
    /// status) and the oldest waiting job: the console's overview. Any caller; a user
    /// counts only their own jobs.
    pub async fn job_counts(&self, caller: &Caller) -> Result<Vec<QueueCounts>, QueuesError> {
        let counts = self.counts_by_status(caller, &JobStatus::ALL).await?;
        let mut out = Vec::with_capacity(counts.len());
        for (queue, counts) in counts {
            let oldest_waiting = match counts.get(JobStatus::Queued.as_str()) {
                Some(_) => self.oldest_queued(caller, &queue).await?,
                None => None,
            };
            out.push(QueueCounts {
                queue,
                counts,
                oldest_waiting,
            });
        }
        Ok(out)
    }

    /// When the oldest `queued` job of a queue (that the caller may see) was created: the
    /// definition the console and the `queue_oldest_waiting_job_age_seconds` gauge use,
    /// served by the same (queue, status, created_at) index.
    async fn oldest_queued(
        &self,
        caller: &Caller,
        queue: &str,
    ) -> Result<Option<DateTime<Utc>>, QueuesError> {
        use queued_job::Column as C;
        Ok(visible(caller)
            .filter(C::Queue.eq(queue))
            .filter(C::Status.eq(JobStatus::Queued.as_str()))
            .order_by_asc(C::CreatedAt)
            .one(&self.db)
            .await?
            .map(|j| j.created_at))
    }

    /// Every queue's lane consumers, summed over its lanes.
    async fn consumer_counts(&self) -> Result<BTreeMap<String, ConsumerCounts>, QueuesError> {
        let stream = self.broker.stream().await?;
        let mut consumers = stream.consumers();
        let mut out: BTreeMap<String, ConsumerCounts> = BTreeMap::new();
        while let Some(info) = consumers.next().await {
            let info = info.map_err(|e| BrokerError::Read(format!("listing consumers: {e}")))?;
            let Some(queue) = subject::lane_consumer_queue(&info.name) else {
                continue;
            };
            let counts = out.entry(queue.to_owned()).or_default();
            counts.pending += info.num_pending;
            counts.ack_pending += info.num_ack_pending as u64;
            counts.redelivered += info.num_redelivered as u64;
        }
        Ok(out)
    }

    /// The queue's global limit: its slots consumer's `max_ack_pending` (see the worker's `limit`).
    async fn global_limit(&self, queue: &str) -> Result<Option<i64>, QueuesError> {
        if QueueName::parse(queue).is_err() {
            return Ok(None);
        }
        let slots = self
            .broker
            .jetstream()
            .get_stream_no_info(subject::slots_stream(self.broker.stream_name()))
            .await
            .map_err(|e| BrokerError::Read(format!("reading the limit of {queue}: {e}")))?;
        match slots.consumer_info(subject::slots_consumer(queue)).await {
            Ok(info) => Ok(Some(info.config.max_ack_pending)),
            // No limit on this queue (or on any: no slots stream yet).
            Err(e)
                if matches!(
                    e.kind(),
                    ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(BrokerError::Read(format!("reading the limit of {queue}: {e}")).into()),
        }
    }
}
