//! Every job list query finds its page through an index, in id order: no full scan and
//! no sort, so a page costs the same on a 1M-row projection as on an empty one (issue 9,
//! cost that grows). Checked on the query plans of both databases, not by timing.

use jobstream_api::auth::Caller;
use jobstream_api::http::PageRequest;
use jobstream_api::jobs::{JobFilter, JobService};
use jobstream_core::JobStatus;
use jobstream_testkit::{Backend, TestDb};
use sea_orm::{ConnectionTrait, DbBackend, QueryTrait, Statement, TransactionTrait};

use crate::helpers::db_test;

/// Every filter the list takes, alone, for an admin (all jobs) and for a user (own jobs),
/// on the first page and on a later one.
fn queries() -> Vec<(String, Caller, JobFilter, PageRequest)> {
    let filters = [
        ("no filter", JobFilter::default()),
        (
            "status",
            JobFilter {
                status: Some(JobStatus::Failed),
                ..Default::default()
            },
        ),
        (
            "kind",
            JobFilter {
                kind: Some("echo".into()),
                ..Default::default()
            },
        ),
        (
            "queue",
            JobFilter {
                queue: Some("default".into()),
                ..Default::default()
            },
        ),
    ];
    let cursor = uuid::Uuid::now_v7().to_string();
    let pages = [
        ("first page", PageRequest::parse(None, None, None).unwrap()),
        (
            "next page",
            PageRequest::parse(None, Some(cursor.as_str()), None).unwrap(),
        ),
        (
            "previous page",
            PageRequest::parse(None, None, Some(cursor.as_str())).unwrap(),
        ),
    ];
    let mut out = Vec::new();
    for is_admin in [true, false] {
        for (fname, filter) in &filters {
            for (pname, page) in &pages {
                let caller = Caller {
                    sub: "alice".into(),
                    is_admin,
                    name: None,
                    email: None,
                };
                let who = if is_admin { "admin" } else { "user" };
                out.push((
                    format!("{who}, {fname}, {pname}"),
                    caller,
                    filter.clone(),
                    page.clone(),
                ));
            }
        }
    }
    out
}

/// The plan of `stmt` as text, one line per step.
async fn plan_of(db: &TestDb, stmt: Statement) -> String {
    let backend = db.conn.get_database_backend();
    let explain = |sql: String| {
        Statement::from_sql_and_values(
            backend,
            sql,
            stmt.values.clone().map_or_else(Vec::new, |v| v.0),
        )
    };
    match backend {
        DbBackend::Sqlite => {
            let rows = db
                .conn
                .query_all_raw(explain(format!("EXPLAIN QUERY PLAN {}", stmt.sql)))
                .await
                .expect("explain");
            rows.iter()
                .map(|r| r.try_get::<String>("", "detail").expect("detail"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        _ => {
            // The planner picks a sequential scan or a sort on a small table whatever the
            // indexes: forbid them, so the plan shows whether an index can serve the query.
            let txn = db.conn.begin().await.expect("begin");
            for off in ["enable_seqscan", "enable_bitmapscan", "enable_sort"] {
                txn.execute_unprepared(&format!("SET LOCAL {off} = off"))
                    .await
                    .expect("set");
            }
            let rows = txn
                .query_all_raw(explain(format!("EXPLAIN {}", stmt.sql)))
                .await
                .expect("explain");
            txn.rollback().await.expect("rollback");
            rows.iter()
                .map(|r| r.try_get::<String>("", "QUERY PLAN").expect("plan line"))
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}

/// Whether a plan reads a page by index, in order: no full scan, no sort, and every
/// column filtered on (`columns`) part of the index search, not checked row by row.
fn problems(backend: DbBackend, plan: &str, columns: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let sqlite = backend == DbBackend::Sqlite;
    let (sort, scan) = if sqlite {
        let scan = plan
            .lines()
            .any(|l| l.starts_with("SCAN") && !l.contains("USING"));
        (plan.contains("TEMP B-TREE"), scan)
    } else {
        (plan.contains("Sort"), plan.contains("Seq Scan"))
    };
    let searched = |c: &str| {
        if sqlite {
            // `SEARCH queued_jobs USING INDEX … (owner=? AND status=? AND id<?)`
            let needle = format!("{c}=?");
            plan.lines()
                .any(|l| l.starts_with("SEARCH") && l.contains(&needle))
        } else {
            // `Index Cond: (((owner)::text = 'alice'::text) AND …)`
            let needle = format!("({c})::text =");
            plan.lines()
                .any(|l| l.contains("Index Cond") && l.contains(&needle))
        }
    };
    if sort {
        out.push("sorts".to_owned());
    }
    if scan {
        out.push("scans the table".to_owned());
    }
    if sqlite {
        // SQLite without statistics (a fresh projection) rates the indexes that fit a
        // query about the same and picks one from run to run (for a cursor page even the
        // primary key, searched by the cursor): the check is that it searches an index
        // in order, never scans or sorts. PostgreSQL must search every filtered column.
        if !columns.is_empty() && !plan.lines().any(|l| l.starts_with("SEARCH")) {
            out.push(format!("none of {columns:?} is searched by index"));
        }
    } else {
        for c in columns {
            if !searched(c) {
                out.push(format!("{c} is not searched by index"));
            }
        }
    }
    out
}

async fn every_list_query_uses_an_index(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let sql_backend = db.conn.get_database_backend();
    let mut bad = Vec::new();
    for (what, caller, filter, page) in queries() {
        let stmt = JobService::list_query(&caller, &filter, &page).build(sql_backend);
        let plan = plan_of(&db, stmt).await;
        let columns: Vec<&str> = [
            (!caller.is_admin, "owner"),
            (filter.status.is_some(), "status"),
            (filter.kind.is_some(), "kind"),
            (filter.queue.is_some(), "queue"),
        ]
        .into_iter()
        .filter_map(|(on, c)| on.then_some(c))
        .collect();
        let found = problems(sql_backend, &plan, &columns);
        if !found.is_empty() {
            bad.push(format!("{what}: {found:?}\n{plan}"));
        }
    }
    assert!(
        bad.is_empty(),
        "list queries without a fitting index:\n\n{}",
        bad.join("\n\n")
    );
}
db_test!(every_list_query_uses_an_index);

/// The queries the partial indexes serve (`m20261203_000101_partial_job_indexes`), in the
/// shapes the code builds them: the console's finished-per-bucket counts (admin and user,
/// `jobs::stats`), the TTL sweep's selection (`projector::apply::sweep_finished`) and the
/// idempotency lookup of a `queued` event (`projector::apply`). Each compares the column
/// the indexes leave out when NULL, so the planner may use them: it must use one (on an
/// empty table PostgreSQL may take either `finished_at` index for an admin's query).
async fn the_partial_indexes_serve_their_queries(backend: Backend) {
    use jobstream_entity::queued_job::{Column as C, Entity as Jobs};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let sql_backend = db.conn.get_database_backend();
    let now = chrono::Utc::now();
    let finished = [JobStatus::Succeeded.as_str(), JobStatus::Failed.as_str()];
    const FINISHED: &[&str] = &[
        "idx_queued_jobs_status_finished_at",
        "idx_queued_jobs_owner_status_finished_at",
    ];
    let bucket = || {
        Jobs::find()
            .select_only()
            .column(C::Status)
            .filter(C::Status.is_in(finished))
            .filter(C::FinishedAt.gte(now - chrono::Duration::minutes(5)))
            .filter(C::FinishedAt.lt(now))
            .group_by(C::Status)
    };
    let cases = [
        ("admin's finished jobs per bucket", bucket(), FINISHED),
        (
            "a user's finished jobs per bucket",
            bucket().filter(C::Owner.eq("alice")),
            &FINISHED[1..],
        ),
        (
            "the sweep's expired jobs",
            Jobs::find()
                .select_only()
                .column(C::Id)
                .filter(C::Status.is_in(finished))
                .filter(C::FinishedAt.lt(now))
                .limit(5000),
            FINISHED,
        ),
        (
            "the job holding an idempotency key",
            Jobs::find()
                .filter(C::Owner.eq("alice"))
                .filter(C::IdempotencyKey.eq("order-7")),
            &["uq_queued_jobs_owner_idempotency_key"],
        ),
    ];
    let mut bad = Vec::new();
    for (what, select, indexes) in cases {
        let plan = plan_of(&db, select.build(sql_backend)).await;
        if !indexes.iter().any(|i| plan.contains(i)) {
            bad.push(format!("{what}: by none of {indexes:?}\n{plan}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n\n"));
}
db_test!(the_partial_indexes_serve_their_queries);
