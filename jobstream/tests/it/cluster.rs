//! On a real three-node cluster (loopback, stores on /dev/shm) with an R3 stream:
//! leader failovers lose no acknowledged job and make no phantom one, a standby
//! projector takes over, two projectors never apply the same event, a killed node
//! catches up, a cluster without quorum answers 503, and a rolling restart in lame
//! duck mode fails no request.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, pull};
use futures::StreamExt;
use jobstream_core::EventType;
use jobstream_projector::{Projector, ProjectorConfig};
use jobstream_testkit::{Backend, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Component, Options, TestApp, WAIT, connect, db_test};

fn cluster_options() -> Options {
    Options {
        cluster: true,
        ..Options::default()
    }
}

/// The node leading the `JOBS` stream.
async fn stream_leader(app: &mut TestApp) -> usize {
    let name = eventually("the stream to have a leader", WAIT, || async {
        let mut stream = app.broker.jetstream().get_stream("JOBS").await.ok()?;
        stream.info().await.ok()?.cluster.clone()?.leader
    })
    .await;
    app.nats.cluster().index_of(&name)
}

/// The node leading the durable consumer `name`.
async fn consumer_leader(app: &mut TestApp, name: &str) -> usize {
    let leader = eventually("the consumer to have a leader", WAIT, || async {
        let stream = app.broker.jetstream().get_stream("JOBS").await.ok()?;
        let mut consumer = stream.get_consumer::<pull::Config>(name).await.ok()?;
        consumer.info().await.ok()?.cluster.clone()?.leader
    })
    .await;
    app.nats.cluster().index_of(&leader)
}

/// The stream's last sequence.
async fn stream_last_seq(app: &TestApp) -> u64 {
    let mut stream = app.broker.jetstream().get_stream("JOBS").await.unwrap();
    stream.info().await.unwrap().state.last_sequence
}

/// How many events of each type each job has in the stream, read by subject
/// (`jobs.<queue>.<job_id>.<event>`).
async fn events_by_job(app: &TestApp) -> HashMap<String, HashMap<String, usize>> {
    // Right after a failover the first requests may time out: ask again.
    let consumer = eventually("a reading consumer", WAIT, || async {
        let stream = app.broker.jetstream().get_stream("JOBS").await.ok()?;
        stream
            .create_consumer(pull::Config {
                filter_subject: "jobs.>".into(),
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .ok()
    })
    .await;
    let total = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await.unwrap();
    let mut out: HashMap<String, HashMap<String, usize>> = HashMap::new();
    for _ in 0..total {
        let msg = tokio::time::timeout(WAIT, messages.next())
            .await
            .expect("stream read in time")
            .expect("message")
            .expect("message");
        let tokens: Vec<&str> = msg.subject.split('.').collect();
        *out.entry(tokens[2].to_owned())
            .or_default()
            .entry(tokens[3].to_owned())
            .or_default() += 1;
    }
    out
}

/// Submissions running beside the test: each answer's status, and the ids of the `202`s.
#[derive(Default)]
struct Answers {
    accepted: Vec<String>,
    refused: Vec<(StatusCode, Option<String>)>,
}

/// Submits `n` echo jobs, `concurrency` at a time, counting answers in `done`.
fn submit_many(
    app: &TestApp,
    n: usize,
    concurrency: usize,
    done: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Answers> {
    let http = app.http.clone();
    let url = format!("{}/v1/jobs", app.base);
    let token = app.token("alice", false);
    tokio::spawn(async move {
        let answers = futures::stream::iter(0..n)
            .map(|i| {
                let (http, url, token, done) =
                    (http.clone(), url.clone(), token.clone(), done.clone());
                async move {
                    let res = http
                        .post(url)
                        .bearer_auth(token)
                        .json(&json!({"kind": "echo", "payload": i}))
                        .send()
                        .await
                        .expect("the API answers");
                    let status = res.status();
                    let retry_after = res
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let body: Value = res.json().await.unwrap_or(Value::Null);
                    done.fetch_add(1, Ordering::SeqCst);
                    (status, retry_after, body)
                }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await;
        let mut out = Answers::default();
        for (status, retry_after, body) in answers {
            if status == StatusCode::ACCEPTED {
                out.accepted
                    .push(body["id"].as_str().expect("id").to_owned());
            } else {
                out.refused.push((status, retry_after));
            }
        }
        out
    })
}

/// Every accepted job is in the stream with one `queued` and one `succeeded`, and in SQL.
async fn assert_each_accepted_job_once(app: &TestApp, accepted: &[String]) {
    // A deadline, not a speed claim: after leader moves on a loaded 2-core machine the
    // backlog can take longer than the usual minute to drain.
    let n = accepted.len() as u64;
    let waited = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
        app.wait_for_count_within("succeeded", n, 2 * WAIT),
    ))
    .await;
    if let Err(cause) = waited {
        let cause = cause
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "the wait panicked".to_owned());
        panic!("{cause}\n{}", stall_report(app, accepted).await);
    }
    let events = events_by_job(app).await;
    for id in accepted {
        let of_job = events
            .get(id)
            .unwrap_or_else(|| panic!("job {id} not in the stream"));
        assert_eq!(of_job.get("queued"), Some(&1), "job {id}: {of_job:?}");
        assert_eq!(of_job.get("succeeded"), Some(&1), "job {id}: {of_job:?}");
    }
    let rows = app.rows().await;
    let in_sql: std::collections::HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(rows.len(), in_sql.len());
    for id in accepted {
        assert!(in_sql.contains(id.as_str()), "job {id} not in SQL");
    }
    // No phantom: nothing in SQL that the stream does not hold.
    for r in &rows {
        assert!(events.contains_key(&r.id), "row {} has no events", r.id);
    }
}

/// Where the accepted jobs stand when they did not all finish in time: the projection
/// by status, the jobs whose `succeeded` the stream lacks, and every consumer's
/// backlog, so a failure says whether the worker or the projector stopped.
async fn stall_report(app: &TestApp, accepted: &[String]) -> String {
    let mut by_status: std::collections::BTreeMap<String, usize> = Default::default();
    for row in app.rows().await {
        *by_status.entry(row.status).or_default() += 1;
    }
    let events = events_by_job(app).await;
    let unfinished: Vec<_> = accepted
        .iter()
        .filter(|id| events.get(*id).and_then(|e| e.get("succeeded")).is_none())
        .map(|id| (id, events.get(id)))
        .collect();
    let mut consumers = Vec::new();
    if let Ok(stream) = app.broker.jetstream().get_stream("JOBS").await {
        let mut names = stream.consumer_names();
        while let Some(Ok(name)) = names.next().await {
            let info = match stream.get_consumer::<pull::Config>(&name).await {
                Ok(mut c) => c.info().await.map_err(|e| e.to_string()).map(|i| {
                    format!(
                        "pending {} ack pending {} redelivered {} waiting {} leader {:?}",
                        i.num_pending,
                        i.num_ack_pending,
                        i.num_redelivered,
                        i.num_waiting,
                        i.cluster.as_ref().and_then(|c| c.leader.clone())
                    )
                }),
                Err(e) => Err(e.to_string()),
            };
            let info = info.unwrap_or_else(|e| format!("no info: {e}"));
            consumers.push(format!("{name}: {info}"));
        }
    }
    format!(
        "projection by status: {by_status:?}\n{} accepted jobs without `succeeded` in the stream, first ones: {:?}\nconsumers:\n  {}",
        unfinished.len(),
        unfinished.iter().take(5).collect::<Vec<_>>(),
        consumers.join("\n  ")
    )
}

async fn the_stream_leader_killed_during_3000_submissions_loses_no_accepted_job(backend: Backend) {
    let mut app = TestApp::with(backend, cluster_options()).await;
    let done = Arc::new(AtomicUsize::new(0));
    let submissions = submit_many(&app, 3000, 32, done.clone());
    eventually("600 answers before the kill", WAIT, || async {
        (done.load(Ordering::SeqCst) >= 600).then_some(())
    })
    .await;
    let leader = stream_leader(&mut app).await;
    app.nats.cluster().kill(leader).await;
    let answers = submissions.await.expect("submissions");
    for (status, retry_after) in &answers.refused {
        assert_eq!(
            *status,
            StatusCode::SERVICE_UNAVAILABLE,
            "during the election"
        );
        assert!(retry_after.is_some(), "a 503 says when to retry");
    }
    assert!(
        answers.accepted.len() > 2000,
        "{} accepted",
        answers.accepted.len()
    );
    assert_each_accepted_job_once(&app, &answers.accepted).await;
}
db_test!(the_stream_leader_killed_during_3000_submissions_loses_no_accepted_job);

async fn a_worker_consumer_leader_killed_jobs_resume_within_15_s_and_finish_once(backend: Backend) {
    let mut app = TestApp::with(backend, cluster_options()).await;
    let token = app.token("alice", false);
    let first = app
        .submit_job(&token, &json!({"kind": "echo", "payload": 0}))
        .await;
    app.wait_for_row(&first.id.to_string(), "the first job", |r| {
        r.status == "succeeded"
    })
    .await;
    let leader = consumer_leader(&mut app, "worker-default").await;
    let done = Arc::new(AtomicUsize::new(0));
    let submissions = submit_many(&app, 300, 8, done.clone());
    app.nats.cluster().kill(leader).await;
    let killed_at = Instant::now();
    let answers = submissions.await.expect("submissions");
    let mut accepted = answers.accepted;
    accepted.push(first.id.to_string());
    // The first job submitted after the kill runs within 15 s of it.
    let probe = app
        .submit_job(&token, &json!({"kind": "echo", "payload": "probe"}))
        .await;
    app.wait_for_row(&probe.id.to_string(), "a job after the kill", |r| {
        r.status == "succeeded"
    })
    .await;
    let resumed = killed_at.elapsed();
    assert!(
        resumed < Duration::from_secs(15),
        "jobs resumed {resumed:?} after the kill"
    );
    accepted.push(probe.id.to_string());
    assert!(
        answers
            .refused
            .iter()
            .all(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
    );
    assert_each_accepted_job_once(&app, &accepted).await;
}
db_test!(a_worker_consumer_leader_killed_jobs_resume_within_15_s_and_finish_once);

/// A projector of the system's database, running until stopped or killed.
async fn spawn_projector(app: &TestApp, client: &str) -> Component {
    let projector = Projector::build(
        connect(&app.nats.url(), client).await,
        app.db.conn.clone(),
        app.options.projector_config.clone(),
    )
    .await
    .expect("projector");
    Component::spawn(|stop| async move {
        projector.run(stop).await.expect("projector run");
    })
}

async fn verify_clean(app: &TestApp) {
    let report = jobstream_projector::replay::verify(
        &app.broker,
        &app.db.conn,
        "projector",
        app.options.projector_config.job_ttl,
    )
    .await
    .expect("verify");
    assert!(report.is_clean(), "{:?}", report.differences);
}

/// Submits an echo job and waits until its row is `succeeded`; returns its id.
async fn echo_succeeded(app: &TestApp, token: &str, payload: Value, what: &str) -> String {
    let job = app
        .submit_job(token, &json!({"kind": "echo", "payload": payload}))
        .await;
    let id = job.id.to_string();
    app.wait_for_row(&id, what, |r| r.status == "succeeded")
        .await;
    id
}

async fn the_active_projector_killed_a_standby_folds_within_the_priority_timeout(backend: Backend) {
    let mut app = TestApp::with(backend, cluster_options()).await;
    let token = app.token("alice", false);
    echo_succeeded(&app, &token, json!(1), "folded by the active one").await;
    // The first projector holds the pin; the standby starts after it.
    let standby = spawn_projector(&app, "projector-standby").await;
    app.projector.take().expect("active projector").kill().await;
    let killed_at = Instant::now();
    echo_succeeded(&app, &token, json!(2), "folded by the standby").await;
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs(15 + 5),
        "the standby folded after {took:?}"
    );
    verify_clean(&app).await;
    standby.stop().await;
}
db_test!(the_active_projector_killed_a_standby_folds_within_the_priority_timeout);

async fn two_projectors_forced_to_fold_at_once_never_apply_an_event_twice(backend: Backend) {
    let mut options = cluster_options();
    options.projector = false;
    let app = TestApp::with(backend, options).await;
    let token = app.token("alice", false);
    for i in 0..200 {
        app.submit_job(&token, &json!({"kind": "echo", "payload": i}))
            .await;
    }
    let build = |client: &'static str| {
        let (url, db) = (app.nats.url(), app.db.conn.clone());
        async move {
            Projector::build(connect(&url, client).await, db, ProjectorConfig::default())
                .await
                .expect("projector")
        }
    };
    let (a, b) = (build("projector-a").await, build("projector-b").await);
    let last = stream_last_seq(&app).await;
    let records = app
        .broker
        .records_between(1, last + 1)
        .await
        .expect("records");
    // Both get every chunk at the same moment, bypassing the pin: only the fence is left.
    for chunk in records.chunks(50) {
        let (x, y) = tokio::join!(apply_until_ok(&a, chunk), apply_until_ok(&b, chunk));
        assert_eq!(
            x.already_applied + y.already_applied,
            chunk.len(),
            "each event applied by exactly one of the two: {x:?} {y:?}"
        );
    }
    verify_clean(&app).await;
}
db_test!(two_projectors_forced_to_fold_at_once_never_apply_an_event_twice);

/// Applies a batch, retrying while the database is busy with the other projector's.
async fn apply_until_ok(
    projector: &Projector,
    batch: &[(u64, Option<jobstream_core::stored::Record>)],
) -> jobstream_projector::BatchOutcome {
    eventually("the batch to commit", WAIT, || async {
        projector.apply_records(batch).await.ok()
    })
    .await
}

async fn a_delayed_job_due_during_a_stream_leader_kill_fires_once(backend: Backend) {
    let mut app = TestApp::with(backend, cluster_options()).await;
    let token = app.token("alice", false);
    let job = app
        .submit_job(
            &token,
            &json!({"kind": "echo", "payload": "later", "delay_ms": 1000}),
        )
        .await;
    assert_eq!(job.status, "scheduled");
    let id = &job.id.to_string();
    // Killed at once: the job comes due while the cluster elects a new stream leader,
    // whose scheduler fires it.
    let leader = stream_leader(&mut app).await;
    app.nats.cluster().kill(leader).await;
    app.wait_for_row(id, "the delayed job to succeed", |r| {
        r.status == "succeeded"
    })
    .await;
    for (t, n) in [
        (EventType::Scheduled, 1),
        (EventType::Queued, 1),
        (EventType::Succeeded, 1),
    ] {
        assert_eq!(app.events_of(id, t).await.len(), n, "{t:?}");
    }
}
db_test!(a_delayed_job_due_during_a_stream_leader_kill_fires_once);

async fn a_killed_node_restarted_catches_up_and_its_replica_becomes_current(backend: Backend) {
    let mut app = TestApp::with(backend, cluster_options()).await;
    let leader = stream_leader(&mut app).await;
    let follower = (leader + 1) % 3;
    app.nats.cluster().kill(follower).await;
    let done = Arc::new(AtomicUsize::new(0));
    let answers = submit_many(&app, 200, 8, done).await.expect("submissions");
    assert_eq!(
        answers.accepted.len(),
        200,
        "a quorum is left: {:?}",
        answers.refused
    );
    app.nats.cluster().restart(follower).await;
    let name = format!("n{}", follower + 1);
    let last = stream_last_seq(&app).await;
    eventually("the restarted replica to be current", WAIT, || async {
        let mut stream = app.broker.jetstream().get_stream("JOBS").await.ok()?;
        let info = stream.info().await.ok()?;
        let replica = info
            .cluster
            .clone()?
            .replicas
            .into_iter()
            .find(|r| r.name == name)?;
        (replica.current && replica.lag.unwrap_or(0) == 0 && info.state.last_sequence >= last)
            .then_some(())
    })
    .await;
    assert_each_accepted_job_once(&app, &answers.accepted).await;
}
db_test!(a_killed_node_restarted_catches_up_and_its_replica_becomes_current);

async fn two_of_three_nodes_killed_the_api_answers_503_then_recovers(backend: Backend) {
    let mut options = cluster_options();
    options.publish_deadline = Some(Duration::from_secs(3));
    let mut app = TestApp::with(backend, options).await;
    let token = app.token("alice", false);
    app.submit_job(&token, &json!({"kind": "echo", "payload": "before"}))
        .await;
    let leader = stream_leader(&mut app).await;
    let other = (leader + 1) % 3;
    app.nats.cluster().kill(leader).await;
    app.nats.cluster().kill(other).await;
    for i in 0..3 {
        let res = app
            .submit(&token, &json!({"kind": "echo", "payload": i}))
            .await;
        assert_eq!(
            res.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "no quorum, no 202"
        );
        assert!(res.headers().contains_key("retry-after"));
        let content_type = res.headers()["content-type"].to_str().unwrap_or_default();
        assert!(
            content_type.starts_with("application/problem+json"),
            "{content_type}"
        );
    }
    app.nats.cluster().restart(other).await;
    let accepted = eventually("a 202 once a quorum is back", WAIT, || async {
        let res = app
            .submit(&token, &json!({"kind": "echo", "payload": "after"}))
            .await;
        if res.status() != StatusCode::ACCEPTED {
            return None;
        }
        res.json::<Value>().await.ok()
    })
    .await;
    app.wait_for_row(
        accepted["id"].as_str().unwrap(),
        "the job after recovery",
        |r| r.status == "succeeded",
    )
    .await;
}
db_test!(two_of_three_nodes_killed_the_api_answers_503_then_recovers);

async fn a_rolling_restart_in_lame_duck_mode_fails_no_request(backend: Backend) {
    let mut app = TestApp::with(backend, cluster_options()).await;
    let stop = CancellationToken::new();
    let done = Arc::new(AtomicUsize::new(0));
    // Submissions all through the restart, four at a time.
    let load = {
        let (stop, done) = (stop.clone(), done.clone());
        let (http, url, token) = (
            app.http.clone(),
            format!("{}/v1/jobs", app.base),
            app.token("alice", false),
        );
        tokio::spawn(async move {
            let mut answers = Answers::default();
            let mut i = 0;
            while !stop.is_cancelled() {
                let batch = (0..4).map(|k| {
                    let res = http
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({"kind": "echo", "payload": i * 4 + k}))
                        .send();
                    async move {
                        let res = res.await.expect("the API answers");
                        let status = res.status();
                        (status, res.json::<Value>().await.unwrap_or(Value::Null))
                    }
                });
                for (status, body) in futures::future::join_all(batch).await {
                    if status == StatusCode::ACCEPTED {
                        answers
                            .accepted
                            .push(body["id"].as_str().expect("id").to_owned());
                    } else {
                        answers.refused.push((status, Some(body.to_string())));
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                i += 1;
            }
            answers
        })
    };
    let answered = |n: usize| {
        let done = done.clone();
        async move {
            eventually(&format!("{n} answers"), WAIT, || async {
                (done.load(Ordering::SeqCst) >= n).then_some(())
            })
            .await;
        }
    };
    answered(8).await;
    for node in 0..3 {
        let before = done.load(Ordering::SeqCst);
        app.nats.cluster().lame_duck(node).await;
        app.nats.cluster().restart(node).await;
        let name = format!("n{}", node + 1);
        eventually(
            "the restarted node's replica to be current",
            WAIT,
            || async {
                let mut stream = app.broker.jetstream().get_stream("JOBS").await.ok()?;
                let info = stream.info().await.ok()?;
                let cluster = info.cluster.clone()?;
                let current = cluster.leader.as_deref() == Some(name.as_str())
                    || cluster.replicas.iter().any(|r| r.name == name && r.current);
                current.then_some(())
            },
        )
        .await;
        // Requests went on through this node's restart, and go on after it.
        answered(before + 8).await;
    }
    stop.cancel();
    let answers = load.await.expect("load");
    assert!(
        answers.refused.is_empty(),
        "failed requests: {:?}",
        answers.refused
    );
    assert_each_accepted_job_once(&app, &answers.accepted).await;
}
db_test!(a_rolling_restart_in_lame_duck_mode_fails_no_request);
