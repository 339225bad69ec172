//! Atomic batches: up to 1,000 jobs stored all together or not at all.

use jobstream_core::atomic::{EXPECTED_LAST_SUBJECT_SEQUENCE, Outgoing};
use jobstream_core::event::{Envelope, Event, JobSpec, Priority};
use jobstream_core::subject::QueueName;
use jobstream_testkit::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Options, TestApp, db_test};

async fn a_batch_of_1000_is_stored_in_order_and_runs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice", false);
    let jobs: Vec<Value> = (0..1000)
        .map(|i| json!({"kind": "echo", "payload": i}))
        .collect();
    let (status, body) = app.submit_batch(&token, None, &json!({"jobs": jobs})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ids: Vec<String> = body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1000);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(
        sorted, ids,
        "ids in submission order (UUIDv7, time-ordered)"
    );

    app.wait_for_count("succeeded", 1000).await;
    // Each id is the job given at that position.
    for i in [0usize, 1, 500, 999] {
        let (_, job) = app.get(&token, &format!("/v1/jobs/{}", ids[i])).await;
        assert_eq!(job["result"], json!(i), "job {i}");
    }

    // 1,001 jobs: refused, nothing stored.
    let before = app.stream_messages().await;
    let jobs: Vec<Value> = (0..1001).map(|_| json!({"kind": "echo"})).collect();
    let (status, p) = app.submit_batch(&token, None, &json!({"jobs": jobs})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["errors"][0]["field"], "jobs");
    assert_eq!(app.stream_messages().await, before);
}
db_test!(a_batch_of_1000_is_stored_in_order_and_runs);

async fn one_invalid_job_stores_nothing(backend: Backend) {
    let app = TestApp::with(backend, Options::without_worker()).await;
    let token = app.token("alice", false);
    let before = app.stream_messages().await;
    let body = json!({"jobs": [
        {"kind": "echo", "payload": 1},
        {"kind": "echo", "payload": 2, "delay_ms": 60000},
        {"kind": "nope"},
        {"kind": "sleep", "payload": {"ms": -1}},
        {"kind": "echo", "idempotency_key": "k"},
        "not an object",
    ]});
    let (status, p) = app.submit_batch(&token, None, &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "jobs[2].kind",
            "jobs[3].payload.ms",
            "jobs[4].idempotency_key",
            "jobs[5]"
        ]
    );
    for bad in [
        json!({"jobs": []}),
        json!({"jobs": 5}),
        json!({}),
        json!({"jobs": [], "x": 1}),
    ] {
        let (status, _) = app.submit_batch(&token, None, &bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    assert_eq!(app.stream_messages().await, before, "nothing published");
    assert!(app.rows().await.is_empty());

    // With delayed jobs and a batch Idempotency-Key: stored together; a repeat returns the same ids.
    let ok = json!({"jobs": [
        {"kind": "echo", "payload": 1},
        {"kind": "echo", "payload": 2, "delay_ms": 60000},
    ]});
    let (status, first) = app.submit_batch(&token, Some("b-1"), &ok).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, again) = app.submit_batch(&token, Some("b-1"), &ok).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["ids"], again["ids"]);
    let delayed = first["ids"][1].as_str().unwrap();
    app.wait_for_row(delayed, "delayed job in the batch", |r| {
        r.status == "scheduled"
    })
    .await;
    assert_eq!(app.rows().await.len(), 2);

    // The largest batch: 1,000 delayed jobs (two messages each) plus its idempotency record.
    let jobs: Vec<Value> = (0..1000)
        .map(|i| json!({"kind": "echo", "payload": i, "delay_ms": 3_600_000}))
        .collect();
    let (status, body) = app
        .submit_batch(&token, Some("b-2"), &json!({"jobs": jobs}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.wait_for_count("scheduled", 1001).await;
}
db_test!(one_invalid_job_stores_nothing);

/// The server's side of all-or-nothing: a batch whose middle message fails a check stores none.
async fn a_batch_refused_by_the_stream_stores_nothing(backend: Backend) {
    let app = TestApp::with(backend, Options::api_only()).await;
    let queue = QueueName::default_queue();
    let event = || {
        Envelope::new(
            Uuid::now_v7(),
            0,
            Event::Queued(JobSpec {
                kind: "echo".into(),
                queue: queue.clone(),
                owner: "alice".into(),
                payload: Value::Null,
                priority: Priority::Normal,
                max_attempts: 1,
                timeout_ms: 1000,
                run_at: None,
                idempotency_key: None,
                result_ttl_ms: None,
                backoff: None,
            }),
        )
    };
    let before = app.stream_messages().await;
    let mut msgs: Vec<Outgoing> = (0..5)
        .map(|_| Outgoing::event(&event(), &queue, None))
        .collect();
    // The third message expects its subject to hold a message already: it does not.
    msgs[2] = msgs[2]
        .clone()
        .with_header(EXPECTED_LAST_SUBJECT_SEQUENCE, "999");
    let err = app.broker.publish_atomic(msgs).await.unwrap_err();
    assert!(err.is_wrong_last_sequence(), "{err}");
    assert_eq!(
        app.stream_messages().await,
        before,
        "no message of the batch stored"
    );

    let msgs: Vec<Outgoing> = (0..5)
        .map(|_| Outgoing::event(&event(), &queue, None))
        .collect();
    let ack = app.broker.publish_atomic(msgs).await.unwrap();
    assert_eq!(ack.last_seq - ack.first_seq, 4);
    assert_eq!(app.stream_messages().await, before + 5);
}
db_test!(a_batch_refused_by_the_stream_stores_nothing);
