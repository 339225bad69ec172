//! One trace per job: a client's `traceparent` reaches every event of the job (NATS
//! headers), the worker's and the projector's log lines about it, the projection and
//! `GET /v1/jobs/{id}`; a job submitted without one starts its own trace.
//!
//! The worker and the projector run as `jobstream worker` / `jobstream projector` child
//! processes with JSON logs, as in production, so the test reads their real log lines.
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, they and a `jobstream api` child process export
//! their spans of the job to a small OTLP/HTTP receiver in the test, under the job's trace id.

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
        Self::start_with(app, args, data_dir, &[])
    }

    /// Starts it with extra environment variables.
    fn start_with(
        app: &TestApp,
        args: &[&str],
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Self {
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
            .envs(env.iter().copied())
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

/// A delayed job that fails once and is retried: the `scheduled` event, the event its
/// timer fires, the `retrying` outcome and the final `succeeded` all carry the client's trace.
async fn a_delayed_and_retried_job_keeps_the_client_trace_on_every_event(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("carol", false);
    let res = app
        .http
        .post(format!("{}/v1/jobs", app.base))
        .bearer_auth(&token)
        .header("traceparent", CLIENT_TRACEPARENT)
        .json(
            &json!({"kind": "fail", "payload": {"times": 1}, "max_attempts": 2,
                      "backoff_base_ms": 10, "backoff_max_ms": 10, "delay_ms": 1500}),
        )
        .send()
        .await
        .expect("submit");
    assert_eq!(res.status(), 202);
    let submitted: Value = res.json().await.expect("body");
    assert_eq!(submitted["status"], "scheduled", "{submitted}");
    let id = submitted["id"].as_str().unwrap().to_owned();

    let job = eventually("the retried job succeeded", WAIT, || async {
        app.job(&token, &id)
            .await
            .filter(|j| j.status == "succeeded")
    })
    .await;
    assert_eq!(job.attempt, 2, "it failed once, then succeeded");
    assert_eq!(job.trace_id.as_deref(), Some(CLIENT_TRACE_ID));

    let events = event_traceparents(&app, &id).await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|(subject, _)| subject.rsplit('.').next().unwrap_or_default())
        .collect();
    // `queued` is the event the timer fires at `run_at`.
    for expected in ["scheduled", "queued", "retrying", "succeeded"] {
        assert!(kinds.contains(&expected), "{expected} in {kinds:?}");
    }
    for (subject, tp) in &events {
        let tp = tp
            .as_deref()
            .unwrap_or_else(|| panic!("{subject}: no traceparent"));
        let parsed = TraceParent::parse(tp).unwrap_or_else(|| panic!("{subject}: {tp}"));
        assert_eq!(parsed.trace_id().to_string(), CLIENT_TRACE_ID, "{subject}");
    }
}
db_test!(a_delayed_and_retried_job_keeps_the_client_trace_on_every_event);

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

/// What an OTLP/HTTP receiver got: (service name, trace id in hex, span name) per span.
type ReceivedSpans = Arc<Mutex<Vec<(String, String, String)>>>;

/// A tiny OTLP/HTTP (protobuf) trace receiver on a free port; returns its base URL.
async fn otlp_receiver(spans: ReceivedSpans) -> String {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;

    let route = axum::routing::post(move |body: axum::body::Bytes| {
        let spans = spans.clone();
        async move {
            let Ok(req) = ExportTraceServiceRequest::decode(body) else {
                return axum::http::StatusCode::BAD_REQUEST;
            };
            let mut got = spans.lock().unwrap();
            for rs in req.resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| a.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(
                            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                s,
                            ),
                        ) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                    let trace: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                    got.push((service.clone(), trace, span.name));
                }
            }
            axum::http::StatusCode::OK
        }
    });
    let app = axum::Router::new().route("/v1/traces", route);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn api_worker_and_projector_export_the_jobs_spans_under_its_trace_over_otlp(
    backend: Backend,
) {
    use secrecy::ExposeSecret as _;

    let app = TestApp::with(backend, Options::api_only()).await;
    let data = tempfile::tempdir().expect("data dir");
    let spans: ReceivedSpans = Arc::default();
    let endpoint = otlp_receiver(spans.clone()).await;
    let otel = |service: &'static str| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_SERVICE_NAME", service.to_owned()),
            // Batches go out every 100 ms instead of every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ]
    };
    let start = |args: &[&str], env: Vec<(&str, String)>| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        LoggedProcess::start_with(&app, args, data.path(), &env)
    };
    let _projector = start(&["projector"], otel("jobstream-projector"));
    let _worker = start(&["worker"], otel("jobstream-worker"));
    // The API as a child process too (the test process's own subscriber has no exporter),
    // accepting the harness's tokens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut api_env = otel("jobstream-api");
    api_env.extend([
        ("API_PORT", port.to_string()),
        (
            "JWT_SECRET",
            app.auth.hs256_secret.expose_secret().to_owned(),
        ),
        ("JWT_ISSUER", app.auth.issuer.clone()),
        ("JWT_AUDIENCE", app.auth.audience.clone()),
    ]);
    let _api = start(&["api"], api_env);
    let base = format!("http://127.0.0.1:{port}");
    eventually("the api child process answers", WAIT, || async {
        app.http
            .get(format!("{base}/livez"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
    let token = app.token("carol", false);

    let res = app
        .http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&token)
        .header("traceparent", CLIENT_TRACEPARENT)
        .json(&json!({"kind": "echo", "payload": {"hello": "otlp"}}))
        .send()
        .await
        .expect("submit");
    assert_eq!(res.status(), 202);

    for (service, span) in [
        ("jobstream-api", "enqueue_job"),
        ("jobstream-worker", "job"),
        ("jobstream-projector", "project_job_event"),
    ] {
        eventually(
            &format!("{service}'s `{span}` span exported under the client's trace"),
            WAIT,
            || async {
                spans
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|(s, t, n)| s == service && t == CLIENT_TRACE_ID && n == span)
                    .then_some(())
            },
        )
        .await;
    }
}
db_test!(api_worker_and_projector_export_the_jobs_spans_under_its_trace_over_otlp);
