//! The workers registry (`GET /v1/workers`): a running worker is listed with what it
//! runs, and marked stale once it stops sending heartbeats.

use std::time::Duration;

use jobstream_testkit::Backend;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Options, TestApp, db_test};

async fn the_registry_lists_a_running_worker_and_marks_it_stale_after_it_stops(backend: Backend) {
    let mut options = Options::default();
    options.worker_config.heartbeat = Duration::from_millis(100);
    let mut app = TestApp::with(backend, options).await;
    let alice = app.token("alice", false);

    let w = app
        .wait_for_worker("test-worker", "the worker in the registry", |w| {
            w["stale"] == false
        })
        .await;
    assert_eq!(w["queues"], json!(["default"]));
    assert_eq!(w["concurrency"], 16);
    assert_eq!(w["pid"], std::process::id());
    assert!(!w["host"].as_str().unwrap_or_default().is_empty(), "{w}");
    assert!(w["started_at"].as_str().unwrap() <= w["heartbeat_at"].as_str().unwrap());

    // A running job shows as in flight.
    let job = app
        .submit_job(&alice, &json!({"kind": "sleep", "payload": {"ms": 60_000}}))
        .await;
    app.wait_for_worker("test-worker", "one job in flight", |w| w["in_flight"] == 1)
        .await;
    let (status, _) = app
        .http
        .post(format!("{}/v1/jobs/{}/cancel", app.base, job.id))
        .bearer_auth(&alice)
        .send()
        .await
        .map(|r| (r.status(), ()))
        .expect("cancel");
    assert_eq!(status, StatusCode::ACCEPTED);
    app.wait_for_worker("test-worker", "nothing in flight", |w| w["in_flight"] == 0)
        .await;

    app.worker.take().expect("worker").stop().await;
    let w = app
        .wait_for_worker("test-worker", "the stopped worker marked stale", |w| {
            w["stale"] == true
        })
        .await;
    assert_eq!(w["in_flight"], 0);
}
db_test!(the_registry_lists_a_running_worker_and_marks_it_stale_after_it_stops);

async fn no_worker_ever_started_lists_none(backend: Backend) {
    let app = TestApp::with(backend, Options::api_only()).await;
    let (status, body) = app.get(&app.token("ops", true), "/v1/workers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!([]));
}
db_test!(no_worker_ever_started_lists_none);
