//! The pipeline end to end: HTTP → JetStream → worker → projector → SQL → HTTP.

use futures::StreamExt;
use jobstream_testkit::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, db_test};

async fn thousand_echo_jobs_succeed_with_their_payload_as_result(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice", false);
    let ids: Vec<(String, i64)> = futures::stream::iter(0..1000i64)
        .map(|i| {
            let (app, token) = (&app, &token);
            async move {
                let job = app
                    .submit_job(token, &json!({"kind": "echo", "payload": {"n": i}}))
                    .await;
                assert_eq!(job.status, "queued");
                (job.id.to_string(), i)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    app.wait_for_count("succeeded", 1000).await;
    let rows = app.rows().await;
    assert_eq!(rows.len(), 1000);
    let by_id: std::collections::HashMap<_, _> = rows.iter().map(|r| (r.id.clone(), r)).collect();
    for (id, i) in ids {
        let row = by_id[&id];
        assert_eq!(row.status, "succeeded");
        assert_eq!(row.result, Some(json!({"n": i})));
        assert_eq!(row.attempt, 1);
    }
    // And the API shows the same thing.
    let (status, job) = app.get(&token, &format!("/v1/jobs/{}", rows[0].id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["result"], rows[0].result.clone().unwrap());
    for field in ["created_at", "started_at", "finished_at"] {
        assert!(job[field].is_string(), "{field} missing in {job}");
    }
}
db_test!(thousand_echo_jobs_succeed_with_their_payload_as_result);

async fn a_job_is_readable_right_after_it_is_accepted(backend: Backend) {
    // No projector at all: the read must still find the job (from the stream).
    let app = TestApp::with(backend, Options::api_only()).await;
    let token = app.token("alice", false);
    let res = app
        .submit(&token, &json!({"kind": "echo", "payload": {"x": 1}}))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let job: Value = res.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/jobs/{}", job["id"].as_str().unwrap())
    );
    let (status, got) = app.get(&token, &location).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["status"], "queued");
    assert_eq!(got["payload"], json!({"x": 1}));
    // Another user still cannot see it.
    let (status, _) = app.get(&app.token("bob", false), &location).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
db_test!(a_job_is_readable_right_after_it_is_accepted);

async fn users_see_only_their_own_jobs_and_admins_see_all(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, bob, admin) = (
        app.token("alice", false),
        app.token("bob", false),
        app.token("root", true),
    );
    let a = app
        .submit_job(&alice, &json!({"kind": "echo", "payload": "a"}))
        .await;
    let b = app
        .submit_job(&bob, &json!({"kind": "echo", "payload": "b"}))
        .await;
    let (a_id, b_id) = (&a.id.to_string(), &b.id.to_string());
    app.wait_for_count("succeeded", 2).await;

    assert_eq!(
        app.get(&bob, &format!("/v1/jobs/{a_id}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&alice, &format!("/v1/jobs/{b_id}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&admin, &format!("/v1/jobs/{a_id}")).await.0,
        StatusCode::OK
    );

    let ids = |page: &Value| {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&app.get(&alice, "/v1/jobs").await.1),
        vec![a_id.to_owned()]
    );
    assert_eq!(
        ids(&app.get(&bob, "/v1/jobs").await.1),
        vec![b_id.to_owned()]
    );
    let all = ids(&app.get(&admin, "/v1/jobs").await.1);
    assert_eq!(all.len(), 2);
    // Without a token: 401 problem.
    let res = app
        .http
        .get(format!("{}/v1/jobs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}
db_test!(users_see_only_their_own_jobs_and_admins_see_all);

async fn pages_have_no_duplicates_or_gaps_while_jobs_are_added(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice", false);
    let mut submitted = Vec::new();
    for i in 0..25 {
        submitted.push(
            app.submit_job(&token, &json!({"kind": "echo", "payload": i}))
                .await
                .id
                .to_string(),
        );
    }
    app.wait_for_count("succeeded", 25).await;

    let (_, page1) = app
        .get(&token, "/v1/jobs?status=succeeded&kind=echo&limit=10")
        .await;
    assert!(page1["prev"].is_null());
    // New jobs arrive between page reads.
    for i in 0..5 {
        app.submit_job(&token, &json!({"kind": "echo", "payload": 100 + i}))
            .await;
    }
    app.wait_for_count("succeeded", 30).await;
    let (_, page2) = app.get(&token, page1["next"].as_str().unwrap()).await;
    let (_, page3) = app.get(&token, page2["next"].as_str().unwrap()).await;
    assert!(page3["next"].is_null(), "{page3}");

    let mut seen = Vec::new();
    for p in [&page1, &page2, &page3] {
        seen.extend(
            p["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_owned()),
        );
    }
    submitted.reverse(); // newest first
    assert_eq!(seen, submitted);

    // prev of page 2 leads back to page 1's items.
    let (_, back) = app.get(&token, page2["prev"].as_str().unwrap()).await;
    assert_eq!(back["items"], page1["items"]);
}
db_test!(pages_have_no_duplicates_or_gaps_while_jobs_are_added);
