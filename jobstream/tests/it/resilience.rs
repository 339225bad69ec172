//! Nothing acknowledged is lost: worker crash, nats-server crash, projector restart.

use std::time::Duration;

use futures::StreamExt;
use jobstream_core::EventType;
use jobstream_testkit::Backend;
use jobstream_worker::WorkerConfig;
use serde_json::json;

use crate::helpers::{Options, TestApp, db_test};

async fn a_job_whose_worker_dies_mid_run_is_redelivered_and_succeeds_once(backend: Backend) {
    let mut options = Options::default();
    // A short ack_wait so the dead worker's job comes back quickly.
    options.worker_config = WorkerConfig {
        ack_wait: Duration::from_secs(2),
        ..options.worker_config
    };
    let mut app = TestApp::with(backend, options).await;
    let token = app.token("alice", false);
    let job = app
        .submit_job(&token, &json!({"kind": "sleep", "payload": {"ms": 1500}}))
        .await;
    let id = &job.id.to_string();
    app.wait_for_row(id, "job to start", |r| r.status == "running")
        .await;

    app.worker.take().unwrap().kill().await;
    app.start_worker().await;

    let row = app
        .wait_for_row(id, "redelivered job to succeed", |r| {
            r.status == "succeeded"
        })
        .await;
    assert_eq!(row.attempt, 2, "the second delivery ran it");
    assert_eq!(row.result, Some(json!({"slept_ms": 1500})));
    assert_eq!(app.events_of(id, EventType::Started).await.len(), 2);
    assert_eq!(
        app.events_of(id, EventType::Succeeded).await.len(),
        1,
        "succeeded exactly once"
    );
}
db_test!(a_job_whose_worker_dies_mid_run_is_redelivered_and_succeeds_once);

async fn jobs_accepted_before_a_nats_server_crash_all_complete(backend: Backend) {
    let mut app = TestApp::with(backend, Options::without_worker()).await;
    let token = app.token("alice", false);
    let ids: Vec<String> = futures::stream::iter(0..50)
        .map(|i| {
            let (app, token) = (&app, &token);
            async move {
                app.submit_job(token, &json!({"kind": "echo", "payload": i}))
                    .await
                    .id
                    .to_string()
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;

    // kill -9 between acceptance and processing, then start again on the same store.
    app.nats.kill().await;
    app.nats.restart().await;
    app.start_worker().await;

    app.wait_for_count("succeeded", 50).await;
    let rows = app.rows().await;
    assert_eq!(rows.len(), 50);
    for id in &ids {
        assert!(
            rows.iter().any(|r| &r.id == id && r.status == "succeeded"),
            "job {id} lost"
        );
    }
}
db_test!(jobs_accepted_before_a_nats_server_crash_all_complete);

async fn a_projector_restarted_mid_stream_equals_a_clean_fold(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let token = app.token("alice", false);
    submit_mixed(&app, &token, 0..150).await;

    // Crash the projector once it has folded part of the stream, then bring it back.
    app.when_projected("projector to fold part of the stream", || async {
        (app.rows().await.len() >= 20).then_some(())
    })
    .await;
    app.projector.take().unwrap().kill().await;
    submit_mixed(&app, &token, 150..300).await;
    app.start_projector().await;

    app.wait_for_count("succeeded", 200).await;
    app.wait_for_count("failed", 100).await;
    let live = app.rows().await;
    assert_eq!(live.len(), 300);

    // A clean fold of the same stream into a fresh database, by a fresh consumer.
    let fresh_db = app.clean_fold("clean-fold").await;

    let clean_rows = {
        use jobstream_entity::queued_job;
        use sea_orm::{EntityTrait, QueryOrder};
        queued_job::Entity::find()
            .order_by_asc(queued_job::Column::Id)
            .all(&fresh_db.conn)
            .await
            .unwrap()
    };
    assert_eq!(clean_rows.len(), live.len());
    for (a, b) in live.iter().zip(&clean_rows) {
        assert_eq!(a, b, "row differs from a clean fold");
    }
}
db_test!(a_projector_restarted_mid_stream_equals_a_clean_fold);

/// Submits a mix: a third succeed at once, a third after one retry, a third fail for good.
async fn submit_mixed(app: &TestApp, token: &str, range: std::ops::Range<u64>) {
    futures::stream::iter(range)
        .map(|i| async move {
            let body = match i % 3 {
                0 => json!({"kind": "echo", "payload": i}),
                1 => json!({"kind": "fail", "payload": {"times": 1}, "max_attempts": 2}),
                _ => json!({"kind": "fail", "payload": {"times": 5}, "max_attempts": 2}),
            };
            app.submit_job(token, &body).await;
        })
        .buffer_unordered(8)
        .collect::<()>()
        .await;
}

async fn a_worker_stopped_gracefully_finishes_its_running_job(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let token = app.token("alice", false);
    let job = app
        .submit_job(&token, &json!({"kind": "sleep", "payload": {"ms": 300}}))
        .await;
    let id = &job.id.to_string();
    app.wait_for_row(id, "job to start", |r| r.status == "running")
        .await;
    // Shutdown within the grace period: the running job completes and is acked, not redelivered.
    app.worker.take().unwrap().stop().await;
    let row = app
        .wait_for_row(id, "job to finish", |r| r.status == "succeeded")
        .await;
    assert_eq!(row.attempt, 1);
    assert_eq!(app.events_of(id, EventType::Started).await.len(), 1);
}
db_test!(a_worker_stopped_gracefully_finishes_its_running_job);
