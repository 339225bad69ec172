//! The catalogue of kinds (`GET /v1/kinds`), payload validation against each
//! kind's JSON Schema, custom kinds; and the helpers the real-kind tests share.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use jobstream_core::kinds::{Catalogue, KindDef, KindSource};
use jobstream_testkit::{Backend, workspace_root};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, db_test};

/// A child process killed when the test ends.
pub(crate) struct ChildProcess {
    _child: tokio::process::Child,
    pub(crate) log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ChildProcess {
    /// `python3 args…` with the project's Python tools and the test fixtures
    /// (`jobstream/tests/fixtures`) on `PYTHONPATH`, output into a log file.
    pub(crate) fn python(args: &[&str]) -> ChildProcess {
        let tools = workspace_root().join(".tools/python");
        assert!(
            tools.join("aiosmtpd").is_dir() && tools.join("nats").is_dir(),
            "the Python test tools are missing: run scripts/install-python-tools.sh (make test does)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("output.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = tokio::process::Command::new("python3")
            .args(args)
            .current_dir(workspace_root())
            .env(
                "PYTHONPATH",
                std::env::join_paths([tools, workspace_root().join("jobstream/tests/fixtures")])
                    .expect("PYTHONPATH"),
            )
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("start python3");
        ChildProcess {
            _child: child,
            log,
            _dir: dir,
        }
    }

    /// What the process printed so far.
    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A free TCP port on the loopback interface.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until something accepts connections on `port`.
pub(crate) async fn wait_for_port(port: u16, what: &str) {
    jobstream_testkit::eventually(what, Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

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

fn reverse_kind() -> KindDef {
    serde_json::from_value(json!({
        "name": "text.reverse",
        "description": "Reverses a text.",
        "queue": "python",
        "max_attempts": 2,
        "timeout_ms": 5000,
        "payload_schema": {"type": "object", "required": ["text"], "additionalProperties": false,
                           "properties": {"text": {"type": "string"}}}
    }))
    .expect("kind")
}

async fn kinds_are_listed_and_payloads_are_checked_against_their_schema(backend: Backend) {
    let catalogue = Catalogue::with_custom(vec![reverse_kind()]).expect("catalogue");
    let app = TestApp::with(
        backend,
        Options {
            kinds: catalogue,
            ..Options::api_only()
        },
    )
    .await;
    let token = app.token("alice", false);

    let (status, list) = app.get(&token, "/v1/kinds").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    for expected in [
        "echo",
        "sleep",
        "fail",
        "email.send",
        "email.registration",
        "image.thumbnail",
        "http.request",
        "text.reverse",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let (status, thumb) = app.get(&token, "/v1/kinds/image.thumbnail").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        thumb["defaults"],
        json!({"queue": "default", "max_attempts": 3, "timeout_ms": 120000})
    );
    assert_eq!(thumb["source"], "builtin");
    assert_eq!(
        thumb["payload_schema"]["required"],
        json!(["file_id", "width", "height"])
    );
    let (_, custom) = app.get(&token, "/v1/kinds/text.reverse").await;
    assert_eq!(
        (
            custom["source"].as_str(),
            custom["defaults"]["queue"].as_str()
        ),
        (Some("custom"), Some("python"))
    );
    assert_eq!(
        app.get(&token, "/v1/kinds/nope").await.0,
        StatusCode::NOT_FOUND
    );
    let (_, doc) = app.get(&token, "/openapi.json").await;
    for path in [
        "/v1/kinds",
        "/v1/kinds/{name}",
        "/v1/files",
        "/v1/files/{id}",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert_eq!(
        app.http
            .get(format!("{}/v1/kinds", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // Each violation names its field; nothing is published.
    let cases = [
        (
            json!({"kind": "image.thumbnail", "payload": {"file_id": uuid::Uuid::now_v7(), "width": 0, "height": 10}}),
            vec!["payload.width"],
        ),
        (
            json!({"kind": "image.thumbnail", "payload": {"file_id": "x", "width": 10, "height": 10, "format": "bmp"}}),
            vec!["payload.file_id", "payload.format"],
        ),
        (
            json!({"kind": "email.send", "payload": {"to": "nobody", "subject": "hi", "text": "x"}}),
            vec!["payload.to"],
        ),
        (
            json!({"kind": "email.registration", "payload": {"to": "a@example.com", "name": "Ann"}}),
            vec!["payload.user_id"],
        ),
        (
            json!({"kind": "http.request", "payload": {"url": "file:///etc/passwd"}}),
            vec!["payload.url"],
        ),
        (
            json!({"kind": "http.request", "payload": {"url": "https://example.com", "timeout_ms": 0}}),
            vec!["payload.timeout_ms"],
        ),
        (
            json!({"kind": "text.reverse", "payload": {"text": 5}}),
            vec!["payload.text"],
        ),
        (json!({"kind": "sleep", "payload": {}}), vec!["payload.ms"]),
    ];
    for (body, expected) in cases {
        let res = app.submit(&token, &body).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let p: Value = res.json().await.unwrap();
        assert_eq!(fields(&p), expected, "{body}: {p}");
    }
    assert_eq!(
        app.stream_messages().await,
        0,
        "a refused submission must publish nothing"
    );

    // Valid payloads are accepted, custom kinds get their defaults.
    let job = app
        .submit_job(
            &token,
            &json!({"kind": "text.reverse", "payload": {"text": "abc"}}),
        )
        .await;
    assert_eq!(
        (job.queue.as_str(), job.max_attempts, job.timeout_ms),
        ("python", 2, 5000)
    );
    app.submit_job(
        &token,
        &json!({"kind": "email.registration", "payload": {"to": "ann@example.com", "name": "Ann", "user_id": "u-1"}}),
    )
    .await;
}
db_test!(kinds_are_listed_and_payloads_are_checked_against_their_schema);

#[test]
fn kinds_file_of_the_python_example_loads() {
    let path = workspace_root().join("examples/python-worker/kinds.json");
    let c = Catalogue::from_file(&path).expect("examples/python-worker/kinds.json");
    let k = c.find("text.reverse").expect("text.reverse");
    assert_eq!((k.queue.as_str(), k.source), ("python", KindSource::Custom));
}
