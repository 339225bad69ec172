//! Reading jobs: one job, a page of jobs, a job's history, and waiting for a job.

use std::time::Duration;

use jobstream_core::event::{Envelope, Event};
use jobstream_core::{JobState, JobStatus, fold, stream_read};
use jobstream_entity::queued_job;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::{JobService, JobsError};
use crate::auth::Caller;
use crate::http::PageRequest;

/// Longest `wait` (the API's request timeout is 60 s).
pub const MAX_WAIT: Duration = Duration::from_secs(55);
/// `wait` without a timeout.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Filters of a job list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs of this queue.
    pub queue: Option<String>,
}

impl JobFilter {
    /// The filter from its text form; an unknown status is invalid input naming `status`.
    pub fn parse(
        status: Option<&str>,
        kind: Option<String>,
        queue: Option<String>,
    ) -> Result<Self, JobsError> {
        let status = status
            .map(|s| {
                JobStatus::parse(s).ok_or_else(|| {
                    let all: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
                    JobsError::field("status", format!("must be one of {}", all.join(", ")))
                })
            })
            .transpose()?;
        Ok(JobFilter {
            status,
            kind,
            queue,
        })
    }
}

/// One event of a job as stored: its stream sequence and envelope.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Stream sequence.
    pub seq: u64,
    /// The event.
    pub envelope: Envelope,
}

/// A wait's timeout from its text form (`500ms`, `30s`, `1m`; a bare number is seconds):
/// [`DEFAULT_WAIT`] when absent; up to a minute is accepted and capped at [`MAX_WAIT`].
pub fn wait_timeout(s: Option<&str>) -> Result<Duration, JobsError> {
    let Some(s) = s.map(str::trim) else {
        return Ok(DEFAULT_WAIT);
    };
    let bad = || {
        JobsError::field(
            "timeout",
            format!(
                "must be a duration like 500ms, 30s or 1m, at most 1m (waits end at {}s)",
                MAX_WAIT.as_secs()
            ),
        )
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(bad()),
    };
    // Up to a minute (`1m`, as the docs offer) is answered at MAX_WAIT with the job's
    // current state, as any timeout is; a longer ask is a mistake worth naming.
    if d > Duration::from_secs(60) {
        return Err(bad());
    }
    Ok(d.min(MAX_WAIT))
}

impl JobService {
    /// One job the caller may see. Right after its submission it is folded from the
    /// stream if the projection has not caught up (never a 404 after a 202).
    pub async fn get(&self, caller: &Caller, id: Uuid) -> Result<JobState, JobsError> {
        self.load(id)
            .await?
            .filter(|job| caller.may_see(&job.spec.owner))
            .ok_or_else(|| JobsError::no_job(id))
    }

    /// A job from the projection, or folded from the stream when the projection lags.
    pub(super) async fn load(&self, id: Uuid) -> Result<Option<JobState>, JobsError> {
        if let Some(job) = self.projected(id).await? {
            return Ok(Some(job));
        }
        let history = self.broker.job_history(id).await?;
        Ok(fold::fold_history(
            history.iter().map(|(seq, env)| (*seq, env)),
        ))
    }

    /// A job's row in the projection.
    async fn projected(&self, id: Uuid) -> Result<Option<JobState>, JobsError> {
        match queued_job::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
        {
            Some(row) => Ok(Some(JobState::try_from(row).map_err(anyhow::Error::from)?)),
            None => Ok(None),
        }
    }

    /// A page of the jobs the caller may see (an admin sees all), newest first, and
    /// whether another page follows. Ids are UUIDv7, so the cursor is the id.
    pub async fn list(
        &self,
        caller: &Caller,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> Result<(Vec<JobState>, bool), JobsError> {
        let rows = Self::list_query(caller, filter, page).all(&self.db).await?;
        let (rows, more) = page.trim(rows);
        let jobs = rows
            .into_iter()
            .map(JobState::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::from)?;
        Ok((jobs, more))
    }

    /// The query of [`list`](Self::list): every filter, with or without the owner, has an
    /// index ending in `id` (the order and the cursor), so a page reads its rows only.
    pub fn list_query(
        caller: &Caller,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> sea_orm::Select<queued_job::Entity> {
        let mut select = queued_job::Entity::find();
        if !caller.is_admin {
            select = select.filter(queued_job::Column::Owner.eq(caller.sub.as_str()));
        }
        if let Some(status) = filter.status {
            select = select.filter(queued_job::Column::Status.eq(status.as_str()));
        }
        if let Some(k) = &filter.kind {
            select = select.filter(queued_job::Column::Kind.eq(k.as_str()));
        }
        if let Some(queue) = &filter.queue {
            select = select.filter(queued_job::Column::Queue.eq(queue.as_str()));
        }
        if let Some(after) = &page.after {
            select = select.filter(queued_job::Column::Id.lt(after.as_str()));
        }
        if let Some(before) = &page.before {
            select = select.filter(queued_job::Column::Id.gt(before.as_str()));
        }
        let order = if page.backwards() {
            sea_orm::Order::Asc
        } else {
            sea_orm::Order::Desc
        };
        select
            .order_by(queued_job::Column::Id, order)
            .limit(page.fetch())
    }

    /// A job's full event history, read from the stream, in stream order.
    pub async fn history(&self, caller: &Caller, id: Uuid) -> Result<Vec<StoredEvent>, JobsError> {
        let events = stream_read::job_events(&self.broker, id).await?;
        let owner = match events.iter().find_map(|(_, e)| match &e.event {
            Event::Queued(spec) => Some(spec.owner.clone()),
            _ => None,
        }) {
            Some(o) => Some(o),
            // Its `queued` event has expired from the stream: the projection knows the owner.
            None => self.projected(id).await?.map(|j| j.spec.owner),
        };
        match owner {
            Some(o) if caller.may_see(&o) && !events.is_empty() => Ok(events
                .into_iter()
                .map(|(msg, envelope)| StoredEvent {
                    seq: msg.seq,
                    envelope,
                })
                .collect()),
            _ => Err(JobsError::no_job(id)),
        }
    }

    /// The job's state folded from the stream (the source of truth, complete up to now);
    /// the projection when its events have expired from the stream.
    async fn current(&self, id: Uuid) -> Result<Option<JobState>, JobsError> {
        let events = stream_read::job_events(&self.broker, id).await?;
        match fold::fold_history(events.iter().map(|(m, e)| (m.seq, e))) {
            Some(s) => Ok(Some(s)),
            None => self.projected(id).await,
        }
    }

    /// Waits until the job is finished, `timeout` passes or the API shuts down, and
    /// returns its state then.
    pub async fn wait(
        &self,
        caller: &Caller,
        id: Uuid,
        timeout: Duration,
    ) -> Result<JobState, JobsError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribe before reading the state: a completion stored in between is not missed.
        let mut rx = self.live.subscribe();
        let closing = self.live.closing();
        let mut job = self
            .current(id)
            .await?
            .filter(|j| caller.may_see(&j.spec.owner))
            .ok_or_else(|| JobsError::no_job(id))?;
        while !job.status.is_terminal() {
            let refresh = tokio::select! {
                () = closing.cancelled() => break,
                () = tokio::time::sleep_until(deadline) => break,
                r = rx.recv() => match r {
                    Ok(ev) => ev.job_id == id && ev.seq > job.last_seq,
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => break,
                },
            };
            if refresh && let Some(j) = self.current(id).await? {
                job = j;
            }
        }
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_and_are_bounded() {
        assert_eq!(wait_timeout(None).unwrap(), DEFAULT_WAIT);
        assert_eq!(
            wait_timeout(Some("500ms")).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(wait_timeout(Some("2")).unwrap(), Duration::from_secs(2));
        assert_eq!(wait_timeout(Some("1m")).unwrap(), MAX_WAIT);
        assert!(wait_timeout(Some("10m")).is_err());
        assert!(wait_timeout(Some("soon")).is_err());
    }
}
