//! `/readyz` tells the truth: a stalled projection, a stream that refuses writes and a
//! worker consumer with jobs waiting and no progress each make it 503 problem+json,
//! naming the failed check; `/livez` stays the bare liveness check.

use std::time::Duration;

use jobstream_api::routes::health::Readiness;
use jobstream_testkit::Backend;
use jobstream_worker::WorkerConfig;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Options, TestApp, db_test};

fn quick_readiness() -> Readiness {
    Readiness {
        max_projector_lag: 10_000,
        projector_stall: Duration::from_secs(1),
        ..Readiness::default()
    }
}

async fn readyz_reports_a_projection_that_does_not_move(backend: Backend) {
    let mut app = TestApp::with(
        backend,
        Options {
            projector: false,
            readiness: quick_readiness(),
            ..Options::default()
        },
    )
    .await;
    app.wait_ready().await;
    let token = app.token("alice", false);
    app.submit_job(&token, &json!({"kind": "echo", "payload": {}}))
        .await;
    let reason = app.wait_not_ready("projector").await;
    assert!(reason.contains("behind"), "{reason}");
    // Liveness is not readiness: the process still answers.
    let live = app
        .http
        .get(format!("{}/livez", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);

    app.start_projector().await;
    app.wait_ready().await;
}
db_test!(readyz_reports_a_projection_that_does_not_move);

/// A nats-server whose JetStream store holds 1 MiB: it soon refuses every write.
const TINY_STORE: &str = "jetstream { max_file_store: 1MB }\nmax_payload: 8MB\n";

async fn readyz_reports_a_store_that_refuses_writes(backend: Backend) {
    let app = TestApp::with(
        backend,
        Options {
            nats_config: Some(TINY_STORE.to_owned()),
            ..Options::without_worker()
        },
    )
    .await;
    app.wait_ready().await;
    let token = app.token("alice", false);
    let big = "x".repeat(64 * 1024);
    let mut accepted = 0;
    let refused = loop {
        let res = app
            .submit(&token, &json!({"kind": "echo", "payload": {"fill": big}}))
            .await;
        if res.status() != StatusCode::ACCEPTED {
            break res;
        }
        accepted += 1;
        assert!(
            accepted < 64,
            "a 1 MiB store took {accepted} jobs of 64 KiB"
        );
    };
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let reason = app.wait_not_ready("stream_writes").await;
    assert!(reason.contains("refuses writes"), "{reason}");

    // Room again (in a test only: the stream is the source of truth).
    let js = app.broker.jetstream();
    js.get_stream(app.broker.stream_name())
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    app.wait_ready().await;
    app.submit_job(&token, &json!({"kind": "echo", "payload": {}}))
        .await;
}
db_test!(readyz_reports_a_store_that_refuses_writes);

async fn readyz_reports_jobs_waiting_with_no_worker_making_progress(backend: Backend) {
    let mut options = Options::default();
    // The consumer's heartbeat window: how long jobs may wait with nothing delivered.
    options.worker_config = WorkerConfig {
        ack_wait: Duration::from_secs(1),
        ..options.worker_config
    };
    let mut app = TestApp::with(backend, options).await;
    let token = app.token("alice", false);
    let first = app
        .submit_job(&token, &json!({"kind": "echo", "payload": {}}))
        .await;
    app.wait_for_row(&first.id.to_string(), "first job", |r| {
        r.status == "succeeded"
    })
    .await;
    app.wait_ready().await;

    app.worker.take().unwrap().stop().await;
    app.submit_job(&token, &json!({"kind": "echo", "payload": {}}))
        .await;
    let reason = app.wait_not_ready("workers").await;
    assert!(reason.contains("worker-default"), "{reason}");
    assert!(reason.contains("no progress"), "{reason}");

    app.start_worker().await;
    app.wait_for_count("succeeded", 2).await;
    app.wait_ready().await;
}
db_test!(readyz_reports_jobs_waiting_with_no_worker_making_progress);
