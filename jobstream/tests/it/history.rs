//! A job's history from the stream, and waiting for a job to finish.

use std::time::{Duration, Instant};

use jobstream_testkit::Backend;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Options, TestApp, db_test};

async fn history_lists_every_event_in_order_and_only_to_its_owner(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, bob, admin) = (
        app.token("alice", false),
        app.token("bob", false),
        app.token("root", true),
    );
    let job = app
        .submit_job(
            &alice,
            &json!({"kind": "fail", "payload": {"times": 1}, "max_attempts": 3}),
        )
        .await;
    let id = &job.id.to_string();
    app.wait_for_row(id, "job to succeed", |r| r.status == "succeeded")
        .await;

    let (status, h) = app.get(&alice, &format!("/v1/jobs/{id}/events")).await;
    assert_eq!(status, StatusCode::OK, "{h}");
    let events = h["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        // A short attempt stores no `started`: its outcome says when it ran (the fast path).
        ["queued", "retrying", "succeeded"]
    );
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let attempts: Vec<u64> = events
        .iter()
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [0, 1, 2]);
    assert_eq!(events[0]["data"]["kind"], "fail");
    assert!(events[1]["data"]["error"].is_string());
    assert_eq!(events[2]["data"]["result"], json!({"attempts": 2}));
    // Each outcome says which worker ran its attempt, and when it began.
    for outcome in &events[1..] {
        assert!(outcome["run"]["worker"].is_string(), "{outcome}");
        assert!(outcome["run"]["started_at"].is_string(), "{outcome}");
    }
    assert!(events[0].get("run").is_none());
    assert!(
        events
            .iter()
            .all(|e| e["at"].is_string() && e["data"].get("type").is_none())
    );

    let (status, _) = app.get(&bob, &format!("/v1/jobs/{id}/events")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another user's job is a 404");
    let (status, _) = app.get(&admin, &format!("/v1/jobs/{id}/events")).await;
    assert_eq!(status, StatusCode::OK);
    let unknown = uuid::Uuid::now_v7();
    let (status, _) = app.get(&alice, &format!("/v1/jobs/{unknown}/events")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
db_test!(history_lists_every_event_in_order_and_only_to_its_owner);

async fn wait_returns_as_soon_as_the_job_finishes_or_at_the_timeout(backend: Backend) {
    let mut app = TestApp::with(backend, Options::without_worker()).await;
    let (alice, bob) = (app.token("alice", false), app.token("bob", false));
    let job = app
        .submit_job(&alice, &json!({"kind": "sleep", "payload": {"ms": 200}}))
        .await;
    let id = job.id.to_string();

    // No worker yet: the wait times out and returns the current state.
    let t = Instant::now();
    let (status, v) = app
        .get(&alice, &format!("/v1/jobs/{id}/wait?timeout=300ms"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["status"], "queued");
    assert!(t.elapsed() >= Duration::from_millis(300));

    // Waiting while the job runs: the answer comes when it finishes, well before the timeout.
    let waiter = {
        let (http, url, token) = (
            app.http.clone(),
            format!("{}/v1/jobs/{id}/wait?timeout=50s", app.base),
            alice.clone(),
        );
        tokio::spawn(async move {
            let t = Instant::now();
            let v: serde_json::Value = http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (v, t.elapsed())
        })
    };
    app.start_worker().await;
    let (v, took) = waiter.await.unwrap();
    assert_eq!(v["status"], "succeeded", "{v}");
    assert!(took < Duration::from_secs(20), "{took:?}");

    // Already finished: immediate. Another user's job: 404. A bad timeout: 422.
    let (status, v) = app.get(&alice, &format!("/v1/jobs/{id}/wait")).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (StatusCode::OK, Some("succeeded"))
    );
    let (status, _) = app
        .get(&bob, &format!("/v1/jobs/{id}/wait?timeout=1s"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app
        .get(&alice, &format!("/v1/jobs/{id}/wait?timeout=10m"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "timeout");
}
db_test!(wait_returns_as_soon_as_the_job_finishes_or_at_the_timeout);
