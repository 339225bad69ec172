//! Live events over SSE: exact resume (also across an API restart), isolation,
//! tickets, retention resets, graceful shutdown.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use futures::StreamExt;
use jobstream_api::live::HubConfig;
use jobstream_testkit::{Backend, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, WAIT, db_test};

/// One parsed SSE message.
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    pub(crate) id: Option<u64>,
    pub(crate) event: String,
    pub(crate) data: String,
}

impl Msg {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("data is JSON")
    }
}

/// A minimal SSE reader (the wire format of the spec: fields, blank line ends a message).
pub(crate) struct SseClient {
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buf: String,
}

impl SseClient {
    /// Opens `base` + `path_and_query`, with a bearer token and an optional `Last-Event-ID`.
    pub(crate) async fn open(
        base: &str,
        path_and_query: &str,
        token: Option<&str>,
        last_event_id: Option<u64>,
    ) -> Result<SseClient, (StatusCode, String)> {
        let mut req = reqwest::Client::new().get(format!("{base}{path_and_query}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let res = req.send().await.expect("GET /v1/events");
        if res.status() != StatusCode::OK {
            let status = res.status();
            return Err((status, res.text().await.unwrap_or_default()));
        }
        assert_eq!(
            res.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Ok(SseClient {
            body: res.bytes_stream().map(|c| c.map(|b| b.to_vec())).boxed(),
            buf: String::new(),
        })
    }

    /// The next message (comments skipped); `None` when the server closed the stream.
    pub(crate) async fn next(&mut self) -> Option<Msg> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut msg = Msg {
                    id: None,
                    event: "message".into(),
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if line.starts_with(':') || line.is_empty() {
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    any = true;
                    match field {
                        "id" => msg.id = value.parse().ok(),
                        "event" => msg.event = value.to_owned(),
                        "data" => {
                            if !msg.data.is_empty() {
                                msg.data.push('\n');
                            }
                            msg.data.push_str(value);
                        }
                        _ => {}
                    }
                }
                if any {
                    return Some(msg);
                }
                continue;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// The next message within the test's wait bound.
    pub(crate) async fn expect(&mut self) -> Msg {
        tokio::time::timeout(WAIT, self.next())
            .await
            .expect("an SSE message in time")
            .expect("stream still open")
    }
}

/// Stream sequences of every event of `owner`'s jobs, from the stream itself.
async fn stored_seqs_of(app: &TestApp, ids: &HashSet<String>) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for id in ids {
        let uuid = uuid::Uuid::parse_str(id).unwrap();
        for (msg, _) in jobstream_core::stream_read::job_events(&app.broker, uuid)
            .await
            .unwrap()
        {
            out.insert(msg.seq);
        }
    }
    out
}

async fn submit_n(app: &TestApp, token: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let job = app
            .submit_job(token, &json!({"kind": "echo", "payload": {"i": i}}))
            .await;
        ids.push(job.id.to_string());
    }
    ids
}

async fn a_client_that_resumes_gets_every_remaining_event_exactly_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, bob) = (app.token("alice", false), app.token("bob", false));
    let api = app.spawn_api().await;
    let mut sse = SseClient::open(&api.base, "/v1/events", Some(&alice), None)
        .await
        .unwrap();

    // First half while connected; bob's jobs run alongside and must never show up.
    let mut mine: HashSet<String> = submit_n(&app, &alice, 20).await.into_iter().collect();
    let bobs: HashSet<String> = submit_n(&app, &bob, 10).await.into_iter().collect();
    let mut received: Vec<Msg> = Vec::new();
    while received.len() < 25 {
        received.push(sse.expect().await);
    }
    drop(sse);

    // Away: the API restarts and more events happen meanwhile.
    api.stop().await;
    mine.extend(submit_n(&app, &alice, 20).await);
    app.wait_for_count("succeeded", 50).await;
    let api = app.spawn_api().await;
    let last = received.last().unwrap().id.unwrap();
    let mut sse = SseClient::open(&api.base, "/v1/events", Some(&alice), Some(last))
        .await
        .unwrap();
    // And more after the reconnect: the hand-over from catch-up to the live tail.
    mine.extend(submit_n(&app, &alice, 10).await);

    // Each echo job: queued, succeeded (a short job stores no `started`).
    let total = mine.len() * 2;
    while received.len() < total {
        received.push(sse.expect().await);
    }
    let ids: Vec<u64> = received.iter().map(|m| m.id.unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids strictly increasing, no duplicate: {ids:?}"
    );
    let got: BTreeSet<u64> = ids.iter().copied().collect();
    // The first connection was open before alice's first job: all her events are expected.
    let expected = stored_seqs_of(&app, &mine).await;
    assert_eq!(got, expected, "every event of alice's jobs, exactly once");
    for m in &received {
        let v = m.json();
        assert_eq!(v["type"], m.event);
        assert!(mine.contains(v["job_id"].as_str().unwrap()));
        assert!(!bobs.contains(v["job_id"].as_str().unwrap()));
    }
    // Nothing more for alice (bob's events are not hers): the next thing would only be a keep-alive.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sse.next())
            .await
            .is_err()
    );
    api.stop().await;
}
db_test!(a_client_that_resumes_gets_every_remaining_event_exactly_once);

async fn filters_isolation_and_admin_view(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, bob, admin) = (
        app.token("alice", false),
        app.token("bob", false),
        app.token("root", true),
    );
    let bob_job = submit_n(&app, &bob, 1).await.remove(0);
    app.wait_for_row(&bob_job, "bob's job to finish", |r| r.status == "succeeded")
        .await;
    // Resuming from 0 replays history: alice still sees nothing of bob's, the admin does.
    let mut admin_sse = SseClient::open(
        &app.base,
        "/v1/events?type=succeeded",
        Some(&admin),
        Some(0),
    )
    .await
    .unwrap();
    let m = admin_sse.expect().await;
    assert_eq!(m.event, "succeeded");
    assert_eq!(m.json()["job_id"], bob_job.as_str());
    let mut alice_all = SseClient::open(&app.base, "/v1/events", Some(&alice), Some(0))
        .await
        .unwrap();
    let mut alice_job_filter = SseClient::open(
        &app.base,
        &format!("/v1/events?job_id={bob_job}"),
        Some(&alice),
        Some(0),
    )
    .await
    .unwrap();
    let own = submit_n(&app, &alice, 1).await.remove(0);
    for _ in 0..2 {
        let m = alice_all.expect().await;
        assert_eq!(m.json()["job_id"], own.as_str(), "only alice's own job");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), alice_job_filter.next())
            .await
            .is_err(),
        "bob's job's events are never sent to alice, even when she asks for them"
    );
    // The admin's filtered stream sees alice's completion, and only completions.
    let m = admin_sse.expect().await;
    assert_eq!(
        (m.event.as_str(), m.json()["job_id"].as_str()),
        ("succeeded", Some(own.as_str()))
    );

    // kind and queue filters: only the `fail` job's events, none of the echo job's.
    let mut by_kind = SseClient::open(
        &app.base,
        "/v1/events?kind=fail&queue=default",
        Some(&admin),
        None,
    )
    .await
    .unwrap();
    submit_n(&app, &alice, 1).await;
    let failing = app
        .submit_job(&alice, &json!({"kind": "fail", "payload": {"times": 0}}))
        .await;
    for expected in ["queued", "succeeded"] {
        let m = by_kind.expect().await;
        assert_eq!(m.event, expected);
        assert_eq!(m.json()["job_id"], failing.id.to_string());
    }

    // Bad filters name the field; no token → 401.
    for (q, field) in [
        ("type=exploded", "type"),
        ("job_id=nope", "job_id"),
        ("queue=a.b", "queue"),
        ("last_event_id=x", "last_event_id"),
    ] {
        let (status, body) = app.get(&alice, &format!("/v1/events?{q}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{q}");
        assert_eq!(body["errors"][0]["field"], field, "{q}: {body}");
    }
    let err = SseClient::open(&app.base, "/v1/events", None, None)
        .await
        .err()
        .unwrap();
    assert_eq!(err.0, StatusCode::UNAUTHORIZED);

    // Documented in the OpenAPI document.
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/events",
        "/v1/events/ticket",
        "/v1/jobs/{id}/events",
        "/v1/jobs/{id}/wait",
        "/v1/admin/replay",
        "/v1/jobs",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
}
db_test!(filters_isolation_and_admin_view);

async fn tickets_are_single_use_and_work_across_instances(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice", false);
    let other = app.spawn_api().await;
    let res = app
        .http
        .post(format!("{}/v1/events/ticket", other.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let t: Value = res.json().await.unwrap();
    let url = t["url"].as_str().unwrap().to_owned();
    assert!(t["expires_in"].as_u64().unwrap() <= 60);
    assert!(
        !url.contains(&alice),
        "the token itself is never in the URL"
    );

    // Redeemed on the other instance, without any Authorization header.
    let mut sse = SseClient::open(&app.base, &url, None, None).await.unwrap();
    let id = submit_n(&app, &alice, 1).await.remove(0);
    assert_eq!(sse.expect().await.json()["job_id"], id.as_str());
    // Once only.
    let again = SseClient::open(&app.base, &url, None, None)
        .await
        .err()
        .unwrap();
    assert_eq!(again.0, StatusCode::UNAUTHORIZED);
    let forged = SseClient::open(
        &app.base,
        &format!("/v1/events?ticket={}", "a".repeat(64)),
        None,
        None,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(forged.0, StatusCode::UNAUTHORIZED);
    other.stop().await;
}
db_test!(tickets_are_single_use_and_work_across_instances);

async fn an_expired_resume_point_is_announced_not_skipped(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice", false);
    let ids = submit_n(&app, &alice, 2).await;
    app.wait_for_count("succeeded", 2).await;
    // The oldest events leave the stream (as max_age would remove them).
    let stream = app.broker.stream().await.unwrap();
    for seq in 1..=3 {
        stream.delete_message(seq).await.unwrap();
    }
    let mut sse = SseClient::open(&app.base, "/v1/events", Some(&alice), Some(1))
        .await
        .unwrap();
    let reset = sse.expect().await;
    assert_eq!(reset.event, "reset");
    assert_eq!(
        reset.id, None,
        "a notice has no id: the client's resume point stays"
    );
    assert_eq!(reset.json()["first_available"], 4);
    let next = sse.expect().await;
    assert_eq!(next.id, Some(4));
    assert!(ids.contains(&next.json()["job_id"].as_str().unwrap().to_owned()));
}
db_test!(an_expired_resume_point_is_announced_not_skipped);

async fn shutdown_with_open_streams_finishes_in_seconds(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice", false);
    let api = app.spawn_api().await;
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams.push(
            SseClient::open(&api.base, "/v1/events", Some(&alice), None)
                .await
                .unwrap(),
        );
    }
    let took = api.stop().await;
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    for mut s in streams {
        assert!(
            tokio::time::timeout(Duration::from_secs(5), s.next())
                .await
                .expect("stream ended")
                .is_none()
        );
    }
}
db_test!(shutdown_with_open_streams_finishes_in_seconds);

async fn a_client_too_far_behind_is_told_why_and_resumes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice", false);
    // A tiny broadcast buffer; big events fill the socket buffers of a client that does not read.
    let api = app
        .spawn_api_with(HubConfig {
            capacity: 16,
            ..HubConfig::default()
        })
        .await;
    let mut sse = SseClient::open(&api.base, "/v1/events?type=queued", Some(&alice), None)
        .await
        .unwrap();
    let big = "x".repeat(256 * 1024);
    let queue = jobstream_core::subject::QueueName::parse("parked").unwrap();
    let mut published = Vec::new();
    for i in 0..100 {
        let env = jobstream_core::Envelope::new(
            uuid::Uuid::now_v7(),
            0,
            jobstream_core::Event::Queued(jobstream_core::event::JobSpec {
                kind: "echo".into(),
                queue: queue.clone(),
                owner: "alice".into(),
                payload: json!({ "i": i, "big": big }),
                priority: jobstream_core::event::Priority::Normal,
                max_attempts: 1,
                timeout_ms: 1000,
                run_at: None,
                idempotency_key: None,
                result_ttl_ms: None,
                backoff: None,
            }),
        );
        published.push(app.broker.publish(&env, &queue, None).await.unwrap());
    }
    let mut got = Vec::new();
    let lagged = loop {
        let m = sse.expect().await;
        if m.event == "lagged" {
            break m;
        }
        got.push(m.id.unwrap());
    };
    assert!(got.len() < published.len(), "the slow client was cut off");
    assert!(
        lagged.json()["reason"]
            .as_str()
            .unwrap()
            .contains("Last-Event-ID")
    );
    assert!(
        tokio::time::timeout(WAIT, sse.next())
            .await
            .unwrap()
            .is_none(),
        "closed after the notice"
    );
    // It resumes with its last id and receives the rest, exactly once.
    let mut sse = SseClient::open(
        &app.base,
        "/v1/events?type=queued",
        Some(&alice),
        got.last().copied(),
    )
    .await
    .unwrap();
    while got.len() < published.len() {
        got.push(sse.expect().await.id.unwrap());
    }
    assert_eq!(got, published);
    api.stop().await;
}
db_test!(a_client_too_far_behind_is_told_why_and_resumes);

async fn the_live_tail_stops_when_nobody_listens_and_the_next_listener_gets_new_events(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice", false);
    let hub_config = HubConfig {
        idle_stop: Duration::from_millis(300),
        // A closed connection is noticed at the next keep-alive write.
        keep_alive: Duration::from_millis(100),
        ..HubConfig::default()
    };
    let state = app.api_state("api-idle", hub_config).await;
    let hub = state.live.clone();
    let api = crate::helpers::components::ApiInstance::serve(state).await;
    assert!(!hub.tail_running().await, "no tail before anyone listens");
    let path = "/v1/events?type=succeeded";
    let mut sse = SseClient::open(&api.base, path, Some(&alice), None)
        .await
        .unwrap();
    assert!(
        hub.tail_running().await,
        "the first listener starts the tail"
    );
    let first = submit_n(&app, &alice, 1).await.remove(0);
    assert_eq!(sse.expect().await.json()["job_id"], first.as_str());
    drop(sse);
    eventually("the tail to stop with nobody listening", WAIT, || async {
        (!hub.tail_running().await).then_some(())
    })
    .await;
    // A job that finishes while nobody listens is nobody's live event.
    let unheard = submit_n(&app, &alice, 1).await.remove(0);
    app.wait_for_row(&unheard, "the unheard job", |r| r.status == "succeeded")
        .await;
    let mut sse = SseClient::open(&api.base, path, Some(&alice), None)
        .await
        .unwrap();
    let next = submit_n(&app, &alice, 1).await.remove(0);
    assert_eq!(
        sse.expect().await.json()["job_id"],
        next.as_str(),
        "the restarted tail starts at the stream's end and misses nothing after it"
    );
}
db_test!(the_live_tail_stops_when_nobody_listens_and_the_next_listener_gets_new_events);

async fn the_live_tail_survives_a_nats_server_restart(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let alice = app.token("alice", false);
    let first = submit_n(&app, &alice, 1).await.remove(0);
    app.wait_for_row(&first, "first job", |r| r.status == "succeeded")
        .await;
    let mut sse = SseClient::open(&app.base, "/v1/events?type=succeeded", Some(&alice), None)
        .await
        .unwrap();
    app.nats.kill().await;
    app.nats.restart().await;
    // Jobs accepted after the restart still reach the open stream, through the recreated tail.
    let job = eventually("the API to accept jobs again", WAIT, || async {
        let res = app
            .submit(&alice, &json!({"kind": "echo", "payload": {}}))
            .await;
        (res.status() == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    let () = job;
    let m = sse.expect().await;
    assert_eq!(m.event, "succeeded");
    assert_ne!(m.json()["job_id"], first.as_str());
}
db_test!(the_live_tail_survives_a_nats_server_restart);
