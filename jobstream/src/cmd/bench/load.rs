//! Driving the system over HTTP (closed loop, open loop, batches), listening on SSE,
//! and reading the finished jobs back (from SQL when the bench can reach the
//! database, else through the API).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde_json::{Value, json};
use uuid::Uuid;

/// The API as the bench's user sees it.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) auth: String,
}

/// How a submission phase went.
#[derive(Debug, Default)]
pub(crate) struct Submitted {
    /// Jobs accepted (`202`).
    pub(crate) ok: usize,
    /// Requests that failed.
    pub(crate) errors: usize,
    /// Jobs refused with `429` (admission control shedding an overload): not errors.
    pub(crate) shed: usize,
    /// The first failure, to show.
    pub(crate) first_error: Option<String>,
    /// From the first request to the last answer.
    pub(crate) elapsed: Duration,
    /// Open loop: each job's scheduled send time.
    pub(crate) scheduled: HashMap<Uuid, Instant>,
}

impl Api {
    /// `POST /v1/jobs` of echo job `i`; its id on `202`, `None` when shed (`429`).
    pub(crate) async fn submit(&self, i: usize) -> anyhow::Result<Option<Uuid>> {
        let r = self
            .http
            .post(format!("{}/v1/jobs", self.base))
            .header("Authorization", &self.auth)
            .json(&json!({ "kind": "echo", "payload": { "i": i } }))
            .send()
            .await?;
        let status = r.status();
        if status.as_u16() == 429 {
            return Ok(None);
        }
        anyhow::ensure!(status.as_u16() == 202, "{status}: {}", r.text().await?);
        let body: Value = r.json().await?;
        body["id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .context("202 without a job id")
            .map(Some)
    }

    /// `POST /v1/jobs/batch` of echo jobs `from..from + n`; their ids on `202`, `None`
    /// when shed (`429`).
    async fn submit_batch(&self, from: usize, n: usize) -> anyhow::Result<Option<Vec<Uuid>>> {
        let jobs: Vec<Value> = (from..from + n)
            .map(|i| json!({ "kind": "echo", "payload": { "i": i } }))
            .collect();
        let r = self
            .http
            .post(format!("{}/v1/jobs/batch", self.base))
            .header("Authorization", &self.auth)
            .json(&json!({ "jobs": jobs }))
            .send()
            .await?;
        let status = r.status();
        if status.as_u16() == 429 {
            return Ok(None);
        }
        anyhow::ensure!(status.as_u16() == 202, "{status}: {}", r.text().await?);
        let body: Value = r.json().await?;
        Ok(Some(
            body["ids"]
                .as_array()
                .context("202 without ids")?
                .iter()
                .filter_map(|v| v.as_str().and_then(|s| Uuid::parse_str(s).ok()))
                .collect(),
        ))
    }
}

/// Prints "what n/total" on stderr at every tenth.
struct Progress {
    what: &'static str,
    total: usize,
    step: usize,
    next: usize,
}

impl Progress {
    fn new(what: &'static str, total: usize) -> Self {
        let step = (total / 10).max(1);
        Progress {
            what,
            total,
            step,
            next: step,
        }
    }

    fn at(&mut self, n: usize) {
        while n >= self.next && self.next <= self.total {
            eprintln!("{} {n}/{}", self.what, self.total);
            self.next += self.step;
        }
    }
}

/// Counts one request's answer: `Some(n)` jobs accepted, or `None` shed.
fn record(s: &mut Submitted, r: anyhow::Result<Option<usize>>) {
    match r {
        Ok(Some(n)) => s.ok += n,
        Ok(None) => s.shed += 1,
        Err(e) => {
            s.errors += 1;
            s.first_error.get_or_insert_with(|| format!("{e:#}"));
        }
    }
}

/// Closed loop: `concurrency` requests in flight, one job each.
pub(crate) async fn closed(api: &Api, jobs: usize, concurrency: usize) -> Submitted {
    let started = Instant::now();
    let mut out = Submitted::default();
    let mut progress = Progress::new("submitted", jobs);
    let mut results = futures::stream::iter(0..jobs)
        .map(|i| async move { api.submit(i).await.map(|id| id.map(|_| 1)) })
        .buffer_unordered(concurrency.max(1));
    while let Some(r) = results.next().await {
        record(&mut out, r);
        progress.at(out.ok + out.errors + out.shed);
    }
    out.elapsed = started.elapsed();
    out
}

/// Batches of `batch` jobs, `concurrency` requests in flight.
pub(crate) async fn batches(api: &Api, jobs: usize, batch: usize, concurrency: usize) -> Submitted {
    let started = Instant::now();
    let mut out = Submitted::default();
    let mut progress = Progress::new("submitted", jobs);
    let batch = batch.max(1);
    let mut results = futures::stream::iter((0..jobs).step_by(batch))
        .map(|from| async move {
            let n = batch.min(jobs - from);
            api.submit_batch(from, n)
                .await
                .map(|ids| ids.map(|ids| ids.len()))
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(r) = results.next().await {
        record(&mut out, r);
        progress.at(out.ok);
    }
    out.elapsed = started.elapsed();
    out
}

/// Open loop: one job every `1/rate` s on schedule, however long answers take.
pub(crate) async fn open(api: &Api, jobs: usize, rate: u32) -> Submitted {
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut out = Submitted::default();
    let mut progress = Progress::new("submitted", jobs);
    for i in 0..jobs {
        let at = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(at.into()).await;
        let api = api.clone();
        tasks.spawn(async move { (api.submit(i).await, at) });
        // Collect what has finished, so memory stays flat on long runs.
        while let Some(done) = tasks.try_join_next() {
            collect(&mut out, done);
            progress.at(out.ok + out.errors + out.shed);
        }
    }
    while let Some(done) = tasks.join_next().await {
        collect(&mut out, done);
        progress.at(out.ok + out.errors + out.shed);
    }
    out.elapsed = started.elapsed();
    out
}

fn collect(
    out: &mut Submitted,
    done: Result<(anyhow::Result<Option<Uuid>>, Instant), tokio::task::JoinError>,
) {
    match done {
        Ok((Ok(Some(id)), at)) => {
            out.ok += 1;
            out.scheduled.insert(id, at);
        }
        Ok((Ok(None), _)) => out.shed += 1,
        Ok((Err(e), _)) => record(out, Err(e)),
        Err(e) => record(out, Err(e.into())),
    }
}

/// An SSE subscriber to the bench user's `succeeded` events, noting when each arrives.
pub(crate) struct Sse {
    task: tokio::task::JoinHandle<()>,
    seen: Arc<Mutex<HashMap<Uuid, Instant>>>,
    lagged: Arc<std::sync::atomic::AtomicBool>,
}

impl Sse {
    /// Subscribes to `GET /v1/events?type=succeeded` and returns once the stream is open.
    pub(crate) async fn subscribe(api: &Api) -> anyhow::Result<Self> {
        let r = api
            .http
            .get(format!("{}/v1/events?type=succeeded", api.base))
            .header("Authorization", &api.auth)
            .header("Accept", "text/event-stream")
            .send()
            .await?
            .error_for_status()
            .context("GET /v1/events")?;
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let lagged = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, l) = (Arc::clone(&seen), Arc::clone(&lagged));
        let task = tokio::spawn(async move {
            let mut body = r.bytes_stream();
            let mut buf = Vec::<u8>::new();
            let mut event = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                let now = Instant::now();
                buf.extend_from_slice(&chunk);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let line = String::from_utf8_lossy(&line);
                    let line = line.trim_end_matches(['\r', '\n']);
                    if let Some(name) = line.strip_prefix("event:") {
                        event = name.trim().to_owned();
                    } else if let Some(data) = line.strip_prefix("data:") {
                        if event == "lagged" {
                            l.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        if let Ok(v) = serde_json::from_str::<Value>(data.trim())
                            && let Some(id) =
                                v["job_id"].as_str().and_then(|s| Uuid::parse_str(s).ok())
                        {
                            s.lock().expect("lock").entry(id).or_insert(now);
                        }
                    } else if line.is_empty() {
                        event.clear();
                    }
                }
            }
        });
        Ok(Sse { task, seen, lagged })
    }

    /// Jobs seen so far.
    pub(crate) fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    /// Stops listening; the arrival time of each job's `succeeded`, and whether the
    /// server said the connection lagged (then some events are missing).
    pub(crate) fn finish(self) -> (HashMap<Uuid, Instant>, bool) {
        self.task.abort();
        let seen = std::mem::take(&mut *self.seen.lock().expect("lock"));
        (seen, self.lagged.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Where finished jobs are read back from.
pub(crate) enum Rows {
    /// The projection's database, directly (no load on the API while waiting).
    Sql(DatabaseConnection),
    /// `GET /v1/jobs?status=succeeded` (with `--url` and no `--database-url`).
    Api(Api),
}

/// A finished job's projected times.
pub(crate) struct Finished {
    pub(crate) created: DateTime<Utc>,
    pub(crate) finished: DateTime<Utc>,
}

impl Rows {
    fn statement(db: &DatabaseConnection, sql: &str, owner: &str) -> Statement {
        let backend = db.get_database_backend();
        let sql = match backend {
            DbBackend::Postgres => sql.replace('?', "$1"),
            _ => sql.to_owned(),
        };
        Statement::from_sql_and_values(backend, sql, [owner.into()])
    }

    /// How many of `owner`'s jobs are `succeeded` in the projection.
    pub(crate) async fn count_succeeded(&self, owner: &str) -> anyhow::Result<usize> {
        match self {
            Rows::Sql(db) => {
                let row = db
                    .query_one_raw(Self::statement(
                        db,
                        "SELECT COUNT(*) AS n FROM queued_jobs WHERE owner = ? AND status = 'succeeded'",
                        owner,
                    ))
                    .await?
                    .context("COUNT returned no row")?;
                Ok(usize::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0))
            }
            Rows::Api(api) => Ok(list_succeeded(api).await?.len()),
        }
    }

    /// Every `succeeded` job of `owner` with its projected created and finished times.
    pub(crate) async fn succeeded(&self, owner: &str) -> anyhow::Result<Vec<Finished>> {
        match self {
            Rows::Sql(db) => {
                let rows = db
                    .query_all_raw(Self::statement(
                        db,
                        "SELECT created_at, finished_at FROM queued_jobs WHERE owner = ? AND status = 'succeeded'",
                        owner,
                    ))
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok(Finished {
                            created: r.try_get::<DateTime<Utc>>("", "created_at")?,
                            finished: r.try_get::<DateTime<Utc>>("", "finished_at")?,
                        })
                    })
                    .collect()
            }
            Rows::Api(api) => list_succeeded(api)
                .await?
                .iter()
                .map(|j| {
                    Ok(Finished {
                        created: time_of(j, "created_at")?,
                        finished: time_of(j, "finished_at")?,
                    })
                })
                .collect(),
        }
    }
}

async fn list_succeeded(api: &Api) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut next = Some("/v1/jobs?status=succeeded&limit=500".to_owned());
    while let Some(path) = next {
        let page: Value = api
            .http
            .get(format!("{}{path}", api.base))
            .header("Authorization", &api.auth)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        out.extend(page["items"].as_array().cloned().unwrap_or_default());
        next = page["next"].as_str().map(str::to_owned);
    }
    Ok(out)
}

fn time_of(job: &Value, field: &str) -> anyhow::Result<DateTime<Utc>> {
    let s = job[field]
        .as_str()
        .with_context(|| format!("job without {field}"))?;
    Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
}
