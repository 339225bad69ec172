//! Bad input gets a clear problem+json and publishes nothing.

use jobstream_testkit::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, db_test};

async fn problem(res: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(res.status(), status);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    res.json().await.unwrap()
}

fn fields(p: &Value) -> Vec<String> {
    p["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|f| f["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn malformed_submissions_are_refused_and_nothing_is_published(backend: Backend) {
    let app = TestApp::with(backend, Options::api_only()).await;
    let token = app.token("alice", false);

    let res = app
        .http
        .post(format!("{}/v1/jobs", app.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"kind\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res, StatusCode::BAD_REQUEST).await["status"], 400);

    let p = problem(
        app.submit(&token, &json!({"kind": "nope"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(fields(&p), ["kind"]);
    assert!(
        p["detail"].as_str().unwrap().contains("echo"),
        "lists known kinds: {p}"
    );

    let p = problem(
        app.submit(&token, &json!({"kind": "sleep", "payload": {}}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(fields(&p), ["payload.ms"]);

    let p = problem(
        app.submit(&token, &json!({"kind": "echo", "queue": "a.>", "priority": "urgent", "max_attempts": 0, "timeout_ms": -5, "colour": 1}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let mut f = fields(&p);
    f.sort();
    assert_eq!(
        f,
        ["colour", "max_attempts", "priority", "queue", "timeout_ms"]
    );

    let p = problem(
        app.submit(&token, &json!([1, 2])).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("object"));

    let res = app
        .http
        .post(format!("{}/v1/jobs", app.base))
        .bearer_auth("not-a-jwt")
        .json(&json!({"kind": "echo"}))
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::UNAUTHORIZED).await;

    let (status, p) = app.get(&token, "/v1/jobs?limit=0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), ["limit"]);
    let (status, p) = app.get(&token, "/v1/jobs?status=exploded").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), ["status"]);
    assert_eq!(
        app.get(&token, "/v1/jobs/not-a-uuid").await.0,
        StatusCode::NOT_FOUND
    );

    assert_eq!(
        app.stream_messages().await,
        0,
        "a refused request must publish nothing"
    );
}
db_test!(malformed_submissions_are_refused_and_nothing_is_published);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_openapi_are_served() {
    let app = TestApp::with(Backend::Sqlite, Options::api_only()).await;
    let get = |path: &'static str| {
        let (http, base) = (&app.http, &app.base);
        async move { http.get(format!("{base}{path}")).send().await.unwrap() }
    };
    assert_eq!(get("/healthz").await.status(), StatusCode::OK);
    let ready: Value = get("/readyz").await.json().await.unwrap();
    assert_eq!(
        ready,
        json!({"status": "ready", "nats": true, "stream": true, "database": true})
    );
    let doc: Value = get("/openapi.json").await.json().await.unwrap();
    assert!(doc["paths"]["/v1/jobs"]["post"].is_object(), "{doc}");
    assert!(doc["paths"]["/v1/jobs/{id}"]["get"].is_object());
}
