//! `--list-rows N`: the job list on a large projection. Seeds N finished job rows straight
//! into SQL (multi-row INSERTs, many per transaction: through the pipeline a million jobs
//! take an hour, and only the rows matter here) for a user of their own, then times each
//! list query through the API, as that user and as an admin. Every query is served by an
//! index (the `list_plans` test checks the plans), so its time should not grow with N.

use std::time::{Duration, Instant};

use chrono::Utc;
use sea_orm::sea_query::{Alias, Expr, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};
use uuid::Uuid;

use super::load::Api;
use super::report::Percentiles;

/// Rows per INSERT statement (under SQLite's 32,766 bound parameters at up to 16 columns).
const ROWS_PER_INSERT: usize = 1000;
/// INSERT statements per transaction.
const INSERTS_PER_TXN: usize = 20;
/// Requests per query, one at a time.
const REQUESTS: usize = 200;

/// The list queries on the seeded projection.
#[derive(Debug, Clone, PartialEq)]
pub struct ListFigures {
    /// Rows seeded.
    pub rows: usize,
    /// How long seeding took.
    pub seeded_in: Duration,
    /// Each query (its path) with its latency, ms.
    pub queries: Vec<(String, Option<Percentiles>)>,
}

/// Status, kind and queue of seeded row `i`: mostly succeeded echo jobs of the default
/// queue, with a few failed, e-mail and critical ones, so every filter has rows to find.
fn shape(i: usize) -> (&'static str, &'static str, &'static str) {
    let status = if i.is_multiple_of(50) {
        "failed"
    } else {
        "succeeded"
    };
    let kind = if i.is_multiple_of(20) {
        "email"
    } else {
        "echo"
    };
    let queue = if i.is_multiple_of(10) {
        "critical"
    } else {
        "default"
    };
    (status, kind, queue)
}

/// Seeds `rows` finished jobs of `owner`; returns the id of the middle one (a cursor).
async fn seed(db: &DatabaseConnection, owner: &str, rows: usize) -> anyhow::Result<String> {
    let columns = [
        "id",
        "queue",
        "kind",
        "owner",
        "status",
        "priority",
        "payload",
        "attempt",
        "max_attempts",
        "timeout_ms",
        "created_at",
        "updated_at",
        "last_seq",
    ];
    let now = Utc::now();
    let payload = serde_json::json!({});
    insert_job_rows(db, rows, &columns, |i, id| {
        let (status, kind, queue) = shape(i);
        vec![
            Expr::val(id),
            Expr::val(queue),
            Expr::val(kind),
            Expr::val(owner),
            Expr::val(status),
            Expr::val("normal"),
            Expr::val(payload.clone()),
            Expr::val(1),
            Expr::val(3),
            Expr::val(30_000i64),
            Expr::val(now),
            Expr::val(now),
            Expr::val(0i64),
        ]
    })
    .await
}

/// Inserts `rows` rows into `queued_jobs`, `row(i, id)` giving the values of row `i` (in
/// the order of `columns`) for a fresh UUIDv7 `id`: multi-row INSERTs, many per
/// transaction, with progress every tenth, then recounts `job_counts`. Returns the id of
/// the middle row.
pub(super) async fn insert_job_rows(
    db: &DatabaseConnection,
    rows: usize,
    columns: &[&str],
    mut row: impl FnMut(usize, String) -> Vec<Expr>,
) -> anyhow::Result<String> {
    let mut middle = String::new();
    let mut i = 0;
    while i < rows {
        let txn = db.begin().await?;
        for _ in 0..INSERTS_PER_TXN {
            if i >= rows {
                break;
            }
            let mut insert = Query::insert();
            insert
                .into_table(Alias::new("queued_jobs"))
                .columns(columns.iter().map(|c| Alias::new(*c)));
            for _ in 0..ROWS_PER_INSERT.min(rows - i) {
                let id = Uuid::now_v7().to_string();
                if i == rows / 2 {
                    middle.clone_from(&id);
                }
                insert.values_panic(row(i, id));
                i += 1;
            }
            txn.execute(&insert).await?;
        }
        txn.commit().await?;
        if rows >= 100_000 && (i % (rows / 10).max(1)) < ROWS_PER_INSERT * INSERTS_PER_TXN {
            eprintln!("seeded {i}/{rows} rows");
        }
    }
    // Rows written beside the projector: recount what it keeps with its own rows.
    jobstream_projector::counts::rebuild(db).await?;
    Ok(middle)
}

/// Seeds `rows` rows for `owner` and times every list query as `user` (that owner) and
/// as `admin`.
pub(crate) async fn measure(
    db: &DatabaseConnection,
    (user, admin): (&Api, &Api),
    owner: &str,
    rows: usize,
) -> anyhow::Result<ListFigures> {
    eprintln!("list queries: seeding {rows} rows");
    let started = Instant::now();
    let cursor = seed(db, owner, rows).await?;
    let seeded_in = started.elapsed();
    let filters = [
        String::new(),
        "status=failed".to_owned(),
        "kind=email".to_owned(),
        "queue=critical".to_owned(),
        "status=succeeded&kind=echo".to_owned(),
        format!("after={cursor}"),
        format!("status=failed&after={cursor}"),
    ];
    let mut queries = Vec::new();
    for (who, api) in [("user", user), ("admin", admin)] {
        for f in &filters {
            let path = match f.as_str() {
                "" => "/v1/jobs?limit=50".to_owned(),
                f => format!("/v1/jobs?limit=50&{f}"),
            };
            let auth = ("authorization", api.auth.as_str());
            let took = time_gets(&api.http, &api.base, &path, auth, REQUESTS).await?;
            let label = path.replace(&cursor, "<middle row>");
            queries.push((format!("{who:<5} {label}"), took));
        }
    }
    Ok(ListFigures {
        rows,
        seeded_in,
        queries,
    })
}

/// `requests` sequential GETs of `base` + `path` with one `header`, each timed until its
/// body is read, in ms; an error status ends the bench.
pub(super) async fn time_gets(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    (name, value): (&str, &str),
    requests: usize,
) -> anyhow::Result<Option<Percentiles>> {
    let mut samples = Vec::with_capacity(requests);
    for _ in 0..requests {
        let at = Instant::now();
        let r = http
            .get(format!("{base}{path}"))
            .header(name, value)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "GET {path}: {}", r.status());
        r.bytes().await?;
        samples.push(at.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Percentiles::of(samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_finds_rows() {
        let shapes: Vec<_> = (0..100).map(shape).collect();
        assert!(shapes.iter().any(|s| s.0 == "failed"));
        assert!(shapes.iter().any(|s| s.1 == "email"));
        assert!(shapes.iter().any(|s| s.2 == "critical"));
        assert!(shapes.iter().filter(|s| s.0 == "succeeded").count() > 90);
    }
}
