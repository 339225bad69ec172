//! Issue 15, defects 3, 4 and 6: text PostgreSQL cannot hold, nesting the readers cannot
//! decode, and every error from every layer as `application/problem+json` with the right status.

use jobstream_core::limits::MAX_JSON_DEPTH;
use jobstream_core::stream_read;
use jobstream_testkit::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, WAIT, db_test};

/// Asserts a problem document with `status`; returns its body.
pub(crate) async fn problem(res: reqwest::Response, status: StatusCode) -> Value {
    let url = res.url().clone();
    assert_eq!(res.status(), status, "{url}");
    let ct = res.headers().get("content-type").cloned();
    let body = res.text().await.unwrap();
    assert_eq!(
        ct.as_ref().and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{url}: {body}"
    );
    let p: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"));
    assert_eq!(p["status"], status.as_u16(), "{url}: {p}");
    p
}

/// `method path` as the holder of `token`, with a raw body and the content type given (none if `None`).
async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    content_type: Option<&str>,
    body: Option<&str>,
) -> reqwest::Response {
    let mut req = app.request_at(&app.base, method, path, token);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(b) = body {
        req = req.body(b.to_owned());
    }
    req.send().await.expect("request")
}

/// A request of a table: method, path, token, content type, body; and the status the API
/// must answer it with.
type Case<'a> = (
    Method,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    StatusCode,
);

fn fields(p: &Value) -> Vec<String> {
    p["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|f| f["field"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `{"a": {"a": … 1 …}}`, `depth` objects deep.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |v, _| json!({ "a": v }))
}

async fn nul_characters_are_refused_at_the_door(backend: Backend) {
    let app = TestApp::with(backend, Options::without_worker()).await;
    let admin = app.token("root", true);
    let token = app.token("alice", false);
    let cases: [(Method, &str, &str, Value, &str); 7] = [
        (
            Method::POST,
            "/v1/jobs",
            "alice",
            json!({"kind": "echo", "payload": {"t": "a\u{0}b"}}),
            "payload.t",
        ),
        (
            Method::POST,
            "/v1/jobs",
            "alice",
            json!({"kind": "echo", "payload": {"k\u{0}": 1}}),
            "payload",
        ),
        (
            Method::POST,
            "/v1/jobs/batch",
            "alice",
            json!({"jobs": [{"kind": "echo"}, {"kind": "echo", "payload": ["\u{0}"]}]}),
            "jobs[1].payload[0]",
        ),
        (
            Method::POST,
            "/v1/schedules",
            "alice",
            json!({"name": "n", "every": "1h", "kind": "echo", "payload": {"x": "\u{0}"}}),
            "payload.x",
        ),
        (
            Method::POST,
            "/v1/users",
            "root",
            json!({"email": "nul@example.com", "name": "Nul\u{0}Man"}),
            "name",
        ),
        (
            Method::PATCH,
            "/v1/users/me",
            "alice",
            json!({"name": "x\u{0}"}),
            "name",
        ),
        (
            Method::POST,
            "/v1/jobs",
            "alice",
            json!({"kind": "echo", "idempotency_key": "k\u{0}"}),
            "idempotency_key",
        ),
    ];
    for (method, path, who, body, field) in cases {
        let t = if who == "root" { &admin } else { &token };
        let p = app
            .send_json(method, path, t, &body)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(fields(&p).iter().any(|f| f == field), "{path} {body}: {p}");
    }
    // A cancel reason enters the stream too.
    let job = app.submit_job(&token, &json!({"kind": "echo"})).await;
    let id = &job.id.to_string();
    let cancel = format!("/v1/jobs/{id}/cancel");
    let p = app
        .send_json(Method::POST, &cancel, &token, &json!({"reason": "\u{0}"}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), ["reason"]);
    // The projection keeps folding: a later job is projected.
    let job = app
        .submit_job(&token, &json!({"kind": "echo", "payload": {"ok": true}}))
        .await;
    app.wait_for_row(&job.id.to_string(), "later job projected", |_| true)
        .await;
    let _ = WAIT;
}
db_test!(nul_characters_are_refused_at_the_door);

async fn nesting_beyond_the_limit_is_refused_with_the_field_named(backend: Backend) {
    let app = TestApp::with(backend, Options::api_only()).await;
    let token = app.token("alice", false);
    // At the limit (counting the body object itself) is fine.
    app.submit_job(
        &token,
        &json!({"kind": "echo", "payload": nested(MAX_JSON_DEPTH - 2)}),
    )
    .await;
    for depth in [MAX_JSON_DEPTH, 120, 126, 200] {
        let p = problem(
            app.submit(&token, &json!({"kind": "echo", "payload": nested(depth)}))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(
            fields(&p)
                .iter()
                .any(|f| f.starts_with("payload") || f == "body"),
            "{depth}: {p}"
        );
        let body = json!({"name": format!("deep{depth}"), "every": "1h", "kind": "echo", "payload": nested(depth)});
        let p = app
            .send_json(Method::POST, "/v1/schedules", &token, &body)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(!fields(&p).is_empty(), "{depth}: {p}");
    }
    // 5000 levels as raw text: serde_json's own limit must not turn into a 400 or a 500.
    let deep = format!(
        "{{\"kind\":\"echo\",\"payload\":{}1{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let json = Some("application/json");
    let res = raw(&app, Method::POST, "/v1/jobs", &token, json, Some(&deep)).await;
    problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
}
db_test!(nesting_beyond_the_limit_is_refused_with_the_field_named);

async fn a_schedule_record_no_reader_can_decode_can_still_be_deleted(backend: Backend) {
    use jobstream_core::atomic::Outgoing;
    use jobstream_core::schedule;
    let app = TestApp::with(backend, Options::api_only()).await;
    let token = app.token("alice", false);
    let body = json!({"name": "deep", "every": "1h", "kind": "echo", "payload": {"x": 1}});
    let res = app
        .send_json(Method::POST, "/v1/schedules", &token, &body)
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    // What an older API stored: the same record with a payload nested past serde_json's limit.
    let key = schedule::schedule_key("alice", "deep");
    let last = app
        .broker
        .last_on_subject(&schedule::subject(&key))
        .await
        .unwrap()
        .unwrap();
    let mut rec: Value = serde_json::from_slice(&last.payload).unwrap();
    fn deepen(v: &mut Value) -> bool {
        match v {
            Value::Object(m) => {
                if let Some(p) = m.get_mut("payload") {
                    *p = nested(140);
                    return true;
                }
                m.values_mut().any(deepen)
            }
            _ => false,
        }
    }
    assert!(deepen(&mut rec), "record has a payload: {rec}");
    app.broker
        .publish_atomic(vec![Outgoing::new(
            schedule::subject(&key),
            serde_json::to_vec(&rec).unwrap(),
        )])
        .await
        .unwrap();
    let delete = || {
        raw(
            &app,
            Method::DELETE,
            "/v1/schedules/deep",
            &token,
            None,
            None,
        )
    };
    let res = delete().await;
    assert_eq!(
        res.status(),
        StatusCode::NO_CONTENT,
        "{:?}",
        res.text().await
    );
    problem(delete().await, StatusCode::NOT_FOUND).await;
}
db_test!(a_schedule_record_no_reader_can_decode_can_still_be_deleted);

async fn every_layer_answers_problem_json(backend: Backend) {
    let app = TestApp::with(backend, Options::api_only()).await;
    let token = app.token("alice", false);
    let admin = app.token("root", true);

    // Path parameters that are not UTF-8, on every route that has one.
    for (m, p) in [
        (Method::GET, "/v1/jobs/%FF"),
        (Method::GET, "/v1/jobs/%FF/events"),
        (Method::GET, "/v1/jobs/%FF/wait"),
        (Method::POST, "/v1/jobs/%FF/cancel"),
        (Method::POST, "/v1/jobs/%FF/retry"),
        (Method::GET, "/v1/kinds/%FF"),
        (Method::GET, "/v1/files/%FF"),
        (Method::DELETE, "/v1/schedules/%FF"),
    ] {
        problem(
            raw(&app, m, p, &token, None, None).await,
            StatusCode::NOT_FOUND,
        )
        .await;
    }

    // A negative sequence is a bad field, not a bad request.
    let p = app
        .send_json(
            Method::POST,
            "/v1/admin/replay",
            &admin,
            &json!({"from_seq": -1}),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), ["from_seq"]);

    // `1m` is what the docs offer.
    let job = app.submit_job(&token, &json!({"kind": "echo"})).await;
    let id = &job.id.to_string();
    let res = app
        .http
        .get(format!("{}/v1/jobs/{id}/wait?timeout=1m&x=1", app.base))
        .bearer_auth(&token)
        .timeout(std::time::Duration::from_millis(300))
        .send()
        .await;
    assert!(
        res.is_err() || res.unwrap().status() == StatusCode::OK,
        "1m accepted"
    );
    let soon = format!("/v1/jobs/{id}/wait?timeout=soon");
    let res = raw(&app, Method::GET, &soon, &token, None, None).await;
    let p = problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(fields(&p), ["timeout"]);

    // 405 keeps its Allow header.
    let res = raw(&app, Method::PUT, "/v1/jobs", &token, None, None).await;
    assert!(res.headers().get("allow").is_some());
    problem(res, StatusCode::METHOD_NOT_ALLOWED).await;
    let json = Some("application/json");
    let big = format!(
        "{{\"kind\":\"echo\",\"payload\":\"{}\"}}",
        "x".repeat(jobstream_core::limits::MAX_BODY_BYTES + 1)
    );
    let cancel = format!("/v1/jobs/{id}/cancel");
    let mut cases: Vec<Case> = vec![
        // 415: no or a wrong content type.
        (
            Method::POST,
            "/v1/jobs",
            &token,
            None,
            Some("{\"kind\":\"echo\"}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            Method::POST,
            "/v1/schedules",
            &token,
            Some("text/plain"),
            Some("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        // JSON syntax.
        (
            Method::POST,
            "/v1/users",
            &admin,
            json,
            Some("{"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/admin/replay",
            &admin,
            json,
            Some("{"),
            StatusCode::BAD_REQUEST,
        ),
        // A query that does not deserialize.
        (
            Method::GET,
            "/v1/jobs?limit=many",
            &token,
            None,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::GET,
            "/v1/events?job_id=%FF",
            &token,
            None,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    // Oversized JSON bodies are 413, on every JSON route.
    for path in [
        "/v1/jobs",
        "/v1/jobs/batch",
        "/v1/schedules",
        "/v1/users",
        "/v1/admin/replay",
        &cancel,
    ] {
        cases.push((
            Method::POST,
            path,
            &admin,
            json,
            Some(&big),
            StatusCode::PAYLOAD_TOO_LARGE,
        ));
    }
    for (method, path, who, content_type, body, status) in cases {
        problem(
            raw(&app, method, path, who, content_type, body).await,
            status,
        )
        .await;
    }
    // An unknown route, without a token.
    let res = app.http.get(format!("{}/nope", app.base)).send().await;
    problem(res.unwrap(), StatusCode::NOT_FOUND).await;
}
db_test!(every_layer_answers_problem_json);

/// What the API told a client about one submission.
#[derive(Debug)]
enum Told {
    Stored,
    NotStored,
    Unknown,
}

async fn a_503_never_says_not_stored_for_a_stored_job(backend: Backend) {
    use std::sync::{Arc, Mutex};
    let mut app = TestApp::with(
        backend,
        Options {
            // Submissions in flight at a kill wait this long before their 503.
            publish_deadline: Some(std::time::Duration::from_secs(3)),
            ..Options::api_only()
        },
    )
    .await;
    let token = app.token("alice", false);
    // Register alice before the faults (her first request stores her `user.registered`).
    app.submit_job(&token, &json!({"kind": "echo", "payload": {"n": -1}}))
        .await;
    let told: Arc<Mutex<Vec<(i64, Told, String)>>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(0usize);
    let mut clients = Vec::new();
    for c in 0..4i64 {
        let (http, base, token, told, stop, done) = (
            app.http.clone(),
            app.base.clone(),
            token.clone(),
            told.clone(),
            stop_rx.clone(),
            done_tx.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut i = 0i64;
            while !*stop.borrow() {
                let n = c * 1_000_000 + i;
                i += 1;
                let res = http
                    .post(format!("{base}/v1/jobs"))
                    .bearer_auth(&token)
                    .json(&json!({"kind": "echo", "payload": {"n": n}}))
                    .send()
                    .await;
                let Ok(res) = res else { continue };
                let status = res.status();
                let retry_after = res.headers().get("retry-after").is_some();
                let body = res.text().await.unwrap_or_default();
                let t = match status {
                    StatusCode::ACCEPTED => Told::Stored,
                    StatusCode::SERVICE_UNAVAILABLE => {
                        assert!(retry_after, "a 503 carries Retry-After: {body}");
                        if body.contains("unknown whether") {
                            Told::Unknown
                        } else {
                            Told::NotStored
                        }
                    }
                    other => panic!("unexpected {other}: {body}"),
                };
                told.lock().unwrap().push((n, t, body));
                done.send_modify(|d| *d += 1);
            }
        }));
    }
    for _ in 0..3 {
        // Some submissions answered, then the server dies mid-traffic.
        let before = *done_rx.borrow();
        done_rx.wait_for(|d| *d >= before + 20).await.unwrap();
        app.nats.kill().await;
        // Requests in flight at the kill end one way or another before the restart.
        let at_kill = *done_rx.borrow();
        done_rx.wait_for(|d| *d >= at_kill + 4).await.unwrap();
        app.nats.restart().await;
    }
    let before = *done_rx.borrow();
    done_rx.wait_for(|d| *d >= before + 20).await.unwrap();
    stop_tx.send(true).unwrap();
    for c in clients {
        c.await.unwrap();
    }
    // Everything in the stream, read back once the test's own connection is back.
    let stored: std::collections::HashSet<i64> =
        jobstream_testkit::eventually("stream readable", WAIT, || async {
            let filter = jobstream_core::subject::all_events();
            let events = stream_read::read_from(&app.broker, &filter, 1, usize::MAX)
                .await
                .ok()?;
            Some(
                events
                    .iter()
                    .filter_map(|m| match stream_read::decode(m).ok()?.event {
                        jobstream_core::Event::Queued(spec) => spec.payload["n"].as_i64(),
                        _ => None,
                    })
                    .collect(),
            )
        })
        .await;
    let told = told.lock().unwrap();
    let count = |f: fn(&Told) -> bool| told.iter().filter(|(_, t, _)| f(t)).count();
    eprintln!(
        "stored {} / told: 202 {}, 503 not stored {}, 503 unknown {}",
        stored.len(),
        count(|t| matches!(t, Told::Stored)),
        count(|t| matches!(t, Told::NotStored)),
        count(|t| matches!(t, Told::Unknown))
    );
    for (n, t, body) in told.iter() {
        match t {
            Told::Stored => assert!(stored.contains(n), "202 for {n} but not in the stream"),
            Told::NotStored => assert!(
                !stored.contains(n),
                "told \"not stored\" for {n}, which is in the stream: {body}"
            ),
            Told::Unknown => {}
        }
    }
}
db_test!(a_503_never_says_not_stored_for_a_stored_job);
