//! Reading jobs: one job, a page of jobs, a job's history, and waiting for a job.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobstream_core::catalogue::FieldError;
use jobstream_core::event::{Envelope, Event};
use jobstream_core::{JobState, JobStatus, fold, stream_read};
use jobstream_entity::queued_job;
use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;
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
    /// Only jobs of this owner (an admin's filter; a user only ever sees their own).
    pub owner: Option<String>,
    /// Only jobs whose id starts with this (lowercase hex and dashes).
    pub id_prefix: Option<String>,
    /// Only jobs whose payload, result or error contains this text (case-insensitive).
    pub text: Option<String>,
    /// Only jobs created at or after this.
    pub created_after: Option<DateTime<Utc>>,
    /// Only jobs created before this.
    pub created_before: Option<DateTime<Utc>>,
}

/// A job list's filters as text, from a query string (REST and console alike).
#[derive(Debug, Clone, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilterParams {
    /// Only jobs in this status.
    pub status: Option<String>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs of this queue.
    pub queue: Option<String>,
    /// Only jobs of this owner (admins; a user's list is always their own).
    pub owner: Option<String>,
    /// Only jobs whose id starts with this (hex digits and dashes).
    pub id_prefix: Option<String>,
    /// Only jobs whose payload, result or error contains this text (case-insensitive; it
    /// scans, so narrow it with other filters on large tables).
    pub q: Option<String>,
    /// Only jobs created at or after this time (RFC 3339, or `YYYY-MM-DDTHH:MM` in UTC).
    pub created_after: Option<String>,
    /// Only jobs created before this time (RFC 3339, or `YYYY-MM-DDTHH:MM` in UTC).
    pub created_before: Option<String>,
}

/// Longest text match and id prefix accepted.
pub const MAX_FILTER_TEXT: usize = 200;

impl FilterParams {
    /// The filters that are set, as `(name, value)` pairs (for links that keep them).
    pub fn pairs(&self) -> [(&'static str, &Option<String>); 8] {
        [
            ("status", &self.status),
            ("kind", &self.kind),
            ("queue", &self.queue),
            ("owner", &self.owner),
            ("id_prefix", &self.id_prefix),
            ("q", &self.q),
            ("created_after", &self.created_after),
            ("created_before", &self.created_before),
        ]
    }

    /// The same filters with empty fields (as an HTML form sends them) dropped.
    pub fn non_empty(mut self) -> Self {
        for f in [
            &mut self.status,
            &mut self.kind,
            &mut self.queue,
            &mut self.owner,
            &mut self.id_prefix,
            &mut self.q,
            &mut self.created_after,
            &mut self.created_before,
        ] {
            if f.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *f = None;
            }
        }
        self
    }
}

impl JobFilter {
    /// The filter from its text form; every bad field is invalid input naming it.
    pub fn parse(p: &FilterParams) -> Result<Self, JobsError> {
        let mut errors = Vec::new();
        let status = p.status.as_deref().and_then(|s| {
            let parsed = JobStatus::parse(s);
            if parsed.is_none() {
                let all: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
                errors.push(FieldError::new(
                    "status",
                    format!("must be one of {}", all.join(", ")),
                ));
            }
            parsed
        });
        let id_prefix = p.id_prefix.as_deref().map(str::to_ascii_lowercase);
        if id_prefix
            .as_deref()
            .is_some_and(|s| s.len() > 36 || !s.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
        {
            errors.push(FieldError::new(
                "id_prefix",
                "must be the start of a job id (hex digits and dashes)",
            ));
        }
        if p.q.as_deref().is_some_and(|q| q.len() > MAX_FILTER_TEXT) {
            errors.push(FieldError::new(
                "q",
                format!("at most {MAX_FILTER_TEXT} bytes"),
            ));
        }
        let mut time = |field: &str, v: &Option<String>| {
            let t = v.as_deref().map(parse_time).transpose();
            t.unwrap_or_else(|()| {
                errors.push(FieldError::new(
                    field,
                    "must be an RFC 3339 time or YYYY-MM-DDTHH:MM (UTC)",
                ));
                None
            })
        };
        let created_after = time("created_after", &p.created_after);
        let created_before = time("created_before", &p.created_before);
        if !errors.is_empty() {
            return Err(JobsError::Invalid(errors));
        }
        Ok(JobFilter {
            status,
            kind: p.kind.clone(),
            queue: p.queue.clone(),
            owner: p.owner.clone(),
            id_prefix,
            text: p.q.clone(),
            created_after,
            created_before,
        })
    }

    /// The query selecting the jobs `caller` may see that match this filter.
    pub(super) fn select(&self, caller: &Caller) -> sea_orm::Select<queued_job::Entity> {
        use queued_job::Column as C;
        let mut select = queued_job::Entity::find();
        if !caller.is_admin {
            select = select.filter(C::Owner.eq(caller.sub.as_str()));
        } else if let Some(owner) = &self.owner {
            select = select.filter(C::Owner.eq(owner.as_str()));
        }
        if let Some(status) = self.status {
            select = select.filter(C::Status.eq(status.as_str()));
        }
        if let Some(k) = &self.kind {
            select = select.filter(C::Kind.eq(k.as_str()));
        }
        if let Some(queue) = &self.queue {
            select = select.filter(C::Queue.eq(queue.as_str()));
        }
        if let Some(prefix) = &self.id_prefix {
            // A range, not LIKE: it uses the primary key index on every backend. `g` sorts
            // after every character of an id.
            select = select
                .filter(C::Id.gte(prefix.as_str()))
                .filter(C::Id.lt(format!("{prefix}g")));
        }
        if let Some(after) = self.created_after {
            select = select.filter(C::CreatedAt.gte(after));
        }
        if let Some(before) = self.created_before {
            select = select.filter(C::CreatedAt.lt(before));
        }
        if let Some(text) = &self.text {
            let escaped = text
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            let pattern = format!("%{escaped}%");
            let contains = |c: C| {
                Expr::expr(Func::lower(Expr::col(c).cast_as("TEXT")))
                    .like(LikeExpr::new(pattern.clone()).escape('\\'))
            };
            select = select.filter(
                Condition::any()
                    .add(contains(C::Payload))
                    .add(contains(C::Result))
                    .add(contains(C::Error)),
            );
        }
        select
    }
}

/// A time from a filter: RFC 3339, or an HTML `datetime-local` value read as UTC.
fn parse_time(s: &str) -> Result<DateTime<Utc>, ()> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc())
        .ok_or(())
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
        let history = self.state.broker.job_history(id).await?;
        let mut job = fold::fold_history(history.iter().map(|(seq, env)| (*seq, env)));
        if let Some(job) = &mut job {
            // The fold has the events, not their headers: the trace is on the first one.
            job.trace_id = Some(
                self.state
                    .broker
                    .job_trace(id)
                    .await?
                    .trace_id()
                    .to_string(),
            );
        }
        Ok(job)
    }

    /// A job's row in the projection.
    async fn projected(&self, id: Uuid) -> Result<Option<JobState>, JobsError> {
        match queued_job::Entity::find_by_id(id.to_string())
            .one(&self.state.db)
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
        let rows = Self::list_query(caller, filter, page)
            .all(&self.state.db)
            .await?;
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
        let mut select = filter.select(caller);
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
        let events = stream_read::job_events(&self.state.broker, id).await?;
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
        let events = stream_read::job_events(&self.state.broker, id).await?;
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
        let mut rx = self.state.live.subscribe().await?;
        let closing = self.state.live.closing();
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
