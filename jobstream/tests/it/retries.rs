//! Retries with back-off, and the final failure.

use jobstream_core::EventType;
use jobstream_testkit::Backend;
use serde_json::json;

use crate::helpers::{TestApp, db_test};

async fn a_job_failing_fewer_times_than_allowed_succeeds_on_the_next_attempt(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice", false);
    let job = app
        .submit_job(
            &token,
            &json!({"kind": "fail", "payload": {"times": 2}, "max_attempts": 3}),
        )
        .await;
    let id = &job.id.to_string();
    let row = app
        .wait_for_row(id, "fail job to succeed", |r| r.status == "succeeded")
        .await;
    assert_eq!(row.attempt, 3);
    assert_eq!(row.result, Some(json!({"attempts": 3})));
    assert_eq!(row.error, None);
    let retries = app.events_of(id, EventType::Retrying).await;
    assert_eq!(retries.len(), 2);
    assert!(retries.iter().all(|e| e.attempt <= 2));
}
db_test!(a_job_failing_fewer_times_than_allowed_succeeds_on_the_next_attempt);

async fn a_job_failing_every_attempt_ends_failed_with_the_error(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice", false);
    let job = app
        .submit_job(
            &token,
            &json!({"kind": "fail", "payload": {"times": 3}, "max_attempts": 3}),
        )
        .await;
    let id = &job.id.to_string();
    let row = app
        .wait_for_row(id, "fail job to fail", |r| r.status == "failed")
        .await;
    assert_eq!(row.attempt, 3);
    assert!(
        row.error
            .as_deref()
            .unwrap_or("")
            .contains("failing as asked: attempt 3"),
        "{:?}",
        row.error
    );
    assert!(row.finished_at.is_some());
    assert_eq!(app.events_of(id, EventType::Retrying).await.len(), 2);
    assert_eq!(app.events_of(id, EventType::Failed).await.len(), 1);
    let (_, got) = app.get(&token, &format!("/v1/jobs/{id}")).await;
    assert_eq!(got["status"], "failed");
}
db_test!(a_job_failing_every_attempt_ends_failed_with_the_error);
