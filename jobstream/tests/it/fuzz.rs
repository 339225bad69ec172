//! Issue 15: hostile but honest input over every route of `/openapi.json`. Whatever arrives,
//! the answer is never a 5xx, every error is `application/problem+json` with a JSON body,
//! and the process still serves afterwards. Inputs are a fixed list (no randomness), so a
//! failure names the request that caused it and reproduces.

use std::time::Duration;

use jobstream_core::limits::MAX_BODY_BYTES;
use jobstream_testkit::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::http::content_type;
use crate::helpers::{Options, TestApp, db_test};

/// Routes that may keep a valid request open (SSE, long-poll): a client timeout is fine there.
fn may_hang(path: &str) -> bool {
    path == "/v1/events" || path.ends_with("/wait")
}

fn deep(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// Bodies sent to every route that takes one, with the content type they go with.
fn bodies() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let json = "application/json";
    let mut out: Vec<(&str, &str, Vec<u8>)> = vec![
        ("malformed", json, b"{\"kind\": ".to_vec()),
        ("trailing garbage", json, b"{} x".to_vec()),
        ("array", json, b"[]".to_vec()),
        ("string", json, b"\"echo\"".to_vec()),
        ("null", json, b"null".to_vec()),
        ("number", json, b"1e999999".to_vec()),
        (
            "not utf-8",
            json,
            vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'],
        ),
        ("raw NUL", json, b"{\"kind\": \"ec\0ho\"}".to_vec()),
        ("deep 70", json, deep(70).into_bytes()),
        (
            "deep 127",
            json,
            format!("{{\"kind\":\"echo\",\"payload\":{}}}", deep(125)).into_bytes(),
        ),
        ("deep 10000", json, deep(10_000).into_bytes()),
        (
            "huge",
            json,
            format!(
                "{{\"kind\":\"echo\",\"payload\":\"{}\"}}",
                "x".repeat(MAX_BODY_BYTES + 10)
            )
            .into_bytes(),
        ),
        (
            "wrong content type",
            "text/plain",
            b"{\"kind\":\"echo\"}".to_vec(),
        ),
        ("xml", "application/xml", b"<job/>".to_vec()),
        (
            "form",
            "application/x-www-form-urlencoded",
            b"kind=echo".to_vec(),
        ),
    ];
    // Wrong types and hostile strings in every field any route knows.
    let fields = [
        "kind",
        "payload",
        "queue",
        "priority",
        "max_attempts",
        "timeout_ms",
        "run_at",
        "delay_ms",
        "idempotency_key",
        "backoff_base_ms",
        "backoff_max_ms",
        "jobs",
        "name",
        "email",
        "sub",
        "every",
        "cron",
        "reason",
        "from_seq",
        "since",
        "job_ttl_secs",
        "fresh",
    ];
    let hostile = [
        json!(-1),
        json!(1.5),
        json!(u64::MAX),
        json!(true),
        json!([]),
        json!({}),
        json!("a\u{0}b"),
        json!("\u{1}\u{7}\u{1b}[31m\u{7f}"),
        json!("a.b*c >d e"),
        json!("x".repeat(5000)),
        json!("9999-99-99T99:99:99Z"),
    ];
    for (i, v) in hostile.iter().enumerate() {
        let mut obj = serde_json::Map::new();
        for f in fields {
            obj.insert(f.to_owned(), v.clone());
        }
        out.push(("hostile fields", json, serde_json::to_vec(&obj).unwrap()));
        // One field at a time on a valid job, so the field parsers are reached.
        for f in fields.iter().skip(i % 3).step_by(3) {
            let body = json!({"kind": "echo", "name": format!("fz{i}"), "every": "1h", "email": format!("fz{i}@example.com"), f.to_owned(): v});
            out.push((
                "one hostile field",
                json,
                serde_json::to_vec(&body).unwrap(),
            ));
        }
        out.push((
            "hostile batch",
            json,
            serde_json::to_vec(&json!({"jobs": [{"kind": "echo", "payload": v}, v]})).unwrap(),
        ));
    }
    out
}

/// Values for path parameters.
const IDS: [&str; 12] = [
    ".",
    "*",
    ">",
    "a%20b",
    "a.b",
    "%00",
    "%FF",
    "%2F",
    "..",
    "a%0Ab",
    "00000000-0000-0000-0000-000000000000",
    "x",
];

/// The connection was closed while the request body was still being written.
fn cut_off_while_sending(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            )
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// Checks one answer: no 5xx; an error is a problem document.
async fn check(what: &str, res: Result<reqwest::Response, reqwest::Error>, path: &str) {
    let res = match res {
        Ok(r) => r,
        Err(e) if e.is_timeout() && may_hang(path) => return,
        // HTTP lets a server answer (here: refuse) before it has read a large body and
        // close the connection; the client then fails writing the rest. The test's end
        // checks that the server still serves.
        Err(e) if cut_off_while_sending(&e) => return,
        Err(e) => panic!("{what}: no answer: {e:?}"),
    };
    let (status, ct) = (res.status(), content_type(res.headers()).to_owned());
    let body = res.bytes().await.unwrap_or_default();
    let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    assert!(!status.is_server_error(), "{what}: {status} {shown}");
    if status.is_client_error() {
        assert_eq!(ct, "application/problem+json", "{what}: {status} {shown}");
        let p: Value =
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{what}: {e}: {shown}"));
        assert_eq!(p["status"], status.as_u16(), "{what}: {shown}");
        assert!(p["detail"].is_string(), "{what}: {shown}");
    }
}

async fn every_route_survives_hostile_input(backend: Backend) {
    let app = TestApp::with(backend, Options::default()).await;
    let admin = app.token("root", true);
    let user = app.token("alice", false);
    let job = app.submit_job(&user, &json!({"kind": "echo"})).await;
    let job_id = job.id.to_string();
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().expect("paths").clone();
    assert!(paths.len() >= 15, "the document lists the routes");
    // One connection per request: a server that answers before reading a bad body closes
    // the connection, and a pooled reuse of it would be a client-side error, not the API's.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(8))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let bodies = bodies();
    let mut sent = 0usize;
    for (template, ops) in &paths {
        let documented: Vec<Method> = ops
            .as_object()
            .unwrap()
            .keys()
            .filter_map(|m| m.to_uppercase().parse().ok())
            .collect();
        // A real id, then hostile ones.
        let fills: Vec<String> = if template.contains('{') {
            std::iter::once(job_id.clone())
                .chain(IDS.iter().map(|s| (*s).to_owned()))
                .collect()
        } else {
            vec![String::new()]
        };
        for fill in &fills {
            let path = template
                .split('/')
                .map(|seg| {
                    if seg.starts_with('{') {
                        fill.as_str()
                    } else {
                        seg
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            // Hostile queries on every method the route documents, plus methods it does not.
            for method in [
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ] {
                for (token, q) in [
                    (
                        &admin,
                        "?limit=-1&cursor=%00&status=%FF&timeout=zz&owner=a%00b&job_id=*&type=>&queue=a%20b",
                    ),
                    (&user, "?limit=99999999999999999999&timeout=1m&kind=%C0%AF"),
                ] {
                    let url = format!("{}{path}{q}", app.base);
                    let res = http
                        .request(method.clone(), &url)
                        .bearer_auth(token)
                        .send()
                        .await;
                    check(&format!("{method} {url}"), res, template).await;
                    sent += 1;
                }
                if !documented.contains(&method)
                    || method == Method::GET
                    || method == Method::DELETE
                {
                    continue;
                }
                for (name, ct, body) in &bodies {
                    for token in [&admin, &user] {
                        let url = format!("{}{path}", app.base);
                        let res = http
                            .request(method.clone(), &url)
                            .bearer_auth(token)
                            .header("content-type", *ct)
                            .body(body.clone())
                            .send()
                            .await;
                        check(&format!("{method} {url} [{name}]"), res, template).await;
                        sent += 1;
                    }
                }
            }
        }
    }
    // Unauthenticated and badly authenticated requests are problems too.
    for auth in [
        &b""[..],
        b"Bearer",
        b"Bearer a.b.c",
        b"Basic Zm9vOmJhcg==",
        b"Bearer \xff\xfe",
    ] {
        let value = reqwest::header::HeaderValue::from_bytes(auth).unwrap();
        let res = http
            .get(format!("{}/v1/jobs", app.base))
            .header("authorization", value)
            .send()
            .await;
        check(&format!("GET /v1/jobs with {auth:?}"), res, "/v1/jobs").await;
    }
    eprintln!("{sent} hostile requests over {} routes", paths.len());
    // Still serving: health and a normal job that runs to the end.
    assert_eq!(
        http.get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let job = app
        .submit_job(
            &user,
            &json!({"kind": "echo", "payload": {"after": "fuzz"}}),
        )
        .await;
    app.wait_for_row(
        &job.id.to_string(),
        "a normal job after the fuzz succeeds",
        |r| r.status == "succeeded",
    )
    .await;
}
db_test!(every_route_survives_hostile_input);
