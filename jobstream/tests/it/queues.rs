//! Pausing and resuming queues (`/v1/queues`): a paused queue's jobs wait while its
//! worker keeps serving other queues, across a worker restart; resume runs them; only
//! admins may pause; `GET /v1/queues` counts what the projection and NATS hold.

use jobstream_core::subject::QueueName;
use jobstream_testkit::Backend;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Options, TestApp, db_test};

/// A worker on `default` and `other`, so a test can see it busy while `default` is paused.
fn two_queues() -> Options {
    let mut options = Options::default();
    options.worker_config.queues = vec![
        QueueName::default_queue(),
        QueueName::parse("other").expect("queue name"),
    ];
    options
}

async fn a_paused_queue_holds_its_jobs_across_a_worker_restart_until_resumed(backend: Backend) {
    let mut app = TestApp::with(backend, two_queues()).await;
    let admin = app.token("ops", true);
    let alice = app.token("alice", false);

    let (status, _, paused) = app.queue_action(&admin, "default", "pause").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{paused}");
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["changed_by"], "ops");
    app.wait_for_queue(&admin, "default", "default paused in the projection", |q| {
        q["paused"] == true
    })
    .await;

    let held = app
        .submit_job(&alice, &json!({"kind": "echo", "payload": "held"}))
        .await;
    let held_id = held.id.to_string();
    // The worker is alive and pulling: a job of its other queue runs.
    let busy = app
        .submit_job(
            &alice,
            &json!({"kind": "echo", "queue": "other", "payload": 1}),
        )
        .await;
    app.wait_for_row(&busy.id.to_string(), "other queue's job ran", |r| {
        r.status == "succeeded"
    })
    .await;
    let q = app
        .wait_for_queue(&admin, "default", "the held job pending at NATS", |q| {
            q["consumer"]["pending"] == 1 && q["depth"]["queued"] == 1
        })
        .await;
    assert_eq!(q["consumer"]["ack_pending"], 0, "{q}");
    assert!(q["oldest_waiting_ms"].as_u64().is_some(), "{q}");
    assert_eq!(app.rows_with_status(&held_id).await, "queued");

    // A new worker learns the pause from the stream at start.
    app.worker.take().expect("worker").stop().await;
    app.start_worker().await;
    let busy = app
        .submit_job(
            &alice,
            &json!({"kind": "echo", "queue": "other", "payload": 2}),
        )
        .await;
    app.wait_for_row(&busy.id.to_string(), "restarted worker runs other", |r| {
        r.status == "succeeded"
    })
    .await;
    assert_eq!(app.rows_with_status(&held_id).await, "queued");

    let (status, _, resumed) = app.queue_action(&admin, "default", "resume").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resumed}");
    assert_eq!(resumed["paused"], false);
    app.wait_for_row(&held_id, "held job runs after resume", |r| {
        r.status == "succeeded"
    })
    .await;
    app.wait_for_queue(&admin, "default", "default resumed and drained", |q| {
        q["paused"] == false && q["depth"].get("queued").is_none() && q["consumer"]["pending"] == 0
    })
    .await;
}
db_test!(a_paused_queue_holds_its_jobs_across_a_worker_restart_until_resumed);

async fn only_admins_pause_resume_or_list_queues(backend: Backend) {
    let app = TestApp::with(backend, Options::api_only()).await;
    let alice = app.token("alice", false);
    for action in ["pause", "resume"] {
        let (status, content_type, body) = app.queue_action(&alice, "default", action).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{action}: {body}");
        assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    }
    for path in ["/v1/queues", "/v1/workers"] {
        let (status, _) = app.get(&alice, path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    // Nothing was stored for the refused requests.
    let stored = app
        .broker
        .last_on_subject(&jobstream_core::subject::queue_control(
            &QueueName::default_queue(),
        ))
        .await
        .expect("read");
    assert!(stored.is_none());
    // A name that is not a queue token is refused, naming the field.
    let admin = app.token("ops", true);
    let (status, _, body) = app.queue_action(&admin, "a*b", "pause").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}
db_test!(only_admins_pause_resume_or_list_queues);
