//! `/metrics`: after a known set of jobs every counter moved by exactly what they did, the
//! gauges agree with the projection, and the text parses as Prometheus exposition format.

use std::sync::Arc;

use jobstream_api::routes::metrics::MetricsServer;
use jobstream_core::metrics::{self as m, Exporter};
use jobstream_projector::ProjectionGauges;
use jobstream_testkit::{Backend, eventually};
use prometheus_parse::{Sample, Scrape, Value};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Options, TestApp, WAIT, db_test};

/// A parsed scrape.
struct Metrics(Vec<Sample>);

impl Metrics {
    fn parse(text: &str) -> Self {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        Metrics(Scrape::parse(lines).expect("Prometheus text").samples)
    }

    /// The value of the counter or gauge `name` with exactly `labels`
    /// (a histogram: its observation count); 0 when absent.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .find(|s| {
                s.metric == name
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
                    && s.labels.len() == labels.len()
            })
            .map_or(0.0, |s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                Value::Histogram(buckets) => buckets
                    .iter()
                    .find(|b| b.less_than.is_infinite())
                    .map_or(0.0, |b| b.count),
                Value::Summary(_) => panic!("{name} is a summary, not a histogram"),
            })
    }
}

async fn scrape(app: &TestApp) -> (Metrics, String) {
    let res = (app.http.get(format!("{}/metrics", app.base)).send().await).expect("GET /metrics");
    assert_eq!(res.status(), StatusCode::OK);
    let ctype = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let text = res.text().await.expect("body");
    (Metrics::parse(&text), text)
}

async fn counters_move_by_exactly_what_the_jobs_did_and_gauges_match_the_projection(
    backend: Backend,
) {
    // What `jobstream api|worker|projector` do unless `--metrics off`.
    m::install();
    let mut app = TestApp::with(backend, Options::without_worker()).await;
    let token = app.token("alice", false);
    let (before, _) = scrape(&app).await;

    // Two jobs cancelled while queued (no worker yet).
    for _ in 0..2 {
        let job = app
            .submit_job(&token, &json!({"kind": "echo", "payload": 1}))
            .await;
        assert_eq!(
            app.cancel(&token, &job.id.to_string()).await,
            StatusCode::ACCEPTED
        );
    }
    app.start_worker().await;
    // Three that succeed, two that fail after their two attempts, one that succeeds on its second.
    for _ in 0..3 {
        app.submit_job(&token, &json!({"kind": "echo", "payload": 2}))
            .await;
    }
    for _ in 0..2 {
        let body = json!({"kind": "fail", "payload": {"times": 5}, "max_attempts": 2});
        app.submit_job(&token, &body).await;
    }
    let body = json!({"kind": "fail", "payload": {"times": 1}, "max_attempts": 3});
    app.submit_job(&token, &body).await;
    app.wait_for_count("succeeded", 4).await;
    app.wait_for_count("failed", 2).await;

    let finished = |s: &Metrics, kind: &str, status: &str| {
        s.get(
            m::JOBS_FINISHED,
            &[("queue", "default"), ("kind", kind), ("status", status)],
        )
    };
    // Counted once the fold committed: wait until the last outcomes are in.
    let (after, text) = eventually("every outcome counted", WAIT, || async {
        let (s, text) = scrape(&app).await;
        let done = finished(&s, "echo", "succeeded") - finished(&before, "echo", "succeeded")
            + finished(&s, "fail", "succeeded")
            - finished(&before, "fail", "succeeded")
            + finished(&s, "fail", "failed")
            - finished(&before, "fail", "failed");
        (done >= 6.0).then_some((s, text))
    })
    .await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let q = ("queue", "default");
    let enq = |kind| delta(m::JOBS_ENQUEUED, &[q, ("kind", kind), ("source", "api")]);
    assert_eq!((enq("echo"), enq("fail")), (5.0, 3.0), "{text}");
    let attempts =
        |kind, outcome| delta(m::JOB_ATTEMPTS, &[q, ("kind", kind), ("outcome", outcome)]);
    assert_eq!(attempts("echo", "succeeded"), 3.0);
    assert_eq!(attempts("fail", "retrying"), 3.0);
    assert_eq!(attempts("fail", "failed"), 2.0);
    assert_eq!(attempts("fail", "succeeded"), 1.0);
    assert_eq!(
        attempts("echo", "cancelled"),
        0.0,
        "no cancelled job had started"
    );
    let fin = |kind, status| delta(m::JOBS_FINISHED, &[q, ("kind", kind), ("status", status)]);
    assert_eq!(fin("echo", "succeeded"), 3.0);
    assert_eq!(fin("echo", "cancelled"), 2.0);
    assert_eq!(fin("fail", "failed"), 2.0);
    assert_eq!(fin("fail", "succeeded"), 1.0);
    // Histograms: one run per attempt, one queue wait per job that ran, one e2e per finished job.
    let runs = |kind| delta(m::JOB_RUN_DURATION, &[q, ("kind", kind)]);
    assert_eq!((runs("echo"), runs("fail")), (3.0, 6.0));
    let waits = |kind| delta(m::JOB_QUEUE_WAIT, &[q, ("kind", kind)]);
    assert_eq!((waits("echo"), waits("fail")), (3.0, 3.0));
    let e2e = |kind, status| {
        delta(
            m::JOB_E2E_DURATION,
            &[q, ("kind", kind), ("status", status)],
        )
    };
    assert_eq!(e2e("echo", "cancelled"), 2.0);
    assert_eq!(e2e("fail", "failed"), 2.0);
    // HTTP: by route template, never the raw path (ids would be unbounded).
    let http = |route, method, status| {
        delta(
            m::HTTP_REQUESTS,
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(http("/v1/jobs", "POST", "202"), 8.0);
    // prometheus-parse skips lines whose label values hold `}` (valid text format), so the
    // templated route is read from the raw line.
    let cancels = (text.lines())
        .find_map(|l| {
            l.strip_prefix(&format!(
                "{}{{route=\"/v1/jobs/{{id}}/cancel\",method=\"POST\",status=\"202\"}} ",
                m::HTTP_REQUESTS
            ))
        })
        .map(|v| v.parse::<f64>().unwrap());
    assert_eq!(cancels, Some(2.0), "{text}");
    assert!(
        !text.contains("route=\"/v1/jobs/0"),
        "a raw path leaked into a label"
    );
    assert_eq!(
        after.get(m::BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );

    // The projector role's endpoint: gauges read from the projection and NATS at scrape time.
    let exporter = Exporter::new().with_source(Arc::new(ProjectionGauges::new(
        app.broker.clone(),
        app.db.conn.clone(),
        &app.options.projector_config.name,
    )));
    let server = MetricsServer::bind(([127, 0, 0, 1], 0).into(), exporter)
        .await
        .unwrap();
    let url = format!("http://{}/metrics", server.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(server.run_until_stopped(stop.clone()));
    let text = app
        .http
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gauges = Metrics::parse(&text);
    let rows = app.rows().await;
    for status in jobstream_core::JobStatus::ALL {
        let n = rows.iter().filter(|r| r.status == status.as_str()).count();
        let g = gauges.get(m::JOBS, &[q, ("status", status.as_str())]);
        assert_eq!(g, n as f64, "jobs{{status={}}}", status.as_str());
    }
    let mut stream = app.broker.jetstream().get_stream("JOBS").await.unwrap();
    let stream = stream.info().await.unwrap().clone();
    assert_eq!(
        gauges.get(m::NATS_STREAM_MESSAGES, &[]),
        stream.state.messages as f64
    );
    let checkpoint = gauges.get(m::PROJECTOR_LAST_APPLIED, &[]);
    assert!(checkpoint > 0.0);
    assert_eq!(
        gauges.get(m::PROJECTOR_LAG, &[]),
        (stream.state.last_sequence as f64 - checkpoint).max(0.0)
    );
    assert_eq!(
        gauges.get(m::QUEUE_OLDEST_WAITING_AGE, &[q]),
        0.0,
        "nothing waits"
    );
    assert_eq!(
        gauges.get(m::NATS_CONSUMER_PENDING, &[("consumer", "worker-default")]),
        0.0
    );
    stop.cancel();
}
db_test!(counters_move_by_exactly_what_the_jobs_did_and_gauges_match_the_projection);
