//! `http.request` against a real HTTP server on loopback (axum, port 0), with
//! the loopback network allow-listed; and refusal of loopback without it.
//! (Private and link-local ranges are covered by the worker's unit tests, so
//! these tests never address anything but loopback.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use jobstream_core::EventType;
use jobstream_core::kinds::Catalogue;
use jobstream_testkit::Backend;
use jobstream_worker::webhook::WebhookConfig;
use serde_json::{Value, json};

use crate::helpers::RealKinds;
use crate::helpers::{TestApp, db_test};

/// A loopback HTTP server counting the requests it gets.
struct Target {
    base: String,
    hits: Arc<AtomicUsize>,
    _server: tokio::task::JoinHandle<()>,
}

async fn target() -> Target {
    let hits = Arc::new(AtomicUsize::new(0));
    let flaky = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new()
        .route(
            "/hook",
            any(|headers: HeaderMap, body: String| async move {
                let signature = headers
                    .get("x-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                (
                    [("x-received", "yes")],
                    axum::Json(json!({"got": body, "signature": signature, "content_type": ct})),
                )
            }),
        )
        .route(
            "/flaky",
            get(move || {
                let n = flaky.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response()
                    } else {
                        "finally".into_response()
                    }
                }
            }),
        )
        .route(
            "/missing",
            any(|| async { (StatusCode::NOT_FOUND, "no such hook") }),
        )
        .route("/big", get(|| async { "x".repeat(300_000) }))
        .route(
            "/redirect",
            get(|| async {
                (
                    StatusCode::FOUND,
                    [("location", "http://169.254.169.254/latest/meta-data")],
                )
            }),
        )
        .layer(axum::middleware::from_fn(
            move |req, next: axum::middleware::Next| {
                let h = h.clone();
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    next.run(req).await
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Target {
        base,
        hits,
        _server: server,
    }
}

fn allow_loopback() -> RealKinds {
    RealKinds {
        webhook: WebhookConfig {
            allow: vec!["127.0.0.1/32".parse().unwrap()],
            max_response_bytes: 1024,
            ..WebhookConfig::default()
        },
        ..RealKinds::default()
    }
}

async fn webhooks_are_called_retried_on_5xx_and_failed_on_4xx(backend: Backend) {
    let t = target().await;
    let app = TestApp::with_real_kinds(backend, allow_loopback(), Catalogue::builtin()).await;
    let token = app.token("alice", false);

    let row = app
        .run_job(
            &token,
            &json!({"kind": "http.request", "payload": {
            "method": "POST", "url": format!("{}/hook", t.base),
            "headers": {"X-Signature": "sha256=abc"}, "body": {"event": "user.created", "id": 7}}}),
        )
        .await;
    assert_eq!(row.status, "succeeded", "{:?}", row.error);
    let result = row.result.unwrap();
    assert_eq!(result["status"], 200);
    assert_eq!(result["headers"]["x-received"], "yes");
    let body: Value = serde_json::from_str(result["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["signature"], "sha256=abc");
    assert_eq!(body["content_type"], "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(body["got"].as_str().unwrap()).unwrap(),
        json!({"event": "user.created", "id": 7})
    );

    let row = app
        .run_job(&token, &json!({"kind": "http.request", "max_attempts": 5, "payload": {"method": "GET", "url": format!("{}/flaky", t.base)}}))
        .await;
    assert_eq!(
        (row.status.as_str(), row.attempt),
        ("succeeded", 3),
        "{:?}",
        row.error
    );
    let retries = app.events_of(&row.id, EventType::Retrying).await;
    assert_eq!(retries.len(), 2, "two 503s, two retries");

    let row = app
        .run_job(&token, &json!({"kind": "http.request", "max_attempts": 5, "payload": {"url": format!("{}/missing", t.base), "body": "x"}}))
        .await;
    assert_eq!(
        (row.status.as_str(), row.attempt),
        ("failed", 1),
        "a 4xx is not retried"
    );
    assert!(
        row.error.as_deref().unwrap_or("").contains("404"),
        "{:?}",
        row.error
    );
    assert!(app.events_of(&row.id, EventType::Retrying).await.is_empty());

    let row = app
        .run_job(&token, &json!({"kind": "http.request", "payload": {"method": "GET", "url": format!("{}/big", t.base)}}))
        .await;
    let result = row.result.unwrap();
    assert_eq!(
        (
            result["body"].as_str().unwrap().len(),
            result["body_truncated"].as_bool()
        ),
        (1024, Some(true))
    );

    // Redirects are not followed (the target could be an internal address): the 302 is the result.
    let hits_before = t.hits.load(Ordering::SeqCst);
    let row = app
        .run_job(&token, &json!({"kind": "http.request", "payload": {"method": "GET", "url": format!("{}/redirect", t.base)}}))
        .await;
    assert_eq!(row.result.unwrap()["status"], 302);
    assert_eq!(
        t.hits.load(Ordering::SeqCst),
        hits_before + 1,
        "the redirect was not followed"
    );
}
db_test!(webhooks_are_called_retried_on_5xx_and_failed_on_4xx);

async fn loopback_and_private_targets_are_refused_without_an_allow_list(backend: Backend) {
    let t = target().await;
    let app = TestApp::with_real_kinds(backend, RealKinds::default(), Catalogue::builtin()).await;
    let token = app.token("alice", false);
    let port = t.base.rsplit(':').next().unwrap();
    for url in [
        format!("{}/hook", t.base),
        format!("http://localhost:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        format!("http://127.0.0.2:{port}/hook"),
    ] {
        let row = app
            .run_job(
                &token,
                &json!({"kind": "http.request", "max_attempts": 5, "payload": {"url": url}}),
            )
            .await;
        assert_eq!((row.status.as_str(), row.attempt), ("failed", 1), "{url}");
        let error = row.error.unwrap();
        assert!(
            error.contains("refused") && error.contains("not a public address"),
            "{url}: {error}"
        );
    }
    assert_eq!(
        t.hits.load(Ordering::SeqCst),
        0,
        "the loopback server was never called"
    );
}
db_test!(loopback_and_private_targets_are_refused_without_an_allow_list);
