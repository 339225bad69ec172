//! `verify`: a fresh fold of the stream in memory, compared row by row with the projection.

use std::time::Duration;

use jobstream_core::JobStatus;
use jobstream_core::broker::Broker;
use jobstream_core::replay::ReplaySummary;
use jobstream_core::stream_read;
use jobstream_core::verify::VerifyResult;
pub use jobstream_core::verify::{Difference, RejectedEvent};
use jobstream_entity::{job_count, queued_job, rejected_event, workflow, workflow_step};
use migration::MigratorTrait;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    QueryOrder, TransactionTrait,
};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::fold::{FoldTarget, fold_range, sweep_cutoff};
use super::{Progress, ReplayError};
use crate::apply;

/// What `verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Checkpoint of the projection that was compared (the fold went exactly this far).
    pub checkpoint: u64,
    /// Rows in the projection.
    pub projected: usize,
    /// Jobs in the fresh fold.
    pub folded: usize,
    /// Finished jobs past the TTL that the projection has (rightly) swept.
    pub swept: usize,
    /// Rows whose events have all expired from the stream: not comparable.
    pub beyond_retention: usize,
    /// Jobs that differ.
    pub differences: Vec<Difference>,
    /// Events the projection recorded as rejected (dead letters), up to its checkpoint.
    pub rejected: Vec<RejectedEvent>,
    /// Jobs not compared because one of their events was rejected (the projection cannot
    /// hold it, so it rightly differs from a fold that could).
    pub rejected_jobs: usize,
}

/// An event the projection could not hold, as `verify` reports it.
fn rejected_from(m: rejected_event::Model) -> RejectedEvent {
    RejectedEvent {
        seq: u64::try_from(m.seq).unwrap_or(0),
        subject: m.subject,
        job_id: m.job_id,
        event_type: m.event_type,
        error: m.error,
        rejected_at: m.rejected_at,
    }
}

/// The dead letters of a projector, oldest first: up to `limit` with a sequence above `after`.
pub async fn rejected_events<C: ConnectionTrait>(
    db: &C,
    projector_name: &str,
    after: u64,
    limit: u64,
) -> Result<Vec<RejectedEvent>, DbErr> {
    Ok(rejected_event::list(db, projector_name, after, limit)
        .await?
        .into_iter()
        .map(rejected_from)
        .collect())
}

impl VerifyReport {
    /// Whether the projection equals the fresh fold.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
    }

    /// The report as published to the API: complete counts, the first `listed`
    /// differences and rejected events.
    pub fn to_result(&self, listed: usize) -> VerifyResult {
        let n = |x: usize| u64::try_from(x).unwrap_or(u64::MAX);
        VerifyResult {
            checkpoint: self.checkpoint,
            clean: self.is_clean(),
            projected: n(self.projected),
            folded: n(self.folded),
            swept: n(self.swept),
            beyond_retention: n(self.beyond_retention),
            difference_count: n(self.differences.len()),
            differences: self.differences.iter().take(listed).cloned().collect(),
            rejected_count: n(self.rejected.len()),
            rejected: self.rejected.iter().take(listed).cloned().collect(),
            rejected_jobs: n(self.rejected_jobs),
        }
    }
}

/// Folds the stream afresh in memory (an in-memory SQLite database, with the projector's
/// code) up to the projection's checkpoint and compares every row.
pub async fn verify(
    broker: &Broker,
    live: &DatabaseConnection,
    projector_name: &str,
    job_ttl: Duration,
) -> Result<VerifyReport, ReplayError> {
    // One consistent snapshot of the projection: rows and the checkpoint they cover.
    // (SQLite in WAL mode gives a read transaction a snapshot by itself.)
    let isolation = (live.get_database_backend() == DbBackend::Postgres)
        .then_some(sea_orm::IsolationLevel::RepeatableRead);
    let txn = live.begin_with_config(isolation, None).await?;
    let checkpoint = apply::load_checkpoint(&txn, projector_name).await?;
    let projected = queued_job::Entity::find()
        .order_by_asc(queued_job::Column::Id)
        .all(&txn)
        .await?;
    let rejected: Vec<RejectedEvent> = rejected_events(&txn, projector_name, 0, u64::MAX)
        .await?
        .into_iter()
        .filter(|r| r.seq <= checkpoint)
        .collect();
    let projected_workflows = workflow_rows(&txn).await?;
    let kept_counts = job_count::Entity::find().all(&txn).await?;
    txn.commit().await?;
    let rejected_ids: std::collections::HashSet<String> =
        rejected.iter().filter_map(|r| r.job_id.clone()).collect();

    let mut opts = ConnectOptions::new("sqlite::memory:");
    opts.max_connections(1)
        .min_connections(1)
        .sqlx_logging(false);
    let mem = Database::connect(opts).await?;
    migration::Migrator::up(&mem, None).await?;
    let progress = Progress::default();
    let mut summary = ReplaySummary::default();
    let cancel = CancellationToken::new();
    let target = FoldTarget {
        broker,
        db: &mem,
        name: projector_name,
        batch_size: 2000,
        progress: &progress,
        cancel: &cancel,
    };
    fold_range(&target, 1, checkpoint, &mut summary).await?;
    let folded = queued_job::Entity::find()
        .order_by_asc(queued_job::Column::Id)
        .all(&mem)
        .await?;
    let first_seq = stream_read::bounds(broker).await?.first;
    let cutoff = sweep_cutoff(job_ttl);

    let mut report = VerifyReport {
        checkpoint,
        projected: projected.len(),
        folded: folded.len(),
        rejected,
        ..Default::default()
    };
    let fresh: std::collections::HashMap<&str, &queued_job::Model> =
        folded.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut seen = std::collections::HashSet::new();
    for row in &projected {
        seen.insert(row.id.as_str());
        if rejected_ids.contains(&row.id) {
            report.rejected_jobs += 1;
            continue;
        }
        match fresh.get(row.id.as_str()) {
            Some(f) => {
                let fields = differing_fields(row, f);
                if !fields.is_empty() {
                    report.differences.push(Difference {
                        job_id: row.id.clone(),
                        fields,
                    });
                }
            }
            None if u64::try_from(row.last_seq).unwrap_or(0) < first_seq => {
                report.beyond_retention += 1;
            }
            None => report.differences.push(Difference {
                job_id: row.id.clone(),
                fields: vec!["not in a fresh fold of the stream".into()],
            }),
        }
    }
    for f in &folded {
        if seen.contains(f.id.as_str()) {
            continue;
        }
        if rejected_ids.contains(&f.id) {
            report.rejected_jobs += 1;
            continue;
        }
        let finished = JobStatus::parse(&f.status).is_some_and(JobStatus::is_terminal);
        if finished && f.finished_at.is_some_and(|t| t < cutoff) {
            report.swept += 1;
        } else {
            report.differences.push(Difference {
                job_id: f.id.clone(),
                fields: vec![format!("missing from the projection (status {})", f.status)],
            });
        }
    }
    compare_workflows(
        &mut report,
        &projected_workflows,
        &workflow_rows(&mem).await?,
    );
    compare_counts(&mut report, &kept_counts, &projected);
    mem.close().await.ok();
    Ok(report)
}

/// Adds a difference for each (queue, owner, status) whose `job_counts` row is not the
/// number of job rows the projection holds (the counts must follow the rows exactly).
fn compare_counts(
    report: &mut VerifyReport,
    kept: &[job_count::Model],
    rows: &[queued_job::Model],
) {
    use std::collections::BTreeMap;
    let mut counted: BTreeMap<(&str, &str, &str), i64> = BTreeMap::new();
    for r in rows {
        *counted
            .entry((r.queue.as_str(), r.owner.as_str(), r.status.as_str()))
            .or_default() += 1;
    }
    let mut keys: BTreeMap<(&str, &str, &str), (i64, i64)> =
        counted.iter().map(|(k, n)| (*k, (0, *n))).collect();
    for c in kept {
        keys.entry((c.queue.as_str(), c.owner.as_str(), c.status.as_str()))
            .or_default()
            .0 = c.jobs;
    }
    for ((queue, owner, status), (kept, counted)) in keys {
        if kept != counted {
            report.differences.push(Difference {
                job_id: format!("job_counts {queue} {owner} {status}"),
                fields: vec![format!("jobs: job_counts {kept}, job rows {counted}")],
            });
        }
    }
}

/// Every workflow and step row as JSON, by key (`workflow <id>`, `workflow <id> step <step>`).
async fn workflow_rows<C: ConnectionTrait>(
    db: &C,
) -> Result<std::collections::BTreeMap<String, Value>, DbErr> {
    let mut out = std::collections::BTreeMap::new();
    for w in workflow::Entity::find().all(db).await? {
        out.insert(
            format!("workflow {}", w.id),
            serde_json::to_value(&w).unwrap_or_default(),
        );
    }
    for s in workflow_step::Entity::find().all(db).await? {
        out.insert(
            format!("workflow {} step {}", s.workflow_id, s.step_id),
            serde_json::to_value(&s).unwrap_or_default(),
        );
    }
    Ok(out)
}

/// Adds a difference for each workflow or step row that is not the same in both.
fn compare_workflows(
    report: &mut VerifyReport,
    projected: &std::collections::BTreeMap<String, Value>,
    folded: &std::collections::BTreeMap<String, Value>,
) {
    for (key, row) in projected {
        let fields = match folded.get(key) {
            Some(f) => differing_values(row, f),
            None => vec!["not in a fresh fold of the stream".into()],
        };
        if !fields.is_empty() {
            report.differences.push(Difference {
                job_id: key.clone(),
                fields,
            });
        }
    }
    for key in folded.keys().filter(|k| !projected.contains_key(*k)) {
        report.differences.push(Difference {
            job_id: key.clone(),
            fields: vec!["missing from the projection".into()],
        });
    }
}

/// Columns whose values differ, by name.
fn differing_fields(a: &queued_job::Model, b: &queued_job::Model) -> Vec<String> {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(a), Ok(b)) => differing_values(&a, &b),
        _ => vec!["row".into()],
    }
}

/// Fields of two JSON rows whose values differ, by name.
fn differing_values(a: &Value, b: &Value) -> Vec<String> {
    let (Value::Object(a), Value::Object(b)) = (a, b) else {
        return vec!["row".into()];
    };
    let mut out: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k}: projection {} ≠ stream {}",
                v,
                b.get(k).cloned().unwrap_or(Value::Null)
            )
        })
        .collect();
    out.sort();
    out
}
