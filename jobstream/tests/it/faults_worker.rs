//! Worker faults (issue 15): nats-server killed while the worker is busy, and a stream
//! that refuses writes for a while. Every accepted job ends `succeeded`, with no
//! component restarted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jobstream_core::EventType;
use jobstream_testkit::{Backend, eventually};
use jobstream_worker::WorkerConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, db_test};

/// A worker running many jobs when nats-server is killed (`kill -9`) and restarted
/// takes jobs again on its own: every accepted job succeeds, no component restarted.
async fn a_busy_worker_recovers_from_a_nats_server_restart(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let token = app.token("alice", false);
    let ids = app
        .submit_accepted(
            &token,
            0..600,
            |i| json!({"kind": "sleep", "payload": {"ms": 20 + i % 40}}),
        )
        .await;
    assert_eq!(ids.len(), 600, "all accepted before the crash");
    // Busy: some done, many still waiting and in flight.
    app.wait_for_count("succeeded", 30).await;

    app.nats.kill().await;
    app.nats.restart().await;

    app.wait_all_succeeded(&ids, Duration::from_secs(30)).await;
}
db_test!(a_busy_worker_recovers_from_a_nats_server_restart);

/// nats-server killed with `kill -9` 5 times during a run of 3,000 jobs, restarted
/// each time: every job that got a 202 ends `succeeded` within 30 s of the last
/// restart and the last submission (whichever comes later), with no component restarted.
async fn five_nats_server_crashes_during_three_thousand_jobs_lose_nothing(backend: Backend) {
    let mut options = Options::default();
    options.worker_config = WorkerConfig {
        concurrency: 32,
        ..options.worker_config
    };
    let mut app = TestApp::with(backend, options).await;
    let token = app.token("alice", false);
    let base = app.base.clone();
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));

    // Submissions run on their own client against the API's address, so the test
    // can kill nats-server (which needs the app) meanwhile.
    let submitter = {
        let accepted = accepted.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            futures::stream::iter(0..3000u64)
                .map(|i| {
                    let (http, base, token) = (http.clone(), base.clone(), token.clone());
                    async move {
                        let res = http
                            .post(format!("{base}/v1/jobs"))
                            .bearer_auth(&token)
                            .json(&json!({"kind": "echo", "payload": i}))
                            .timeout(Duration::from_secs(20))
                            .send()
                            .await
                            .ok()?;
                        if res.status() != StatusCode::ACCEPTED {
                            return None;
                        }
                        let job: Value = res.json().await.ok()?;
                        job["id"].as_str().map(str::to_owned)
                    }
                })
                .buffer_unordered(16)
                .for_each(|id| {
                    if let Some(id) = id {
                        accepted.lock().unwrap().push(id);
                    }
                    async {}
                })
                .await;
        })
    };

    for crash in 0..5 {
        // Let some work get accepted and run between crashes.
        let before = accepted.lock().unwrap().len();
        eventually(
            &format!("submissions before crash {crash}"),
            Duration::from_secs(60),
            || {
                let n = accepted.lock().unwrap().len();
                let finished = submitter.is_finished();
                async move { (n >= before + 250 || finished).then_some(()) }
            },
        )
        .await;
        app.nats.kill().await;
        app.nats.restart().await;
    }
    submitter.await.expect("submitter");
    // Counted from the end of the load, not the last crash: on a busy 2-core box the
    // remaining submissions alone can take most of 30 s, which says nothing about recovery.
    let ids = accepted.lock().unwrap().clone();
    assert!(ids.len() > 1000, "only {} submissions accepted", ids.len());
    app.wait_all_succeeded(&ids, Duration::from_secs(30)).await;
}
db_test!(five_nats_server_crashes_during_three_thousand_jobs_lose_nothing);

/// While the stream refuses writes (store full), running jobs cannot store their
/// outcome; that must not use up their attempts: once writes are allowed again every
/// job succeeds, none "gave up".
async fn an_outcome_that_could_not_be_stored_does_not_use_up_an_attempt(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice", false);
    let ids = app
        .submit_accepted(
            &token,
            0..30,
            |i| json!({"kind": "sleep", "payload": {"ms": 1500}, "max_attempts": 1 + i % 3}),
        )
        .await;
    assert_eq!(ids.len(), 30);
    eventually("jobs to start", Duration::from_secs(30), || async {
        let rows = app.rows().await;
        (rows.iter().filter(|r| r.status == "running").count() >= 10).then_some(())
    })
    .await;
    let stored = app.stream_messages().await;
    app.refuse_writes(true).await;
    let probe = app
        .broker
        .jetstream()
        .publish("jobs.default.probe.probe", "refused?".into())
        .await
        .expect("publish sent")
        .await;
    assert!(probe.is_err(), "the stream refuses writes: {probe:?}");
    // The fault lasts a while (its length is the point, not a wait for an event):
    // longer than the running jobs' handlers and several 1 s redeliveries.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        app.stream_messages().await >= stored,
        "refusing writes lost no event"
    );
    app.refuse_writes(false).await;

    app.wait_all_succeeded(&ids, Duration::from_secs(60)).await;
    for id in &ids {
        assert!(
            app.events_of(id, EventType::Failed).await.is_empty(),
            "{id}"
        );
        assert_eq!(
            app.events_of(id, EventType::Succeeded).await.len(),
            1,
            "{id}"
        );
    }
}
db_test!(an_outcome_that_could_not_be_stored_does_not_use_up_an_attempt);
