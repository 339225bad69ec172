//! Operators: replay rebuilds the projection identically, verify catches a corrupt row,
//! swept jobs never come back as live ones, the admin API drives a replay.

use std::time::Duration;

use jobstream_core::event::{Envelope, Event, JobSpec, Priority};
use jobstream_core::subject::QueueName;
use jobstream_entity::queued_job;
use jobstream_projector::replay::{self, Progress, ReplayOptions};
use jobstream_projector::{Projector, ProjectorConfig};
use jobstream_testkit::{Backend, eventually};
use migration::MigratorTrait;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, EntityTrait, QueryOrder};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::console::Browser;
use crate::helpers::http::Answer;
use crate::helpers::{Options, TestApp, WAIT, connect, db_test};

fn spec(owner: &str, i: usize, max_attempts: u32) -> JobSpec {
    JobSpec {
        kind: "echo".into(),
        queue: QueueName::default_queue(),
        owner: owner.into(),
        payload: json!({ "i": i }),
        priority: Priority::Normal,
        max_attempts,
        timeout_ms: 60_000,
        run_at: None,
        idempotency_key: None,
        result_ttl_ms: None,
        backoff: None,
    }
}

fn started(id: Uuid, attempt: u32) -> Envelope {
    Envelope::new(
        id,
        attempt,
        Event::Started {
            worker: "w1".into(),
        },
    )
}

/// One job's events: succeeded (i % 3 == 0), failed after a retry (1), cancelled while queued (2).
fn job_events(i: usize) -> Vec<Envelope> {
    let id = Uuid::now_v7();
    let owner = if i.is_multiple_of(2) { "alice" } else { "bob" };
    match i % 3 {
        0 => vec![
            Envelope::new(id, 0, Event::Queued(spec(owner, i, 3))),
            started(id, 1),
            Envelope::new(
                id,
                1,
                Event::Succeeded {
                    result: json!({ "i": i }),
                },
            ),
        ],
        1 => vec![
            Envelope::new(id, 0, Event::Queued(spec(owner, i, 2))),
            started(id, 1),
            Envelope::new(
                id,
                1,
                Event::Retrying {
                    error: "boom".into(),
                    retry_in_ms: 10,
                },
            ),
            started(id, 2),
            Envelope::new(
                id,
                2,
                Event::Failed {
                    error: "boom again".into(),
                },
            ),
        ],
        _ => vec![
            Envelope::new(id, 0, Event::Queued(spec(owner, i, 3))),
            Envelope::new(
                id,
                0,
                Event::Cancelled {
                    reason: Some("cancelled by test".into()),
                },
            ),
        ],
    }
}

async fn all_rows(db: &sea_orm::DatabaseConnection) -> Vec<queued_job::Model> {
    queued_job::Entity::find()
        .order_by_asc(queued_job::Column::Id)
        .all(db)
        .await
        .unwrap()
}

fn count(rows: &[queued_job::Model], status: &str) -> usize {
    rows.iter().filter(|r| r.status == status).count()
}

async fn ten_thousand_mixed_jobs_replay_to_identical_rows(backend: Backend) {
    let mut app = TestApp::with(backend, Options::without_worker()).await;
    app.publish_jobs(0..10_000, job_events).await;
    app.wait_projected().await;
    let live = app.rows().await;
    assert_eq!(live.len(), 10_000);
    assert_eq!(
        (
            count(&live, "succeeded"),
            count(&live, "failed"),
            count(&live, "cancelled")
        ),
        (3334, 3333, 3333)
    );

    // verify agrees with the live projection.
    let out = app.jobstream(&["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK"), "{stdout}");

    // Into another database: the same rows, every column.
    let other = app.db.sibling().await;
    let summary = replay::replay_into(
        &app.broker,
        &other.conn,
        &ReplayOptions::default(),
        &Progress::default(),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(summary.jobs, 10_000);
    assert_eq!(all_rows(&other.conn).await, live, "--into: identical rows");

    // Drop the tables, replay into the live database: the same rows, every column.
    app.projector.take().unwrap().stop().await;
    migration::Migrator::fresh(&app.db.conn).await.unwrap();
    assert!(app.rows().await.is_empty());
    let out = app.jobstream(&["replay"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "replay: {stderr}");
    assert!(stderr.contains("replay done"), "{stderr}");
    assert_eq!(app.rows().await, live, "replayed rows equal the live ones");

    // A replay swapped in while the projector runs and events keep coming: nothing is
    // applied twice or lost across the swap.
    app.start_projector().await;
    let more = app.publish_jobs(10_000..10_300, job_events);
    let (progress, opts, cancel) = (
        Progress::default(),
        ReplayOptions::default(),
        CancellationToken::new(),
    );
    let swap = replay::replay_live(&app.broker, &app.db.conn, &opts, &progress, &cancel);
    let (summary, ()) = tokio::join!(swap, more);
    let summary = summary.unwrap();
    assert!(!summary.interrupted);
    assert!(progress.snapshot().finished);
    app.wait_projected().await;
    let report = replay::verify(
        &app.broker,
        &app.db.conn,
        "projector",
        Duration::from_secs(86_400),
    )
    .await
    .unwrap();
    assert!(report.is_clean(), "{:?}", report.differences);
    assert_eq!(report.projected, 10_300);

    // Corrupt one row: verify fails and names it and the column.
    let victim = live[4321].id.clone();
    tamper(&app, &victim).await;
    let out = app.jobstream(&["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "verify must fail: {stdout}");
    assert!(stdout.contains(&victim), "{stdout}");
    assert!(
        stdout.contains("status: projection \"running\""),
        "{stdout}"
    );
    assert_eq!(stdout.matches("job ").count(), 1, "only that job: {stdout}");
}
db_test!(ten_thousand_mixed_jobs_replay_to_identical_rows);

async fn a_replay_never_brings_swept_jobs_back_as_live(backend: Backend) {
    let app = TestApp::with(backend, Options::without_worker()).await;
    let queue = QueueName::default_queue();
    let publish = |evs: Vec<Envelope>| {
        let (broker, queue) = (&app.broker, &queue);
        async move {
            let mut seqs = Vec::new();
            for e in evs {
                seqs.push(broker.publish(&e, queue, None).await.unwrap());
            }
            seqs
        }
    };
    // A finished job; a job whose first events have left the stream (retention); a running job.
    let finished = job_events(0);
    let expired = job_events(3);
    let expired_seqs = publish(expired.clone()).await;
    publish(finished.clone()).await;
    let running = Uuid::now_v7();
    publish(vec![
        Envelope::new(running, 0, Event::Queued(spec("alice", 9, 3))),
        started(running, 1),
    ])
    .await;
    app.wait_projected().await;

    // The TTL sweep removes both finished jobs; the running one stays.
    let sweeper = Projector::build(
        connect(&app.nats.url(), "sweeper").await,
        app.db.conn.clone(),
        ProjectorConfig {
            job_ttl: Duration::ZERO,
            ..ProjectorConfig::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(sweeper.sweep().await.unwrap(), 2);
    // The oldest job's queued and started events expire from the stream.
    let stream = app.broker.stream().await.unwrap();
    for seq in &expired_seqs[..2] {
        stream.delete_message(*seq).await.unwrap();
    }
    let live = app.rows().await;
    assert_eq!(live.len(), 1);

    let cancel = CancellationToken::new();
    let opts = ReplayOptions {
        job_ttl: Duration::ZERO,
        ..ReplayOptions::default()
    };
    replay::replay_live(
        &app.broker,
        &app.db.conn,
        &opts,
        &Progress::default(),
        &cancel,
    )
    .await
    .unwrap();
    assert_eq!(
        app.rows().await,
        live,
        "with the same TTL: exactly the live rows"
    );
    let report = replay::verify(&app.broker, &app.db.conn, "projector", Duration::ZERO)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.differences);
    assert_eq!(report.swept, 1);

    // Even with a long TTL, a swept job comes back finished, never live; the expired one not at all.
    let opts = ReplayOptions::default();
    replay::replay_live(
        &app.broker,
        &app.db.conn,
        &opts,
        &Progress::default(),
        &cancel,
    )
    .await
    .unwrap();
    let rows = app.rows().await;
    assert!(!rows.iter().any(|r| r.id == expired[0].job_id.to_string()));
    for r in &rows {
        if r.id != running.to_string() {
            assert_eq!(r.status, "succeeded", "{r:?}");
        }
    }
    assert_eq!(rows.len(), 2);
}
db_test!(a_replay_never_brings_swept_jobs_back_as_live);

async fn admins_replay_over_the_api(backend: Backend) {
    let app = TestApp::with(backend, Options::without_worker()).await;
    app.publish_jobs(0..30, job_events).await;
    app.wait_projected().await;
    let live = app.rows().await;
    let (alice, admin) = (app.token("alice", false), app.token("root", true));
    let post = |token: String, body: serde_json::Value| {
        let http = app.http.clone();
        let url = format!("{}/v1/admin/replay", app.base);
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        post(alice.clone(), json!({})).await.status(),
        StatusCode::FORBIDDEN
    );
    let (status, _) = app.get(&alice, "/v1/admin/replay").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let bad = post(admin.clone(), json!({"from_seq": 0})).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let res = post(admin.clone(), json!({})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let done = eventually("replay to finish", WAIT, || async {
        let (status, p) = app.get(&admin, "/v1/admin/replay").await;
        assert_eq!(status, StatusCode::OK);
        (p["finished"] == true).then_some(p)
    })
    .await;
    assert_eq!(done["phase"], "done", "{done}");
    assert_eq!(done["summary"]["jobs"], 30);
    assert!(done["events_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(app.rows().await, live);
}
db_test!(admins_replay_over_the_api);

async fn an_interrupted_replay_resumes_and_never_shows_half_built_tables(backend: Backend) {
    let app = TestApp::with(backend, Options::without_worker()).await;
    app.publish_jobs(0..900, job_events).await;
    app.wait_projected().await;
    let live = app.rows().await;

    // Interrupted (as by Ctrl-C) once 300 events are folded into the shadow.
    let (progress, cancel) = (
        std::sync::Arc::new(Progress::default()),
        CancellationToken::new(),
    );
    let watcher = {
        let (progress, cancel) = (progress.clone(), cancel.clone());
        tokio::spawn(async move {
            while progress.snapshot().events < 300 {
                tokio::task::yield_now().await;
            }
            cancel.cancel();
        })
    };
    let opts = ReplayOptions {
        batch_size: 100,
        ..ReplayOptions::default()
    };
    let first = replay::replay_live(&app.broker, &app.db.conn, &opts, &progress, &cancel)
        .await
        .unwrap();
    watcher.await.unwrap();
    assert!(first.interrupted, "{first:?}");
    assert!(first.checkpoint < 3000, "{first:?}");
    assert_eq!(progress.snapshot().phase, "interrupted");
    assert_eq!(
        app.rows().await,
        live,
        "the live tables are untouched until the swap"
    );

    // Run again: it resumes after the shadow's checkpoint and swaps in identical rows.
    let second = replay::replay_live(
        &app.broker,
        &app.db.conn,
        &opts,
        &Progress::default(),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(second.resumed && !second.interrupted, "{second:?}");
    assert_eq!(second.from_seq, first.checkpoint + 1);
    assert_eq!(app.rows().await, live);
}
db_test!(an_interrupted_replay_resumes_and_never_shows_half_built_tables);

async fn a_replay_from_a_sequence_or_a_time_rebuilds_only_later_jobs(backend: Backend) {
    let app = TestApp::with(backend, Options::without_worker()).await;
    app.publish_jobs(0..30, job_events).await;
    let boundary = jobstream_core::stream_read::bounds(&app.broker)
        .await
        .unwrap()
        .last;
    let since = jobstream_core::event::now();
    app.publish_jobs(30..60, job_events).await;
    app.wait_projected().await;
    let later: Vec<queued_job::Model> = app
        .rows()
        .await
        .into_iter()
        .filter(|r| {
            u64::try_from(r.last_seq).unwrap() > boundary && r.payload["i"].as_u64().unwrap() >= 30
        })
        .collect();
    assert_eq!(later.len(), 30);
    for start in [
        replay::ReplayStart::Seq(boundary + 1),
        replay::ReplayStart::Since(since),
    ] {
        let other = app.db.sibling().await;
        let opts = ReplayOptions {
            start,
            ..ReplayOptions::default()
        };
        replay::replay_into(
            &app.broker,
            &other.conn,
            &opts,
            &Progress::default(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(all_rows(&other.conn).await, later, "{start:?}");
    }
}
db_test!(a_replay_from_a_sequence_or_a_time_rebuilds_only_later_jobs);

async fn every_api_instance_reports_the_one_replay_the_projector_runs(backend: Backend) {
    let mut app = TestApp::with(backend, Options::api_only()).await;
    let admin = app.token("root", true);
    let (second, _api2) = app.second_api().await;
    let http = app.http.clone();
    let post = |base: String| {
        let (http, admin) = (http.clone(), admin.clone());
        async move {
            http.post(format!("{base}/v1/admin/replay"))
                .bearer_auth(admin)
                .json(&json!({}))
                .send()
                .await
                .unwrap()
        }
    };
    // Nobody runs replays without a projector: said at once, not accepted and lost.
    let res = post(app.base.clone()).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = app.get(&admin, "/v1/admin/replay").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    app.start_projector().await;
    app.publish_jobs(0..3000, job_events).await;
    app.wait_projected().await;
    let live = app.rows().await;

    // One replay at a time, whichever API instance is asked.
    let res = post(app.base.clone()).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let res = post(second.clone()).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let problem: serde_json::Value = res.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("already running"),
        "{problem}"
    );

    // Both instances read the same progress, to its end.
    let get = |base: String| {
        let (http, admin) = (http.clone(), admin.clone());
        async move {
            let res = http
                .get(format!("{base}/v1/admin/replay"))
                .bearer_auth(admin)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            res.json::<serde_json::Value>().await.unwrap()
        }
    };
    let done = eventually("replay to finish", WAIT, || async {
        let p = get(app.base.clone()).await;
        (p["finished"] == true).then_some(p)
    })
    .await;
    assert_eq!(done["phase"], "done", "{done}");
    assert_eq!(done["summary"]["jobs"], 3000);
    assert_eq!(get(second.clone()).await, done, "the same progress on both");
    assert_eq!(app.rows().await, live);

    // Finished, it no longer holds the lock: another may start.
    assert_eq!(post(second).await.status(), StatusCode::ACCEPTED);
}
db_test!(every_api_instance_reports_the_one_replay_the_projector_runs);

/// Every `POST /v1/admin/verify` answer, problem or not.
async fn post_verify(app: &TestApp, token: &str, body: serde_json::Value) -> Answer {
    app.send_json(reqwest::Method::POST, "/v1/admin/verify", token, &body)
        .await
        .problem_if_error()
}

/// Waits for the verify that started at `started_at` to end; returns its state.
async fn verify_ended(
    app: &TestApp,
    admin: &str,
    started_at: &serde_json::Value,
) -> serde_json::Value {
    eventually("verify to finish", WAIT, || async {
        let (status, s) = app.get(admin, "/v1/admin/verify").await;
        assert_eq!(status, StatusCode::OK, "{s}");
        (&s["started_at"] == started_at && s["status"] != "running").then_some(s)
    })
    .await
}

/// Sets a projection row's status behind the projector's back (and recounts
/// `job_counts`, so the row is the one thing that differs).
async fn tamper(app: &TestApp, id: &str) {
    app.db
        .conn
        .execute_unprepared(&format!(
            "UPDATE queued_jobs SET status = 'running' WHERE id = '{id}'"
        ))
        .await
        .unwrap();
    jobstream_projector::counts::rebuild(&app.db.conn)
        .await
        .expect("recount");
}

async fn verify_names_job_counts_that_do_not_match_the_rows(backend: Backend) {
    let app = TestApp::with(backend, Options::without_worker()).await;
    app.publish_jobs(0..20, job_events).await;
    app.wait_projected().await;
    let out = app.jobstream(&["verify"]);
    assert!(
        out.status.success(),
        "clean before: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (queue, owner, status, jobs): (String, String, String, i64) =
        jobstream_entity::job_count::Entity::find()
            .all(&app.db.conn)
            .await
            .expect("job_counts")
            .into_iter()
            .find(|c| c.jobs > 0)
            .map(|c| (c.queue, c.owner, c.status, c.jobs))
            .expect("a counted group");
    app.db
        .conn
        .execute_unprepared(&format!(
            "UPDATE job_counts SET jobs = jobs + 5 WHERE queue = '{queue}' AND owner = '{owner}' AND status = '{status}'"
        ))
        .await
        .unwrap();
    let out = app.jobstream(&["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "verify must fail: {stdout}");
    let expected = format!(
        "job_counts {queue} {owner} {status}:\n    jobs: job_counts {}, job rows {jobs}",
        jobs + 5
    );
    assert!(stdout.contains(&expected), "{expected:?} in {stdout}");
    assert!(
        !stdout.lines().any(|l| l.starts_with("job ")),
        "no job row differs: {stdout}"
    );
}
db_test!(verify_names_job_counts_that_do_not_match_the_rows);

async fn admins_verify_over_the_api_and_see_what_differs(backend: Backend) {
    let app = TestApp::with(backend, Options::without_worker()).await;
    app.publish_jobs(0..30, job_events).await;
    let jobs_projected = app.wait_projected().await;
    let (alice, admin) = (app.token("alice", false), app.token("root", true));

    for answer in [
        post_verify(&app, &alice, json!({})).await,
        Answer::of(
            app.http
                .get(format!("{}/v1/admin/verify", app.base))
                .bearer_auth(&alice),
        )
        .await
        .problem_if_error(),
    ] {
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    }
    let (status, _) = app.get(&admin, "/v1/admin/verify").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no verify has run yet");
    for bad in [json!({"job_ttl_secs": "soon"}), json!({"depth": 3})] {
        let answer = post_verify(&app, &admin, bad.clone()).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }

    // Clean after the jobs ran.
    let started = post_verify(&app, &admin, json!({})).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    assert_eq!(started.body["status"], "running");
    let done = verify_ended(&app, &admin, &started.body["started_at"]).await;
    assert_eq!(done["status"], "done", "{done}");
    let result = &done["result"];
    assert_eq!(result["clean"], true, "{done}");
    assert_eq!(result["difference_count"], 0);
    assert_eq!(result["projected"], 30);
    // (Later events, e.g. the callers' user records, may be covered too.)
    assert!(
        result["checkpoint"].as_u64().unwrap() >= jobs_projected,
        "{done}"
    );
    assert!(done["finished_at"].is_string(), "{done}");

    // A row changed behind the projector's back is named, with its column.
    let victim = app.rows().await[7].id.clone();
    tamper(&app, &victim).await;
    let again = post_verify(&app, &admin, json!({})).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    let done = verify_ended(&app, &admin, &again.body["started_at"]).await;
    let result = &done["result"];
    assert_eq!(result["clean"], false, "{done}");
    assert_eq!(result["difference_count"], 1, "{done}");
    assert_eq!(result["differences"][0]["job_id"], victim.as_str());
    let fields = result["differences"][0]["fields"].to_string();
    assert!(
        fields.contains(r#"status: projection \"running\""#),
        "{fields}"
    );
}
db_test!(admins_verify_over_the_api_and_see_what_differs);

async fn one_verify_at_a_time_and_none_during_a_replay(backend: Backend) {
    let mut app = TestApp::with(backend, Options::api_only()).await;
    let admin = app.token("root", true);
    // Nobody runs verifies without a projector: said at once, not accepted and lost.
    let answer = post_verify(&app, &admin, json!({})).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    app.start_projector().await;
    app.publish_jobs(0..10, job_events).await;
    app.wait_projected().await;

    // The bucket entries are the locks, whichever projector instance holds them: a verify
    // (or replay) another instance is running is what is written here, kept fresh.
    let store = jobstream_core::replay::open_bucket(&app.broker)
        .await
        .unwrap();
    let now = jobstream_core::event::now();
    let hold = |key: String, value: serde_json::Value| {
        let store = store.clone();
        async move {
            store
                .put(key, serde_json::to_vec(&value).unwrap().into())
                .await
                .unwrap();
        }
    };
    let stream = app.broker.stream_name();
    let verify_key = jobstream_core::verify::state_key(stream, "projector");
    let replay_key = jobstream_core::replay::progress_key(stream, "projector");
    hold(
        verify_key.clone(),
        json!({"status": "running", "started_at": now, "updated_at": now}),
    )
    .await;
    let busy = post_verify(&app, &admin, json!({})).await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.body);
    assert!(
        busy.body["detail"]
            .as_str()
            .unwrap()
            .contains("a verify is already running"),
        "{}",
        busy.body
    );
    let (status, shown) = app.get(&admin, "/v1/admin/verify").await;
    assert_eq!(
        (status, &shown["status"]),
        (StatusCode::OK, &json!("running"))
    );

    hold(
        verify_key,
        json!({"status": "done", "started_at": now, "finished_at": now}),
    )
    .await;
    hold(
        replay_key.clone(),
        json!({"phase": "folding", "position": 5, "target": 50, "events": 5,
               "events_per_sec": 1.0, "eta_secs": null, "finished": false, "error": null,
               "summary": null, "updated_at": now}),
    )
    .await;
    let during_replay = post_verify(&app, &admin, json!({})).await;
    assert_eq!(during_replay.status, StatusCode::CONFLICT);
    assert!(
        during_replay.body["detail"]
            .as_str()
            .unwrap()
            .contains("a replay is running"),
        "{}",
        during_replay.body
    );

    // Once the replay is over, a verify starts and finishes clean.
    store.delete(replay_key).await.unwrap();
    let started = post_verify(&app, &admin, json!({})).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let done = verify_ended(&app, &admin, &started.body["started_at"]).await;
    assert_eq!(done["result"]["clean"], true, "{done}");
}
db_test!(one_verify_at_a_time_and_none_during_a_replay);

async fn the_operations_page_runs_verify_and_shows_its_result(backend: Backend) {
    let app = TestApp::with(backend, Options::without_worker()).await;
    app.publish_jobs(0..20, job_events).await;
    app.wait_projected().await;
    let victim = app.rows().await[3].id.clone();
    tamper(&app, &victim).await;
    let (alice, admin) = (app.token("alice", false), app.token("root", true));
    let (a, root) = (
        Browser::login(&app, &alice).await,
        Browser::login(&app, &admin).await,
    );

    let page = root.get("/ui/operations").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("No verify has run."), "{}", page.body);
    assert!(page.body.contains("Run verify"));
    assert!(
        !page.body.contains("command line"),
        "the old CLI-only hint is gone"
    );
    let token = page.csrf();
    let alices_token = a.get("/ui/jobs").await.csrf();
    assert_eq!(
        a.post("/ui/operations/verify", &[("csrf", &alices_token)])
            .await
            .status,
        StatusCode::FORBIDDEN,
        "admins only"
    );
    assert_eq!(
        root.post("/ui/operations/verify", &[("csrf", "forged")])
            .await
            .status,
        StatusCode::FORBIDDEN,
        "the session's CSRF token only"
    );
    let (status, _) = app.get(&admin, "/v1/admin/verify").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "refused posts started nothing"
    );

    let started = root
        .post("/ui/operations/verify", &[("csrf", &token)])
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    assert!(started.body.contains("Verify started."), "{}", started.body);
    // While it runs, the page polls the verify's part (and only then).
    assert_eq!(
        started.body.contains("<dd>running</dd>"),
        started.body.contains(r##"hx-select="#verify""##),
        "{}",
        started.body
    );

    let done = eventually("the page to show the verify's result", WAIT, || async {
        let p = root.get("/ui/operations").await;
        p.body.contains("<dd>done</dd>").then_some(p.body)
    })
    .await;
    assert!(done.contains("1 difference(s)"), "{done}");
    assert!(done.contains(&victim), "{done}");
    assert!(done.contains("status: projection"), "{done}");
    assert!(
        !done.contains(r##"hx-select="#verify""##),
        "finished: no more polling"
    );
}
db_test!(the_operations_page_runs_verify_and_shows_its_result);
