//! Actions over many jobs: the ones selected in the console, or all that match a filter.
//!
//! Each job goes through the same [`JobService::retry`] / [`JobService::cancel`] as a single
//! request, so a bulk action decides from each job's own events; it only saves the
//! caller a round trip per job. At most [`MAX_BULK`] jobs per action.

use futures::StreamExt;
use jobstream_entity::queued_job;
use sea_orm::{QueryOrder, QuerySelect};
use uuid::Uuid;

use super::{CancelJob, JobFilter, JobService, JobsError};
use crate::auth::Caller;

/// Most jobs one bulk action touches (and most a "matching" count counts).
pub const MAX_BULK: u64 = 10_000;
/// Jobs acted on at once.
const PARALLEL: usize = 16;

/// What a bulk action does to each job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    /// Run a failed or cancelled job again.
    Retry,
    /// Cancel an unfinished job.
    Cancel,
}

impl BulkAction {
    /// From its form value, `retry` or `cancel`.
    pub fn parse(s: &str) -> Result<Self, JobsError> {
        match s {
            "retry" => Ok(BulkAction::Retry),
            "cancel" => Ok(BulkAction::Cancel),
            _ => Err(JobsError::field("action", "must be retry or cancel")),
        }
    }

    /// Its form value.
    pub fn as_str(self) -> &'static str {
        match self {
            BulkAction::Retry => "retry",
            BulkAction::Cancel => "cancel",
        }
    }
}

/// What a bulk action did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BulkOutcome {
    /// Jobs whose request was stored.
    pub done: usize,
    /// Jobs the action did not apply to (a finished job cannot be cancelled …) or gone.
    pub skipped: usize,
    /// Jobs whose request failed (the stream did not answer); they may be tried again.
    pub failed: usize,
}

impl JobService {
    /// Ids of the jobs the caller may see that match `filter`, newest first, at most `cap`.
    pub async fn matching_ids(
        &self,
        caller: &Caller,
        filter: &JobFilter,
        cap: u64,
    ) -> Result<Vec<Uuid>, JobsError> {
        let ids: Vec<String> = filter
            .select(caller)
            .select_only()
            .column(queued_job::Column::Id)
            .order_by_desc(queued_job::Column::Id)
            .limit(cap)
            .into_tuple()
            .all(&self.state.db)
            .await?;
        Ok(ids.iter().filter_map(|i| Uuid::parse_str(i).ok()).collect())
    }

    /// Applies `action` to each job in `ids` (at most [`MAX_BULK`]) the caller may act on.
    pub async fn bulk(
        &self,
        caller: &Caller,
        ids: &[Uuid],
        action: BulkAction,
        request_id: Option<&str>,
    ) -> Result<BulkOutcome, JobsError> {
        if ids.len() as u64 > MAX_BULK {
            return Err(JobsError::field(
                "ids",
                format!("at most {MAX_BULK} jobs per action"),
            ));
        }
        let results: Vec<Result<(), JobsError>> = futures::stream::iter(ids.iter().copied())
            .map(|id| async move {
                match action {
                    BulkAction::Retry => self.retry(caller, id, request_id).await.map(|_| ()),
                    BulkAction::Cancel => self
                        .cancel(caller, id, CancelJob::default(), request_id)
                        .await
                        .map(|_| ()),
                }
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let mut outcome = BulkOutcome::default();
        for r in results {
            match r {
                Ok(()) => outcome.done += 1,
                Err(JobsError::Conflict(_) | JobsError::NotFound(_)) => outcome.skipped += 1,
                Err(e) => {
                    tracing::warn!(error = %e, action = action.as_str(), "bulk action: one job failed");
                    outcome.failed += 1;
                }
            }
        }
        tracing::info!(
            action = action.as_str(),
            done = outcome.done,
            skipped = outcome.skipped,
            failed = outcome.failed,
            "bulk action"
        );
        Ok(outcome)
    }
}
