//! Job lifecycle (issue 3): retries and dead jobs, the retry endpoint, handler
//! verdicts, timeouts, heartbeats, progress, cancellation, priorities and the
//! per-queue global concurrency limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use jobstream_core::event::{Envelope, Event, JobSpec, Priority};
use jobstream_core::subject::{self, QueueName};
use jobstream_core::{EventType, JobStatus};
use jobstream_testkit::{Backend, eventually};
use jobstream_worker::run::lane_consumer_name;
use jobstream_worker::{JobContext, JobError, Registry, Worker, WorkerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, WAIT, connect, db_test};

/// The built-ins, with `echo` replaced by a handler that does what its payload says:
/// `{"fatal": msg}`, `{"retry_after_ms": N, "times": k}` (retry after N ms for the
/// first k attempts), anything else succeeds.
fn scripted_registry() -> Registry {
    let mut r = Registry::with_builtins();
    r.register("echo", |ctx: JobContext| async move {
        if let Some(msg) = ctx.payload.get("fatal").and_then(Value::as_str) {
            return Err(JobError::Fatal(msg.to_owned()));
        }
        if let Some(ms) = ctx.payload.get("retry_after_ms").and_then(Value::as_u64) {
            let times = ctx
                .payload
                .get("times")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            if u64::from(ctx.attempt) <= times {
                return Err(JobError::RetryAfter {
                    error: format!("busy on attempt {}", ctx.attempt),
                    after: Duration::from_millis(ms),
                });
            }
        }
        Ok(json!({"attempt": ctx.attempt}))
    });
    r
}

async fn a_dead_job_keeps_every_attempts_error_and_a_retry_runs_it_again(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice", false);
    let job = app
        .submit_job(
            &token,
            &json!({"kind": "fail", "payload": {"times": 10}, "max_attempts": 3}),
        )
        .await;
    let id = &job.id.to_string();
    let dead = app
        .wait_for_job(&token, id, "job to fail for good", |j| j.status == "failed")
        .await;
    let errors = &dead.errors;
    let attempts: Vec<u32> = errors.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, [1, 2, 3], "{dead:?}");
    for (i, e) in errors.iter().enumerate() {
        assert!(e.error.contains(&format!("attempt {}", i + 1)), "{e:?}");
    }
    assert_eq!(dead.error.as_ref(), Some(&errors[2].error));

    // A retry gives it a fresh set of attempts: it runs again (and, still failing, dies again).
    let (status, _, retried) = app
        .post(&token, &format!("/v1/jobs/{id}/retry"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{retried}");
    assert_eq!(retried["status"], "queued");
    assert_eq!(retried["attempt"], 0);
    let dead_again = app
        .wait_for_job(&token, id, "retried job to fail again", |j| {
            j.status == "failed" && j.errors.len() == 6
        })
        .await;
    assert_eq!(dead_again.attempt, 3);
    assert_eq!(app.events_of(id, EventType::RetryRequested).await.len(), 1);
    assert_eq!(app.attempts_run(id).await.len(), 6);
    assert_eq!(app.events_of(id, EventType::Failed).await.len(), 2);
}
db_test!(a_dead_job_keeps_every_attempts_error_and_a_retry_runs_it_again);

async fn fatal_errors_are_not_retried_and_retry_after_is_honoured(backend: Backend) {
    let mut app = TestApp::with(backend, Options::without_worker()).await;
    app.worker = Some(
        app.spawn_worker(scripted_registry(), app.options.worker_config.clone())
            .await,
    );
    let token = app.token("alice", false);
    let fatal = app
        .submit_job(
            &token,
            &json!({"kind": "echo", "payload": {"fatal": "bad input"}, "max_attempts": 5}),
        )
        .await;
    let later = app
        .submit_job(
            &token,
            &json!({"kind": "echo", "payload": {"retry_after_ms": 700, "times": 1}, "max_attempts": 5}),
        )
        .await;
    let fatal_id = &fatal.id.to_string();
    let later_id = &later.id.to_string();

    let f = app
        .wait_for_job(&token, fatal_id, "fatal job to fail", |j| {
            j.status == "failed"
        })
        .await;
    assert_eq!(f.attempt, 1, "a fatal error is never retried");
    assert_eq!(f.error.as_deref(), Some("bad input"));
    assert_eq!(app.events_of(fatal_id, EventType::Retrying).await.len(), 0);

    let l = app
        .wait_for_job(&token, later_id, "retry-after job to succeed", |j| {
            j.status == "succeeded"
        })
        .await;
    assert_eq!(l.result, Some(json!({"attempt": 2})));
    let retrying = app.events_of(later_id, EventType::Retrying).await;
    assert_eq!(retrying.len(), 1);
    let Event::Retrying { retry_in_ms, .. } = &retrying[0].event else {
        unreachable!()
    };
    assert_eq!(*retry_in_ms, 700, "the handler's delay, without jitter");
    let started = app.attempts_run(later_id).await;
    let gap = started[1].1 - retrying[0].at;
    assert!(
        gap >= chrono::Duration::milliseconds(700),
        "second attempt after {gap}"
    );
}
db_test!(fatal_errors_are_not_retried_and_retry_after_is_honoured);

async fn an_attempt_past_its_timeout_fails_and_the_retry_policy_applies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice", false);
    let job = app
        .submit_job(
            &token,
            &json!({"kind": "sleep", "payload": {"ms": 60_000}, "timeout_ms": 300, "max_attempts": 2, "backoff_base_ms": 50}),
        )
        .await;
    let id = &job.id.to_string();
    let dead = app
        .wait_for_job(&token, id, "timed-out job to fail", |j| {
            j.status == "failed"
        })
        .await;
    let errors: Vec<&str> = dead.errors.iter().map(|e| e.error.as_str()).collect();
    assert_eq!(errors, ["timed out after 300 ms", "timed out after 300 ms"]);
    assert_eq!(app.events_of(id, EventType::Retrying).await.len(), 1);
    let started = app.attempts_run(id).await;
    let failed = app.events_of(id, EventType::Failed).await;
    let took = failed[0].at - started[1].1;
    assert!(
        took < chrono::Duration::seconds(5),
        "the handler was stopped at its deadline, not after {took}"
    );
}
db_test!(an_attempt_past_its_timeout_fails_and_the_retry_policy_applies);

async fn a_job_running_three_times_ack_wait_is_never_redelivered_and_reports_progress(
    backend: Backend,
) {
    let mut options = Options::default();
    options.worker_config.ack_wait = Duration::from_secs(1);
    let app = TestApp::with(backend, options).await;
    let token = app.token("alice", false);
    let job = app
        .submit_job(&token, &json!({"kind": "sleep", "payload": {"ms": 3_200}}))
        .await;
    let id = &job.id.to_string();
    let running = app
        .wait_for_job(&token, id, "progress to be reported", |j| {
            j.status == "running" && j.progress.is_some_and(|p| p >= 25)
        })
        .await;
    assert!(
        running
            .progress_message
            .as_deref()
            .is_some_and(|m| m.ends_with("of 3200 ms")),
        "{running:?}"
    );
    let done = app
        .wait_for_job(&token, id, "long job to succeed", |j| {
            j.status == "succeeded"
        })
        .await;
    assert_eq!(done.attempt, 1);
    assert_eq!(done.progress, Some(100));
    assert_eq!(
        app.events_of(id, EventType::Started).await.len(),
        1,
        "never redelivered"
    );
    let progress: Vec<Option<u8>> = app
        .events_of(id, EventType::Progress)
        .await
        .into_iter()
        .map(|e| match e.event {
            Event::Progress { percent, .. } => percent,
            _ => None,
        })
        .collect();
    assert_eq!(progress, [Some(25), Some(50), Some(75)]);
}
db_test!(a_job_running_three_times_ack_wait_is_never_redelivered_and_reports_progress);

async fn a_cancelled_queued_job_never_starts_and_can_be_retried(backend: Backend) {
    let mut app = TestApp::with(backend, Options::without_worker()).await;
    let token = app.token("alice", false);
    let job = app
        .submit_job(&token, &json!({"kind": "echo", "payload": "first"}))
        .await;
    let id = &job.id.to_string();
    let (status, _, cancelled) = app
        .post(
            &token,
            &format!("/v1/jobs/{id}/cancel"),
            Some(json!({"reason": "changed my mind"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["error"], "changed my mind");

    // A worker comes up and runs what is queued behind it; the cancelled job never starts.
    app.start_worker().await;
    let next = app
        .submit_job(&token, &json!({"kind": "echo", "payload": "second"}))
        .await;
    app.wait_for_job(&token, &next.id.to_string(), "next job to succeed", |j| {
        j.status == "succeeded"
    })
    .await;
    // Its queued message was acked (the ack of the next one may trail its outcome event).
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
    assert!(app.events_of(id, EventType::Started).await.is_empty());
    // The next job's status may come from the stream while the projection lags: read
    // this one once the projection holds everything stored so far.
    app.wait_projected().await;
    let (_, got) = app.get(&token, &format!("/v1/jobs/{id}")).await;
    assert_eq!(got["status"], "cancelled");

    // Cancelled is final, but a retry runs it.
    let (status, content_type, problem) = app
        .post(&token, &format!("/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(content_type, "application/problem+json");
    let (status, _, _) = app
        .post(&token, &format!("/v1/jobs/{id}/retry"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let done = app
        .wait_for_job(&token, id, "retried job to succeed", |j| {
            j.status == "succeeded"
        })
        .await;
    assert_eq!(done.result, Some(json!("first")));
    assert_eq!(app.attempts_run(id).await.len(), 1);
}
db_test!(a_cancelled_queued_job_never_starts_and_can_be_retried);

async fn a_running_job_is_stopped_and_ends_cancelled(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice", false);
    let job = app
        .submit_job(&token, &json!({"kind": "sleep", "payload": {"ms": 60_000}}))
        .await;
    let id = &job.id.to_string();
    app.wait_for_job(&token, id, "job to run", |j| j.status == "running")
        .await;
    let (status, _, body) = app
        .post(&token, &format!("/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "running", "it runs until its handler stops");
    assert!(body["cancel_requested_at"].is_string());
    let done = app
        .wait_for_job(&token, id, "job to be cancelled", |j| {
            j.status == "cancelled"
        })
        .await;
    assert!(
        done.error
            .as_deref()
            .is_some_and(|e| e.contains("cancelled while running")),
        "{done:?}"
    );
    let requested = app.events_of(id, EventType::CancelRequested).await;
    let cancelled = app.events_of(id, EventType::Cancelled).await;
    assert_eq!((requested.len(), cancelled.len()), (1, 1));
    let took = cancelled[0].at - requested[0].at;
    assert!(
        took < chrono::Duration::seconds(3),
        "the handler stopped after {took}"
    );
    assert!(app.events_of(id, EventType::Succeeded).await.is_empty());
}
db_test!(a_running_job_is_stopped_and_ends_cancelled);

async fn a_retrying_job_is_cancelled_at_once_and_its_redelivery_never_runs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice", false);
    let job = app
        .submit_job(
            &token,
            &json!({"kind": "fail", "payload": {"times": 5}, "max_attempts": 5, "backoff_base_ms": 2_000}),
        )
        .await;
    let id = &job.id.to_string();
    app.wait_for_job(&token, id, "job to wait for its retry", |j| {
        j.status == "retrying"
    })
    .await;
    let (status, _, body) = app
        .post(&token, &format!("/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["status"], "cancelled");
    // The back-off runs out, the message comes back, and is acked without a run.
    let uuid = uuid::Uuid::parse_str(id).unwrap();
    let history = app.broker.job_history(uuid).await.unwrap();
    let queued_seq = history[0].0;
    eventually("the nak'ed message to be acked", WAIT, || async {
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
        (lane.ack_floor.stream_sequence >= queued_seq && lane.num_ack_pending == 0).then_some(())
    })
    .await;
    assert_eq!(app.attempts_run(id).await.len(), 1);
}
db_test!(a_retrying_job_is_cancelled_at_once_and_its_redelivery_never_runs);

async fn cancel_and_retry_refuse_what_they_cannot_do(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice", false);
    let bob = app.token("bob", false);
    let job = app
        .submit_job(&alice, &json!({"kind": "echo", "payload": 1}))
        .await;
    let id = &job.id.to_string();
    app.wait_for_job(&alice, id, "job to succeed", |j| j.status == "succeeded")
        .await;
    let before = app.stream_messages().await;

    for action in ["cancel", "retry"] {
        let (status, content_type, problem) = app
            .post(&alice, &format!("/v1/jobs/{id}/{action}"), None)
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{action}: {problem}");
        assert_eq!(content_type, "application/problem+json");
        assert!(
            problem["detail"].as_str().unwrap().contains("succeeded"),
            "{problem}"
        );
        let (status, _, _) = app
            .post(&bob, &format!("/v1/jobs/{id}/{action}"), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "another user's job");
        let (status, _, _) = app
            .post(
                &alice,
                &format!("/v1/jobs/{}/{action}", uuid::Uuid::now_v7()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, _, problem) = app
        .post(
            &alice,
            &format!("/v1/jobs/{id}/cancel"),
            Some(json!({"reason": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["errors"][0]["field"], "reason");
    let res = app
        .submit(
            &alice,
            &json!({"kind": "echo", "backoff_base_ms": 500, "backoff_max_ms": 100}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "backoff_max_ms");
    assert_eq!(app.stream_messages().await, before, "nothing was published");
}
db_test!(cancel_and_retry_refuse_what_they_cannot_do);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_priority_job_starts_before_ten_thousand_queued_normal_ones() {
    let app = TestApp::with(Backend::Sqlite, Options::api_only()).await;
    let queue = QueueName::default_queue();
    let spec = |priority, payload| JobSpec {
        kind: "echo".into(),
        queue: queue.clone(),
        owner: "alice".into(),
        payload,
        priority,
        max_attempts: 3,
        timeout_ms: 60_000,
        run_at: None,
        idempotency_key: None,
        result_ttl_ms: None,
        backoff: None,
    };
    let published = futures::stream::iter(0..10_000)
        .map(|i| {
            let env = Envelope::new(
                uuid::Uuid::now_v7(),
                0,
                Event::Queued(spec(Priority::Normal, json!(i))),
            );
            let (broker, queue) = (&app.broker, &queue);
            async move { broker.publish(&env, queue, None).await.expect("publish") }
        })
        .buffer_unordered(256)
        .count()
        .await;
    assert_eq!(published, 10_000);
    let token = app.token("alice", false);
    let high = app
        .submit_job(
            &token,
            &json!({"kind": "echo", "payload": "urgent", "priority": "high"}),
        )
        .await;
    let high_id = high.id.to_string();

    let config = WorkerConfig {
        concurrency: 1,
        ..app.options.worker_config.clone()
    };
    let _worker = app.spawn_worker(Registry::with_builtins(), config).await;
    let stream = app.broker.stream().await.unwrap();
    // The first job to finish (a short job stores no `started`; one at a time, so it also started first).
    let filter = format!("jobs.{queue}.*.{}", EventType::Succeeded.as_str());
    let first = eventually("the first job to finish", WAIT, || async {
        stream
            .get_first_raw_message_by_subject(&filter, 1)
            .await
            .ok()
    })
    .await;
    let first = Envelope::decode(&first.payload).unwrap();
    assert_eq!(
        first.job_id.to_string(),
        high_id,
        "the high-priority job started first"
    );
    assert_eq!(
        subject::parse(&subject::for_event(
            &queue,
            first.job_id,
            &Event::Queued(spec(Priority::High, json!(0)))
        ))
        .unwrap()
        .event,
        "queued-high"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_limit_holds_across_two_workers() {
    const LIMIT: usize = 2;
    let app = TestApp::with(Backend::Sqlite, Options::without_worker()).await;
    let queue = QueueName::parse("limited").unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let registry = |ran: Arc<AtomicUsize>| {
        let (running, max_seen) = (running.clone(), max_seen.clone());
        let mut r = Registry::new();
        r.register("echo", move |ctx: JobContext| {
            let (running, max_seen, ran) = (running.clone(), max_seen.clone(), ran.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                max_seen.fetch_max(now, Ordering::SeqCst);
                // Stands in for work, so jobs overlap if the limit let them.
                tokio::time::sleep(Duration::from_millis(60)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(ctx.payload)
            }
        });
        r
    };
    let base = WorkerConfig {
        queues: vec![queue.clone()],
        concurrency: 8,
        ..app.options.worker_config.clone()
    };
    let build = |id: &'static str, config: WorkerConfig| {
        let url = app.nats.url();
        async move {
            Worker::build(connect(&url, id).await, Registry::new(), config)
                .await
                .unwrap()
        }
    };
    // The queue's consumers exist already, without a limit; a worker started with
    // `--queue-limit limited=2` applies it; workers started without one use it and
    // leave it in place.
    drop(build("worker-0", base.clone()).await);
    let mut limited = base.clone();
    limited.id = "worker-b".into();
    limited.queue_limits.insert(queue.clone(), LIMIT as i64);
    let (ran_a, ran_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let b = app.spawn_worker(registry(ran_b.clone()), limited).await;
    let a = app
        .spawn_worker(
            registry(ran_a.clone()),
            WorkerConfig {
                id: "worker-a".into(),
                ..base.clone()
            },
        )
        .await;
    drop(build("worker-c", base.clone()).await);
    let stream = app.broker.stream().await.unwrap();
    for lane in subject::LANES {
        let info = stream
            .consumer_info(lane_consumer_name(&queue, lane))
            .await
            .unwrap();
        // Lanes are not limited themselves: their pending messages include retries
        // waiting out their back-off, which are not running.
        assert_eq!(
            info.config.max_ack_pending, base.queue_max_in_flight,
            "{lane:?}"
        );
    }
    let slots = app
        .broker
        .jetstream()
        .get_stream("JOBS_SLOTS")
        .await
        .unwrap()
        .consumer_info(jobstream_worker::limit::slots_consumer_name(&queue))
        .await
        .unwrap();
    assert_eq!(slots.config.max_ack_pending, LIMIT as i64);

    let token = app.token("alice", false);
    // Every lane at once: the limit holds for the queue, not per lane.
    let ids: Vec<String> = futures::stream::iter(0..60)
        .map(|i| {
            let (app, token) = (&app, &token);
            let priority = ["high", "normal", "low"][i % 3];
            async move {
                app.submit_job(
                    token,
                    &json!({"kind": "echo", "payload": i, "queue": "limited", "priority": priority}),
                )
                .await.id.to_string()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    app.wait_for_count(JobStatus::Succeeded.as_str(), ids.len() as u64)
        .await;
    assert_eq!(
        max_seen.load(Ordering::SeqCst),
        LIMIT,
        "never more than the limit at once"
    );
    let (ran_a, ran_b) = (ran_a.load(Ordering::SeqCst), ran_b.load(Ordering::SeqCst));
    assert_eq!(ran_a + ran_b, ids.len());
    assert!(
        ran_a > 0 && ran_b > 0,
        "both workers ran jobs ({ran_a}, {ran_b})"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_append_is_refused_when_the_job_has_a_newer_event() {
    let nats = jobstream_testkit::NatsServer::start().await;
    let broker = connect(&nats.url(), "test").await;
    broker
        .ensure_stream(&jobstream_core::broker::StreamSettings::default())
        .await
        .unwrap();
    let queue = QueueName::default_queue();
    let (job, other) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let queued = |id| {
        Envelope::new(
            id,
            0,
            Event::Queued(JobSpec {
                kind: "echo".into(),
                queue: QueueName::default_queue(),
                owner: "alice".into(),
                payload: Value::Null,
                priority: Priority::High,
                max_attempts: 1,
                timeout_ms: 1000,
                run_at: None,
                idempotency_key: None,
                result_ttl_ms: None,
                backoff: None,
            }),
        )
    };
    let seq = broker.publish(&queued(job), &queue, None).await.unwrap();
    // Another job's events do not count: the condition is on this job's subjects.
    broker.publish(&queued(other), &queue, None).await.unwrap();
    let cancel = Envelope::new(
        job,
        0,
        Event::CancelRequested {
            reason: None,
            by: None,
        },
    );
    let cancel_seq = broker
        .publish_if_last(&cancel, &queue, None, seq)
        .await
        .expect("nothing happened to the job since its queued event");
    let started = Envelope::new(job, 1, Event::Started { worker: "w".into() });
    let err = broker
        .publish_if_last(&started, &queue, None, seq)
        .await
        .unwrap_err();
    assert!(
        matches!(err, jobstream_core::broker::BrokerError::Conflict { .. }),
        "{err}"
    );
    let history = broker.job_history(job).await.unwrap();
    let seqs: Vec<u64> = history.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [seq, cancel_seq], "the refused start was not stored");
}

async fn a_job_still_running_after_the_shutdown_grace_is_redelivered_not_lost(backend: Backend) {
    let mut options = Options::default();
    options.worker_config.shutdown_grace = Duration::from_millis(300);
    let mut app = TestApp::with(backend, options).await;
    let token = app.token("alice", false);
    let job = app
        .submit_job(&token, &json!({"kind": "sleep", "payload": {"ms": 2_000}}))
        .await;
    let id = &job.id.to_string();
    app.wait_for_job(&token, id, "job to run", |j| j.status == "running")
        .await;
    // SIGTERM: the grace period is shorter than the job, so it is cancelled and handed back.
    app.worker.take().unwrap().stop().await;
    app.start_worker().await;
    let done = app
        .wait_for_job(&token, id, "job to succeed on the next worker", |j| {
            j.status == "succeeded"
        })
        .await;
    assert_eq!(done.attempt, 2);
    assert_eq!(app.events_of(id, EventType::Started).await.len(), 2);
    assert_eq!(app.events_of(id, EventType::Succeeded).await.len(), 1);
    assert!(
        app.events_of(id, EventType::Retrying).await.is_empty()
            && app.events_of(id, EventType::Failed).await.is_empty(),
        "an interrupted attempt is not a failed one"
    );
}
db_test!(a_job_still_running_after_the_shutdown_grace_is_redelivered_not_lost);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_from_before_priority_lanes_is_upgraded_in_place() {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    let nats = jobstream_testkit::NatsServer::start().await;
    let broker = connect(&nats.url(), "test").await;
    broker
        .ensure_stream(&jobstream_core::broker::StreamSettings::default())
        .await
        .unwrap();
    let queue = QueueName::default_queue();
    let stream = broker.stream().await.unwrap();
    // The consumer an older worker created: one filter, its own limit.
    stream
        .create_consumer(pull::Config {
            durable_name: Some(lane_consumer_name(&queue, Priority::Normal)),
            filter_subject: subject::queued_in(&queue),
            ack_policy: AckPolicy::Explicit,
            max_ack_pending: 7,
            ..Default::default()
        })
        .await
        .unwrap();
    drop(
        Worker::build(broker.clone(), Registry::new(), WorkerConfig::default())
            .await
            .unwrap(),
    );
    let info = stream
        .consumer_info(lane_consumer_name(&queue, Priority::Normal))
        .await
        .unwrap();
    assert_eq!(
        info.config.filter_subjects,
        subject::runnable_in(&queue, Priority::Normal)
    );
    assert_eq!(info.config.max_ack_pending, 7, "no limit given: kept");
    for lane in [Priority::High, Priority::Low] {
        let info = stream
            .consumer_info(lane_consumer_name(&queue, lane))
            .await
            .unwrap();
        assert_eq!(
            info.config.filter_subjects,
            subject::runnable_in(&queue, lane)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_tokens_are_handed_out_up_to_the_limit_and_come_back_when_released() {
    use jobstream_worker::limit::{self, Slots};
    let nats = jobstream_testkit::NatsServer::start().await;
    let broker = connect(&nats.url(), "test").await;
    broker
        .ensure_stream(&jobstream_core::broker::StreamSettings::default())
        .await
        .unwrap();
    let queue = QueueName::parse("mail").unwrap();
    let slots = Slots::ensure(&broker, &queue, 2, Duration::from_secs(30))
        .await
        .unwrap();
    let quick = Duration::from_millis(200);
    // Asking for more than the limit returns what is free, at once (never parked by the server).
    let held = tokio::time::timeout(Duration::from_secs(5), slots.acquire(32, quick))
        .await
        .expect("acquire returns");
    assert_eq!(held.len(), 2);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), slots.acquire(1, quick))
            .await
            .expect("acquire returns")
            .is_empty(),
        "no third token"
    );
    // Raising the limit takes effect on the same consumer; released tokens come back.
    let slots = Slots::ensure(&broker, &queue, 3, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(slots.acquire(32, quick).await.len(), 1);
    for t in held {
        limit::release(t).await;
    }
    // (A release is an asynchronous `Nak`: collect until both are back.)
    let mut again = Vec::new();
    tokio::time::timeout(WAIT, async {
        while again.len() < 2 {
            again.extend(slots.acquire(32, quick).await);
        }
    })
    .await
    .expect("released tokens come back");
    assert_eq!(again.len(), 2);
    assert!(
        slots.acquire(1, quick).await.is_empty(),
        "the limit of 3 is held"
    );
}
