//! One trace per job: a client's `traceparent` reaches every event of the job (NATS
//! headers), the worker's and the projector's log lines about it, the projection and
//! `GET /v1/jobs/{id}`; a job submitted without one starts its own trace.
//!
//! The worker and the projector run as `jobstream worker` / `jobstream projector` child
//! processes with JSON logs, as in production, so the test reads their real log lines.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use jobstream_core::event::TRACEPARENT_HEADER;
use jobstream_core::trace::TraceParent;
use jobstream_entity::queued_job;
use jobstream_testkit::{Backend, eventually};
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Options, TestApp, WAIT, db_test};

const CLIENT_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A `jobstream` child process whose JSON log lines (stderr) the test reads.
struct LoggedProcess {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl LoggedProcess {
    fn start(app: &TestApp, args: &[&str], data_dir: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_jobstream"))
            .args(args)
            .env("NATS_URL", app.nats.url())
            .env("DATABASE_URL", &app.db.url)
            .env("DATA_DIR", data_dir)
            .env("LOG_JSON", "true")
            // Per-job lines are at debug: a job that just succeeds logs nothing at info.
            .env(
                "RUST_LOG",
                "info,jobstream_worker=debug,jobstream_projector=debug",
            )
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start jobstream");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        LoggedProcess { child, lines }
    }

    /// Waits for a log line about `job_id` and returns it.
    async fn line_about(&self, what: &str, job_id: &str) -> Value {
        eventually(what, WAIT, || async {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| field(l, "job_id") == Some(job_id))
                .cloned()
        })
        .await
    }
}

impl Drop for LoggedProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of a JSON log line: on the event itself or on one of its spans.
fn field<'a>(line: &'a Value, name: &str) -> Option<&'a str> {
    line[name].as_str().or_else(|| {
        line["spans"]
            .as_array()?
            .iter()
            .chain(std::iter::once(&line["span"]))
            .find_map(|s| s[name].as_str())
    })
}

/// The job's row, once the projector has folded its outcome.
async fn projected(app: &TestApp, id: &str) -> queued_job::Model {
    eventually("the job's outcome in the projection", WAIT, || async {
        queued_job::Entity::find_by_id(id.to_owned())
            .one(&app.db.conn)
            .await
            .expect("query")
            .filter(|r| r.status == "succeeded")
    })
    .await
}

/// The `traceparent` header of every stored event of the job, in order.
async fn event_traceparents(app: &TestApp, job_id: &str) -> Vec<(String, Option<String>)> {
    let stream = app.broker.stream().await.expect("stream");
    let filter = jobstream_core::subject::of_job(Uuid::parse_str(job_id).unwrap());
    let mut out = Vec::new();
    let mut next = 1;
    loop {
        match stream.get_first_raw_message_by_subject(&filter, next).await {
            Ok(msg) => {
                next = msg.sequence + 1;
                let tp = msg
                    .headers
                    .get(TRACEPARENT_HEADER)
                    .map(|v| v.as_str().to_owned());
                out.push((msg.subject.to_string(), tp));
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return out,
            Err(e) => panic!("reading the job's events: {e}"),
        }
    }
}

async fn a_client_traceparent_follows_the_job_through_worker_projector_and_get(backend: Backend) {
    let app = TestApp::with(backend, Options::api_only()).await;
    let data = tempfile::tempdir().expect("data dir");
    let projector = LoggedProcess::start(&app, &["projector"], data.path());
    let worker = LoggedProcess::start(&app, &["worker"], data.path());
    let token = app.token("alice", false);

    let res = app
        .http
        .post(format!("{}/v1/jobs", app.base))
        .bearer_auth(&token)
        .header("traceparent", CLIENT_TRACEPARENT)
        .json(&json!({"kind": "echo", "payload": {"hello": "trace"}}))
        .send()
        .await
        .expect("submit");
    assert_eq!(res.status(), 202);
    let submitted: Value = res.json().await.expect("body");
    assert_eq!(submitted["trace_id"], CLIENT_TRACE_ID, "{submitted}");
    let id = submitted["id"].as_str().unwrap().to_owned();

    let job = eventually("the job succeeded in the projection", WAIT, || async {
        app.job(&token, &id)
            .await
            .filter(|j| j.status == "succeeded")
    })
    .await;
    assert_eq!(job.trace_id.as_deref(), Some(CLIENT_TRACE_ID));
    let row = projected(&app, &id).await;
    assert_eq!(row.trace_id.as_deref(), Some(CLIENT_TRACE_ID));

    // Every event of the job carries the client's trace (each with its writer's span id).
    let events = event_traceparents(&app, &id).await;
    assert!(events.len() >= 2, "queued and its outcome: {events:?}");
    for (subject, tp) in &events {
        let tp = tp
            .as_deref()
            .unwrap_or_else(|| panic!("{subject}: no traceparent"));
        let parsed = TraceParent::parse(tp).unwrap_or_else(|| panic!("{subject}: {tp}"));
        assert_eq!(parsed.trace_id().to_string(), CLIENT_TRACE_ID, "{subject}");
    }

    for (who, process) in [("worker", &worker), ("projector", &projector)] {
        let line = process
            .line_about(&format!("a {who} log line about the job"), &id)
            .await;
        assert_eq!(
            field(&line, "trace_id"),
            Some(CLIENT_TRACE_ID),
            "{who}: {line}"
        );
        assert!(
            field(&line, "request_id").is_some_and(|r| !r.is_empty()),
            "{who}: {line}"
        );
    }
}
db_test!(a_client_traceparent_follows_the_job_through_worker_projector_and_get);

async fn a_job_without_traceparent_starts_its_own_trace_and_a_replay_keeps_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("bob", false);
    // A malformed header is ignored, never refused.
    let res = app
        .http
        .post(format!("{}/v1/jobs", app.base))
        .bearer_auth(&token)
        .header("traceparent", "00-not-a-trace-01")
        .json(&json!({"kind": "echo", "payload": 1}))
        .send()
        .await
        .expect("submit");
    assert_eq!(res.status(), 202);
    let submitted: Value = res.json().await.expect("body");
    let id = submitted["id"].as_str().unwrap().to_owned();
    let trace_id = submitted["trace_id"]
        .as_str()
        .expect("a trace id")
        .to_owned();
    assert_eq!(trace_id.len(), 32);
    assert_ne!(trace_id, CLIENT_TRACE_ID);

    let job = eventually("the job succeeded", WAIT, || async {
        app.job(&token, &id)
            .await
            .filter(|j| j.status == "succeeded")
    })
    .await;
    assert_eq!(job.trace_id.as_deref(), Some(trace_id.as_str()));
    let row = projected(&app, &id).await;
    assert_eq!(row.trace_id.as_deref(), Some(trace_id.as_str()));
    for (subject, tp) in event_traceparents(&app, &id).await {
        let tp = TraceParent::parse(tp.as_deref().unwrap_or_default())
            .unwrap_or_else(|| panic!("{subject}: no valid traceparent"));
        assert_eq!(tp.trace_id().to_string(), trace_id, "{subject}");
    }

    // The tables rebuilt from the stream hold the same trace id.
    let fresh = app.clean_fold("trace-replay").await;
    let row = queued_job::Entity::find_by_id(id.clone())
        .one(&fresh.conn)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.trace_id.as_deref(), Some(trace_id.as_str()));
}
db_test!(a_job_without_traceparent_starts_its_own_trace_and_a_replay_keeps_it);
