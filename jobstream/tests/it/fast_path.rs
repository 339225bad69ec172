//! The worker's fast path (issue 9, item 2): a short job costs two stream writes,
//! `queued` and its outcome; a long one still shows `running`; a cancel stored before
//! the start still wins; the history and `started_at` stay complete.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use jobstream_core::event::Priority;
use jobstream_core::subject::QueueName;
use jobstream_core::{Envelope, EventType};
use jobstream_testkit::{Backend, eventually};
use jobstream_worker::run::lane_consumer_name;
use jobstream_worker::{JobContext, JobError, Registry, STARTED_AFTER};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Options, TestApp, WAIT, db_test};

async fn a_short_job_costs_two_stream_writes_and_keeps_when_it_ran(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice", false);
    let job = app
        .submit_job(&token, &json!({"kind": "echo", "payload": {"n": 1}}))
        .await;
    let id = &job.id.to_string();
    let done = app
        .wait_for_job(&token, id, "job to succeed", |j| j.status == "succeeded")
        .await;

    let history = app.history_of(id).await;
    let types: Vec<EventType> = history.iter().map(Envelope::event_type).collect();
    assert_eq!(types, [EventType::Queued, EventType::Succeeded]);
    assert_eq!(
        app.stream_messages().await,
        2,
        "two stream messages for the job"
    );
    // The outcome says where and since when the attempt ran; the projection keeps it.
    let run = history[1]
        .run
        .as_ref()
        .expect("the outcome names its attempt");
    assert!(!run.worker.is_empty());
    assert!(run.started_at >= history[0].at && run.started_at <= history[1].at);
    assert_eq!(done.started_at, Some(run.started_at));
    assert_eq!(done.attempt, 1, "{done:?}");
}
db_test!(a_short_job_costs_two_stream_writes_and_keeps_when_it_ran);

async fn a_job_running_past_the_threshold_shows_running_and_stores_started(backend: Backend) {
    let mut app = TestApp::with(backend, Options::without_worker()).await;
    // A handler that runs well past the threshold and reports no progress.
    let mut registry = Registry::with_builtins();
    registry.register("echo", |ctx: JobContext| async move {
        tokio::select! {
            () = tokio::time::sleep(STARTED_AFTER * 4) => Ok(ctx.payload),
            () = ctx.cancel.cancelled() => Err(JobError::Failed("cancelled".into())),
        }
    });
    app.start_worker_with(registry).await;
    let token = app.token("alice", false);
    let job = app
        .submit_job(&token, &json!({"kind": "echo", "payload": "slow"}))
        .await;
    let id = &job.id.to_string();
    let running = app
        .wait_for_job(&token, id, "job to show running", |j| j.status == "running")
        .await;
    assert!(running.started_at.is_some(), "{running:?}");
    let done = app
        .wait_for_job(&token, id, "job to succeed", |j| j.status == "succeeded")
        .await;

    let history = app.history_of(id).await;
    let types: Vec<EventType> = history.iter().map(Envelope::event_type).collect();
    assert_eq!(
        types,
        [EventType::Queued, EventType::Started, EventType::Succeeded]
    );
    // `started` and the outcome tell the same start.
    let run = history[2]
        .run
        .as_ref()
        .expect("the outcome names its attempt");
    assert_eq!(history[1].at, run.started_at);
    assert_eq!(done.started_at, running.started_at);
}
db_test!(a_job_running_past_the_threshold_shows_running_and_stores_started);

async fn a_job_cancelled_before_it_starts_never_runs(backend: Backend) {
    let mut app = TestApp::with(backend, Options::without_worker()).await;
    let token = app.token("alice", false);
    let runs = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::with_builtins();
    let counted = runs.clone();
    registry.register("echo", move |ctx: JobContext| {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(ctx.payload)
        }
    });

    let cancelled = app
        .submit_job(&token, &json!({"kind": "echo", "payload": "never"}))
        .await;
    let id = &cancelled.id.to_string();
    assert_eq!(app.cancel(&token, id).await, StatusCode::ACCEPTED);

    // The worker comes up after the cancel is stored, and runs what is queued behind it.
    app.start_worker_with(registry).await;
    let next = app
        .submit_job(&token, &json!({"kind": "echo", "payload": "runs"}))
        .await;
    let next_id = &next.id.to_string();
    app.wait_for_job(&token, next_id, "next job to succeed", |j| {
        j.status == "succeeded"
    })
    .await;
    eventually("both messages to be acked", WAIT, || async {
        let lane = app
            .broker
            .stream()
            .await
            .unwrap()
            .consumer_info(lane_consumer_name(
                &QueueName::default_queue(),
                Priority::Normal,
            ))
            .await
            .unwrap();
        (lane.num_pending == 0 && lane.num_ack_pending == 0).then_some(())
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "only the second job ran");
    let types: Vec<EventType> = app
        .history_of(id)
        .await
        .iter()
        .map(Envelope::event_type)
        .collect();
    assert_eq!(types, [EventType::Queued, EventType::CancelRequested]);
    let (_, got) = app.get(&token, &format!("/v1/jobs/{id}")).await;
    assert_eq!(got["status"], "cancelled");
    assert!(got["started_at"].is_null(), "{got}");
}
db_test!(a_job_cancelled_before_it_starts_never_runs);

async fn the_latest_event_of_a_job_is_read_without_its_headers(backend: Backend) {
    // The worker's check before a first run: the job's latest stored event, compared
    // byte for byte with the message it holds (a direct get without headers).
    let app = TestApp::with(backend, Options::without_worker()).await;
    let token = app.token("alice", false);
    let job = app
        .submit_job(&token, &json!({"kind": "echo", "payload": "x"}))
        .await;
    let id = &job.id.to_string();
    let subjects = jobstream_core::subject::of_job(job.id);
    let queued = app
        .broker
        .last_payload_on(&subjects)
        .await
        .unwrap()
        .expect("the queued event is stored");
    let decoded = Envelope::decode(&queued).unwrap();
    assert_eq!(
        (decoded.job_id, decoded.event_type()),
        (job.id, EventType::Queued)
    );

    assert_eq!(app.cancel(&token, id).await, StatusCode::ACCEPTED);
    let latest = app
        .broker
        .last_payload_on(&subjects)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(latest, queued, "a newer event is the latest");
    assert_eq!(
        Envelope::decode(&latest).unwrap().event_type(),
        EventType::CancelRequested
    );
    let unknown = jobstream_core::subject::of_job(uuid::Uuid::now_v7());
    assert_eq!(app.broker.last_payload_on(&unknown).await.unwrap(), None);
}
db_test!(the_latest_event_of_a_job_is_read_without_its_headers);
