//! Issue 15, defects 3 and 7: one bad event never stops the projection (it becomes a dead
//! letter), and a disk that filled up neither wedges the projector nor makes it ack what it
//! never committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jobstream_core::event::{Envelope, Event, JobSpec, Priority};
use jobstream_core::schedule::{self, ScheduleEvent, ScheduleRecord, ScheduleSpec, Timing};
use jobstream_core::subject::QueueName;
use jobstream_entity::queued_job;
use jobstream_projector::replay::{self, Progress, ReplayOptions};
use jobstream_projector::{Connector, Projector};
use jobstream_testkit::Backend;
use reqwest::StatusCode;
use sea_orm::sqlx::{self, Executor};
use sea_orm::{ConnectionTrait, EntityTrait, PaginatorTrait};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{Component, Options, TestApp, WAIT, connect, db_test};

fn spec(owner: &str, payload: Value) -> JobSpec {
    JobSpec {
        kind: "echo".into(),
        queue: QueueName::default_queue(),
        owner: owner.into(),
        payload,
        priority: Priority::Normal,
        max_attempts: 1,
        timeout_ms: 1000,
        run_at: None,
        idempotency_key: None,
        result_ttl_ms: None,
        backoff: None,
    }
}

db_test!(a_poison_event_is_rejected_and_the_fold_moves_on);
async fn a_poison_event_is_rejected_and_the_fold_moves_on(backend: Backend) {
    let app = TestApp::with(backend, Options::without_worker()).await;
    let queue = QueueName::default_queue();
    // Straight to the stream, past the API: a payload with NUL (PostgreSQL's jsonb refuses it).
    let nul = Envelope::new(
        Uuid::now_v7(),
        0,
        Event::Queued(spec("mallory", json!({"text": "a\u{0}b"}))),
    );
    let nul_seq = app
        .broker
        .publish(&nul, &queue, None)
        .await
        .expect("publish");
    // Two schedule records for the same owner and name under different keys: the second
    // breaks the unique (owner, name) index, on SQLite and PostgreSQL alike.
    let schedule_spec = ScheduleSpec {
        name: "nightly".into(),
        owner: "mallory".into(),
        timing: Timing::Every("1h".into()),
        job: spec("mallory", json!({})),
    };
    let mut seqs = Vec::new();
    for key in [
        schedule::schedule_key("mallory", "nightly"),
        "0123456789abcdef0123456789abcdef".to_owned(),
    ] {
        let rec = ScheduleRecord::new(
            key.clone(),
            ScheduleEvent::Created(Box::new(schedule_spec.clone())),
        );
        let ack = app
            .broker
            .jetstream()
            .publish(schedule::subject(&key), rec.to_bytes().into())
            .await
            .expect("publish")
            .await
            .expect("stored");
        seqs.push(ack.sequence);
    }
    let forged_seq = seqs[1];

    // Everything after them still folds.
    let alice = app.token("alice", false);
    let job = app.submit_job(&alice, &json!({"kind": "echo"})).await;
    let id = &job.id.to_string();
    app.wait_for_row(id, "the job behind the poison is projected", |_| true)
        .await;

    let expected = match backend {
        Backend::Postgres => vec![nul_seq, forged_seq],
        // SQLite stores NUL in text; only the forged schedule is refused.
        Backend::Sqlite => vec![forged_seq],
    };
    assert_eq!(app.rejected_seqs(&app.db.conn).await, expected);

    // Operators see them: admins only, paged, problem+json for others.
    let admin = app.token("root", true);
    let (status, page) = app.get(&admin, "/v1/admin/rejected").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let listed: Vec<u64> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(listed, expected);
    assert!(
        page["items"][0]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    let (_, first) = app.get(&admin, "/v1/admin/rejected?limit=1").await;
    assert_eq!(first["items"].as_array().map(Vec::len), Some(1));
    if expected.len() > 1 {
        assert_eq!(first["next_after"].as_u64(), Some(expected[0]));
    } else {
        assert!(first["next_after"].is_null());
    }
    let res = app
        .http
        .get(format!("{}/v1/admin/rejected", app.base))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("GET");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );

    // `verify` reports them, and is otherwise clean.
    let report = replay::verify(
        &app.broker,
        &app.db.conn,
        "projector",
        Duration::from_secs(86400),
    )
    .await
    .expect("verify");
    let reported: Vec<u64> = report.rejected.iter().map(|r| r.seq).collect();
    assert_eq!(reported, expected);
    assert!(report.is_clean(), "{:?}", report.differences);

    // A replay into a fresh database rebuilds the same dead letters, once, even when run again.
    let fresh = app.db.sibling().await;
    for _ in 0..2 {
        replay::replay_into(
            &app.broker,
            &fresh.conn,
            &ReplayOptions::default(),
            &Progress::default(),
            &CancellationToken::new(),
        )
        .await
        .expect("replay into");
    }
    assert_eq!(app.rejected_seqs(&fresh.conn).await, expected);
    // And a replay of the live database (shadow and swap) too.
    replay::replay_live(
        &app.broker,
        &app.db.conn,
        &ReplayOptions {
            fresh: true,
            ..ReplayOptions::default()
        },
        &Progress::default(),
        &CancellationToken::new(),
    )
    .await
    .expect("replay live");
    assert_eq!(app.rejected_seqs(&app.db.conn).await, expected);
}

/// SQLite's largest page count: no limit.
const UNLIMITED: u64 = 1_073_741_823;

/// Pools on the test database whose connections cannot grow it past `limit` pages (SQLite
/// answers SQLITE_FULL, as on a full disk); the limit is applied on every acquire.
fn disk_with_limit(url: &str, limit: Arc<AtomicU64>) -> Connector {
    let url = url.to_owned();
    Arc::new(move || {
        let (url, limit) = (url.clone(), limit.clone());
        Box::pin(async move {
            let opts: sqlx::sqlite::SqliteConnectOptions = url
                .parse::<sqlx::sqlite::SqliteConnectOptions>()
                .expect("sqlite url")
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10));
            let (a, b) = (limit.clone(), limit);
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .after_connect(move |c, _| {
                    let n = a.load(Ordering::SeqCst);
                    Box::pin(async move {
                        c.execute(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {n}")))
                            .await?;
                        Ok(())
                    })
                })
                .before_acquire(move |c, _| {
                    let n = b.load(Ordering::SeqCst);
                    Box::pin(async move {
                        c.execute(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {n}")))
                            .await?;
                        Ok(true)
                    })
                })
                .connect_with(opts)
                .await
                .map_err(|e| sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into())))?;
            Ok(sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_full_disk_the_projector_catches_up_and_never_acks_past_its_checkpoint() {
    let app = TestApp::with(Backend::Sqlite, Options::api_only()).await;
    let limit = Arc::new(AtomicU64::new(UNLIMITED));
    let start = |limit: Arc<AtomicU64>| {
        let (url, nats, config) = (
            app.db.url.clone(),
            app.nats.url(),
            app.options.projector_config.clone(),
        );
        async move {
            let projector = Projector::build_with_connector(
                connect(&nats, "projector").await,
                disk_with_limit(&url, limit),
                config,
            )
            .await
            .expect("projector");
            let failures = projector.failures();
            let c = Component::spawn(|stop| async move {
                projector.run(stop).await.expect("projector run");
            });
            (c, failures)
        }
    };
    let (projector, mut failures) = start(limit.clone()).await;
    let alice = app.token("alice", false);
    app.submit_job(&alice, &json!({"kind": "echo"})).await;
    app.when_projected("first job folded", || async {
        (app.committed().await >= app.stream_last().await).then_some(())
    })
    .await;

    // The disk fills up: the projector's connections cannot add a page.
    let pages: i64 = app
        .db
        .conn
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            "PRAGMA page_count",
        ))
        .await
        .expect("page_count")
        .expect("row")
        .try_get_by_index(0)
        .expect("pages");
    limit.store(pages as u64, Ordering::SeqCst);
    for i in 0..300 {
        app.submit_job(
            &alice,
            &json!({"kind": "echo", "payload": {"i": i, "pad": "x".repeat(200)}}),
        )
        .await;
    }
    tokio::time::timeout(WAIT, failures.wait_for(|n| *n >= 3))
        .await
        .expect("the projector hits the full disk")
        .expect("watch");
    let last = app.stream_last().await;
    assert!(app.committed().await < last, "nothing new fits on the disk");
    app.assert_acks_within_checkpoint().await;

    // Space is freed: it catches up on its own, and never acks beyond what it committed.
    limit.store(UNLIMITED, Ordering::SeqCst);
    app.when_projected("caught up after the disk was freed", || async {
        app.assert_acks_within_checkpoint().await;
        (app.committed().await >= last).then_some(())
    })
    .await;
    assert_eq!(
        queued_job::Entity::find()
            .count(&app.db.conn)
            .await
            .unwrap(),
        301
    );

    // Restarted on a projection that lost its state (the consumer acked everything), it
    // catches up from the stream without waiting for a new event.
    projector.stop().await;
    app.db
        .conn
        .execute_unprepared("DELETE FROM queued_jobs; DELETE FROM projector_checkpoints")
        .await
        .expect("wipe");
    let (projector, _) = start(limit.clone()).await;
    app.when_projected("restarted projector caught up", || async {
        (app.committed().await >= last).then_some(())
    })
    .await;
    assert_eq!(
        queued_job::Entity::find()
            .count(&app.db.conn)
            .await
            .unwrap(),
        301
    );
    projector.stop().await;
}
