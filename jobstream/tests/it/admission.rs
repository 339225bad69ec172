//! Admission control: past a queue's backlog bound the API sheds submissions with
//! `429` problem+json and `Retry-After`, keeps every job it accepted, reads the
//! backlog from NATS (a second API instance refuses too), and admits again once the
//! workers drain the queue.

use jobstream_api::jobs::admission::AdmissionConfig;
use jobstream_core::EventType;
use jobstream_testkit::{Backend, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, WAIT, db_test};

/// The depth bound of the test's queue.
const BOUND: u64 = 5;

fn echo(i: u64) -> Value {
    json!({"kind": "echo", "payload": {"i": i}})
}

fn batch(from: u64, n: u64) -> Value {
    json!({"jobs": (from..from + n).map(echo).collect::<Vec<_>>()})
}

/// Asserts a refusal: 429 problem+json naming the queue, with a `Retry-After` of at least 1 s.
fn assert_shed(what: &str, (status, retry_after, body): (StatusCode, Option<u64>, Value)) {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{what}: {body}");
    assert!(
        retry_after.is_some_and(|s| s >= 1),
        "{what}: Retry-After {retry_after:?}"
    );
    assert_eq!(body["status"], 429, "{what}: {body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("queue default"), "{what}: {detail}");
}

async fn a_full_queue_sheds_submissions_until_workers_drain_it(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    // The worker has created the queue's lane consumers; with it stopped, nothing drains.
    app.worker.take().expect("worker").stop().await;
    let config = AdmissionConfig {
        max_queue_depth: Some(BOUND),
        ..AdmissionConfig::default()
    };
    let (a, _api_a) = app.api_with_admission("api-a", config.clone()).await;
    let (b, _api_b) = app.api_with_admission("api-b", config).await;
    let token = app.token("alice", false);

    let mut accepted = Vec::new();
    let (status, _, body) = app
        .post_to(&a, "/v1/jobs/batch", &token, &batch(0, 3))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    accepted.extend(
        body["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned()),
    );
    // 3 + 3 > 5: the batch is refused whole.
    assert_shed(
        "a batch past the bound",
        app.post_to(&a, "/v1/jobs/batch", &token, &batch(3, 3))
            .await,
    );
    for i in 3..BOUND {
        let (status, _, body) = app.post_to(&a, "/v1/jobs", &token, &echo(i)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "job {i}: {body}");
        accepted.push(body["id"].as_str().unwrap().to_owned());
    }
    assert_shed(
        "a job past the bound",
        app.post_to(&a, "/v1/jobs", &token, &echo(BOUND)).await,
    );
    // Another instance, with nothing admitted itself, reads the same backlog from NATS.
    assert_shed(
        "a job past the bound on another instance",
        app.post_to(&b, "/v1/jobs", &token, &echo(BOUND)).await,
    );
    // A delayed job adds nothing to the backlog until it is due.
    let (status, _, body) = app
        .post_to(
            &b,
            "/v1/jobs",
            &token,
            &json!({"kind": "echo", "delay_ms": 3_600_000}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "a delayed job: {body}");

    // Every accepted job is in the stream, and nothing refused is.
    assert_eq!(accepted.len() as u64, BOUND);
    for id in &accepted {
        assert_eq!(
            app.events_of(id, EventType::Queued).await.len(),
            1,
            "job {id} stored"
        );
    }
    assert_eq!(
        app.stream_messages().await,
        BOUND + 1,
        "5 queued + 1 scheduled event"
    );

    // Workers drain the queue; both instances admit again.
    app.start_worker().await;
    app.wait_for_count("succeeded", BOUND).await;
    for base in [&a, &b] {
        eventually("a submission accepted after the drain", WAIT, || async {
            let (status, _, _) = app.post_to(base, "/v1/jobs", &token, &echo(99)).await;
            assert!(
                matches!(status, StatusCode::ACCEPTED | StatusCode::TOO_MANY_REQUESTS),
                "{status}"
            );
            (status == StatusCode::ACCEPTED).then_some(())
        })
        .await;
    }
    app.wait_for_count("succeeded", BOUND + 2).await;
}
db_test!(a_full_queue_sheds_submissions_until_workers_drain_it);
