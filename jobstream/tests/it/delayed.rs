//! Delayed jobs: `scheduled` until `run_at`, then fired by nats-server's message
//! scheduler through the normal worker path; once, even across a restart of everything.

use chrono::{Duration as ChronoDuration, SecondsFormat, SubsecRound, Utc};
use jobstream_core::EventType;
use jobstream_testkit::{Backend, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, WAIT, db_test};

async fn a_delayed_job_is_scheduled_then_starts_within_a_second_after_its_time(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice", false);
    // Whole milliseconds: what the request carries.
    let run_at = (Utc::now() + ChronoDuration::milliseconds(1500)).trunc_subsecs(3);
    let job = app
        .submit_job(
            &token,
            &json!({"kind": "echo", "payload": "later",
                    "run_at": run_at.to_rfc3339_opts(SecondsFormat::Millis, true)}),
        )
        .await;
    assert_eq!(job.status, "scheduled");
    let id = &job.id.to_string();
    // Read-your-writes: scheduled, not 404, not queued.
    let (status, got) = app.get(&token, &format!("/v1/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        got["status"] == "scheduled" || Utc::now() >= run_at,
        "{got}"
    );

    let row = app
        .wait_for_row(id, "delayed job to succeed", |r| r.status == "succeeded")
        .await;
    let started = row.started_at.expect("started");
    assert!(
        started >= run_at,
        "started {started} before its time {run_at}"
    );
    assert!(
        started - run_at < ChronoDuration::seconds(1),
        "started {} ms after its time",
        (started - run_at).num_milliseconds()
    );
    assert_eq!(
        row.run_at.map(|t| t.timestamp_millis()),
        Some(run_at.timestamp_millis())
    );
    assert_eq!(row.result, Some(json!("later")));
    for (t, n) in [
        (EventType::Scheduled, 1),
        (EventType::Queued, 1),
        (EventType::Succeeded, 1),
    ] {
        assert_eq!(app.events_of(id, t).await.len(), n, "{t:?} events");
    }
    assert_eq!(app.attempts_run(id).await.len(), 1, "ran once");
    // The fired `queued` event is stamped with its firing time.
    let queued = &app.events_of(id, EventType::Queued).await[0];
    assert!(queued.at >= run_at, "queued at {} < run_at", queued.at);
}
db_test!(a_delayed_job_is_scheduled_then_starts_within_a_second_after_its_time);

async fn a_delayed_job_survives_a_restart_of_every_process_and_runs_once(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let token = app.token("alice", false);
    let job = app
        .submit_job(
            &token,
            &json!({"kind": "echo", "payload": 7, "delay_ms": 2000}),
        )
        .await;
    let id = job.id.to_string();
    let run_at = job.run_at.expect("a delayed job has its run_at");
    app.wait_for_row(&id, "job to be projected as scheduled", |r| {
        r.status == "scheduled"
    })
    .await;

    // Everything goes down (nats-server with SIGKILL) and stays down past run_at.
    app.worker.take().unwrap().kill().await;
    app.projector.take().unwrap().kill().await;
    app.nats.kill().await;
    eventually("run_at to pass while everything is down", WAIT, || async {
        (Utc::now() > run_at + ChronoDuration::milliseconds(200)).then_some(())
    })
    .await;
    app.nats.restart().await;
    let (base2, _api2) = app.second_api().await;
    app.start_worker().await;
    app.start_projector().await;

    let row = app
        .wait_for_row(&id, "delayed job to succeed after the restart", |r| {
            r.status == "succeeded"
        })
        .await;
    assert_eq!(row.result, Some(json!(7)));
    assert_eq!(row.attempt, 1);
    assert_eq!(
        app.events_of(&id, EventType::Queued).await.len(),
        1,
        "fired once"
    );
    assert_eq!(app.attempts_run(&id).await.len(), 1, "ran once");
    assert_eq!(app.events_of(&id, EventType::Succeeded).await.len(), 1);
    let res = app
        .http
        .get(format!("{base2}/v1/jobs/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "succeeded");
}
db_test!(a_delayed_job_survives_a_restart_of_every_process_and_runs_once);

async fn bad_delays_are_refused_and_nothing_is_published(backend: Backend) {
    let app = TestApp::with(backend, Options::api_only()).await;
    let token = app.token("alice", false);
    let before = app.stream_messages().await;
    for (body, field) in [
        (
            json!({"kind": "echo", "run_at": "tomorrow at noon"}),
            "run_at",
        ),
        (json!({"kind": "echo", "run_at": 1700000000}), "run_at"),
        (json!({"kind": "echo", "delay_ms": -5}), "delay_ms"),
        (
            json!({"kind": "echo", "run_at": "2030-01-01T00:00:00Z", "delay_ms": 10}),
            "delay_ms",
        ),
        (
            json!({"kind": "echo", "run_at": "2999-01-01T00:00:00Z"}),
            "run_at",
        ),
    ] {
        let res = app.submit(&token, &body).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let p: Value = res.json().await.unwrap();
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
    assert_eq!(app.stream_messages().await, before, "nothing published");

    // A run_at in the past runs now: queued at once.
    let job = app
        .submit_job(
            &token,
            &json!({"kind": "echo", "run_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(job.status, "queued");
}
db_test!(bad_delays_are_refused_and_nothing_is_published);

async fn a_scheduled_job_cancelled_before_its_time_never_runs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice", false);
    let job = app
        .submit_job(&token, &json!({"kind": "echo", "delay_ms": 1500}))
        .await;
    let id = job.id.to_string();
    let job_id = uuid::Uuid::parse_str(&id).unwrap();
    let run_at = job.run_at.expect("a delayed job has its run_at");
    // Cancelled through the API: the job is `cancelled` at once and its timer is dropped.
    let res = app
        .http
        .post(format!("{}/v1/jobs/{id}/cancel", app.base))
        .bearer_auth(&token)
        .json(&json!({"reason": "no longer needed"}))
        .send()
        .await
        .expect("POST cancel");
    assert_eq!(res.status(), reqwest::StatusCode::ACCEPTED);
    let body: serde_json::Value = res.json().await.expect("job");
    assert_eq!(body["status"], "cancelled");
    let queue = jobstream_core::subject::QueueName::default_queue();
    assert_eq!(
        app.broker.cancel_timer(&queue, job_id).await.unwrap(),
        0,
        "the cancel already purged the timer"
    );
    app.wait_for_row(&id, "job to be cancelled", |r| r.status == "cancelled")
        .await;

    // Past its time (plus a margin), nothing fired and nothing ran.
    eventually("run_at to pass", WAIT, || async {
        (Utc::now() > run_at + ChronoDuration::milliseconds(1000)).then_some(())
    })
    .await;
    assert!(
        app.events_of(&id, EventType::Queued).await.is_empty(),
        "fired"
    );
    assert!(
        app.events_of(&id, EventType::Started).await.is_empty(),
        "ran"
    );
    let (_, got) = app.get(&token, &format!("/v1/jobs/{id}")).await;
    assert_eq!(got["status"], "cancelled");
}
db_test!(a_scheduled_job_cancelled_before_its_time_never_runs);
