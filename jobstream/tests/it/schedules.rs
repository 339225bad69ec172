//! Periodic jobs without a beat process: JetStream message schedules fire them, once
//! per firing, however many API and worker processes run.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use futures::StreamExt;
use jobstream_api::routes::schedules::ScheduleView;
use jobstream_core::stored::{StoredMessage, fired_sequence};
use jobstream_core::{EventType, schedule};
use jobstream_entity::{queued_job, schedule as schedule_row};
use jobstream_projector::ProjectorConfig;
use jobstream_testkit::{Backend, eventually};
use reqwest::StatusCode;
use sea_orm::{EntityTrait, QueryOrder};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::console::Browser;
use crate::helpers::stream::fired_subject;
use crate::helpers::{Options, TestApp, WAIT, db_test};

async fn each_firing_produces_exactly_one_job_with_two_apis_and_two_workers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (base2, _api2) = app.second_api().await;
    let _worker2 = app.extra_worker("worker-2").await;
    let alice = app.token("alice", false);
    let body = json!({"name": "tick", "every": "1s", "kind": "echo", "payload": {"tick": true}});

    let (status, created) = app.create_schedule(&app.base, &alice, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let created: ScheduleView = serde_json::from_value(created).expect("a schedule");
    assert_eq!(created.every.as_deref(), Some("1s"));
    assert_eq!(created.owner, "alice");
    // The same schedule through the other API instance replaces it: still one schedule.
    let (status, _) = app.create_schedule(&base2, &alice, &body).await;
    assert_eq!(status, StatusCode::OK);
    app.when_projected("the schedule to be listed", || async {
        (app.schedules(&alice).await.len() == 1).then_some(())
    })
    .await;

    // Let it fire a few times while two workers pull the queue.
    eventually("three fired jobs", WAIT, || async {
        (app.fired_jobs("alice", "tick").await.len() >= 3).then_some(())
    })
    .await;
    assert_eq!(
        app.delete_schedule(&base2, &alice, "tick").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.delete_schedule(&app.base, &alice, "tick").await,
        StatusCode::NOT_FOUND
    );

    // It fires no more (a bounded wait for something that must not happen): watch the
    // subject its firings land on, then count what the stream holds.
    let mut firings = app
        .broker
        .client()
        .subscribe(fired_subject("alice", "tick"))
        .await
        .expect("subscribe");
    let fired = app.fired_jobs("alice", "tick").await;
    let more = tokio::time::timeout(Duration::from_millis(2500), firings.next()).await;
    assert!(more.is_err(), "a deleted schedule fired again");
    assert_eq!(app.fired_jobs("alice", "tick").await.len(), fired.len());

    // Every firing is exactly one job, run exactly once; ids are derived from the fired message.
    let ids: Vec<Uuid> = fired.iter().map(|(_, e)| e.job_id).collect();
    for (seq, env) in &fired {
        assert_eq!(fired_sequence(env.job_id), *seq);
        let id = env.job_id.to_string();
        let row = app
            .wait_for_row(&id, "fired job to succeed", |r| r.status == "succeeded")
            .await;
        assert_eq!(row.owner, "alice");
        assert_eq!(row.result, Some(json!({"tick": true})));
        assert_eq!(app.attempts_run(&id).await.len(), 1, "ran once");
        assert_eq!(app.events_of(&id, EventType::Succeeded).await.len(), 1);
        // GET works for a fired job, and its history starts with the fired `queued` event.
        let (status, job) = app.get(&alice, &format!("/v1/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(job["status"], "succeeded");
    }
    let rows = app.rows().await;
    assert_eq!(
        rows.len(),
        fired.len(),
        "no job without a firing, no firing without a job"
    );
    app.when_projected("the schedule to leave the list", || async {
        app.schedules(&alice).await.is_empty().then_some(())
    })
    .await;

    // A replay (a fresh fold of the same stream) derives the same job ids.
    let fresh = app.clean_fold("replay").await;
    let replayed = queued_job::Entity::find()
        .order_by_asc(queued_job::Column::Id)
        .all(&fresh.conn)
        .await
        .unwrap();
    let mut live = rows;
    live.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(replayed, live, "a replay rebuilds the same jobs, same ids");
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(
        replayed.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        sorted.iter().map(Uuid::to_string).collect::<Vec<_>>()
    );
    assert!(
        schedule_row::Entity::find()
            .all(&fresh.conn)
            .await
            .unwrap()
            .is_empty(),
        "the deleted schedule is not rebuilt"
    );
}
db_test!(each_firing_produces_exactly_one_job_with_two_apis_and_two_workers);

async fn schedules_are_owned_validated_and_cron_fires(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice", false);
    let bob = app.token("bob", false);
    let admin = app.token("root", true);

    let before = app.stream_messages().await;
    for (body, field) in [
        (
            json!({"name": "x", "cron": "* * * * *", "kind": "echo"}),
            "cron",
        ),
        (
            json!({"name": "x", "cron": "0 0 25 * * *", "kind": "echo"}),
            "cron",
        ),
        (
            json!({"name": "x", "every": "100ms", "kind": "echo"}),
            "every",
        ),
        (
            json!({"name": "x", "every": "5s", "cron": "@daily", "kind": "echo"}),
            "every",
        ),
        (json!({"name": "x", "kind": "echo"}), "cron"),
        (
            json!({"name": "a.b", "every": "5s", "kind": "echo"}),
            "name",
        ),
        (json!({"name": "x", "every": "5s", "kind": "nope"}), "kind"),
        (
            json!({"name": "x", "every": "5s", "kind": "echo", "delay_ms": 5}),
            "delay_ms",
        ),
    ] {
        let (status, p) = app.create_schedule(&app.base, &alice, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
    assert_eq!(app.stream_messages().await, before, "nothing published");

    // Same name, two owners: two schedules. A cron schedule fires every second.
    let every_second = json!({"name": "n", "cron": "* * * * * *", "kind": "echo", "payload": "a"});
    assert_eq!(
        app.create_schedule(&app.base, &alice, &every_second)
            .await
            .0,
        StatusCode::CREATED
    );
    let hourly = json!({"name": "n", "cron": "@hourly", "kind": "echo", "payload": "b"});
    assert_eq!(
        app.create_schedule(&app.base, &bob, &hourly).await.0,
        StatusCode::CREATED
    );
    let all = app
        .when_projected("both schedules listed for the admin", || async {
            let list = app.schedules(&admin).await;
            (list.len() == 2).then_some(list)
        })
        .await;
    assert_eq!(all[0].owner, "alice");
    let mine = app.schedules(&alice).await;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].cron.as_deref(), Some("* * * * * *"));

    let row = app
        .when_projected("a cron-fired job to succeed", || async {
            app.rows()
                .await
                .into_iter()
                .find(|r| r.owner == "alice" && r.status == "succeeded")
        })
        .await;
    assert_eq!(row.result, Some(json!("a")));

    // Bob deleting "n" deletes his own; alice's keeps firing until she deletes it; an admin may delete anyone's.
    assert_eq!(
        app.delete_schedule(&app.base, &bob, "n").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.delete_schedule(&app.base, &bob, "n?owner=alice").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete_schedule(&app.base, &admin, "n?owner=alice")
            .await,
        StatusCode::NO_CONTENT
    );
    app.when_projected("no schedules left", || async {
        app.schedules(&admin).await.is_empty().then_some(())
    })
    .await;
}
db_test!(schedules_are_owned_validated_and_cron_fires);

/// `POST /v1/schedules/{path}` (`pause` or `resume`, maybe with `?owner=`): status and body.
async fn set_state(app: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    let (status, content_type, body) = app
        .post(token, &format!("/v1/schedules/{path}"), None)
        .await;
    if !status.is_success() {
        assert_eq!(content_type, "application/problem+json", "{body}");
    }
    (status, body)
}

/// The latest record of `owner`'s schedule `name` in the stream: its sequence.
async fn record_seq(app: &TestApp, owner: &str, name: &str) -> u64 {
    let key = schedule::schedule_key(owner, name);
    app.broker
        .last_on_subject(&schedule::subject(&key))
        .await
        .expect("read")
        .expect("a schedule record")
        .sequence
}

/// Waits `window` for a firing of `owner`'s `name` (a bounded wait for something that
/// must not happen, or that must): whether one came.
async fn fires_within(app: &TestApp, owner: &str, name: &str, window: Duration) -> bool {
    let mut firings = app
        .broker
        .client()
        .subscribe(fired_subject(owner, name))
        .await
        .expect("subscribe");
    tokio::time::timeout(window, firings.next()).await.is_ok()
}

async fn a_paused_schedule_fires_no_more_until_resumed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice", false);
    let body = json!({"name": "tick", "every": "1s", "kind": "echo", "payload": "t"});
    assert_eq!(
        app.create_schedule(&app.base, &alice, &body).await.0,
        StatusCode::CREATED
    );
    eventually("a first firing", WAIT, || async {
        (!app.fired_jobs("alice", "tick").await.is_empty()).then_some(())
    })
    .await;

    let (status, paused) = set_state(&app, &alice, "tick/pause").await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    let paused: ScheduleView = serde_json::from_value(paused).expect("a schedule");
    assert!(paused.paused);
    assert_eq!(
        paused.next_fire_at, None,
        "a paused schedule has no next firing"
    );
    assert!(paused.last_fired_at.is_some(), "it keeps its last firing");
    // Pausing a paused schedule is a success that stores nothing.
    let seq = record_seq(&app, "alice", "tick").await;
    let (status, again) = set_state(&app, &alice, "tick/pause").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["paused"], true);
    assert_eq!(record_seq(&app, "alice", "tick").await, seq);

    let fired = app.fired_jobs("alice", "tick").await.len();
    assert!(
        !fires_within(&app, "alice", "tick", Duration::from_millis(2500)).await,
        "a paused schedule fired"
    );
    assert_eq!(app.fired_jobs("alice", "tick").await.len(), fired);
    let listed = app
        .when_projected("the schedule listed as paused", || async {
            app.schedules(&alice).await.into_iter().find(|s| s.paused)
        })
        .await;
    assert_eq!(listed.next_fire_at, None);
    assert_eq!(listed.last_fired_at, paused.last_fired_at);

    // A replay (a fresh fold of the stream, where the rollup left only the paused record)
    // rebuilds the same row: state, creation time, last firing.
    let live = schedule_row::Entity::find()
        .all(&app.db.conn)
        .await
        .unwrap();
    let fresh = app.clean_fold("replay-paused").await;
    let replayed = schedule_row::Entity::find().all(&fresh.conn).await.unwrap();
    assert_eq!(
        replayed, live,
        "a replay rebuilds the paused schedule as it is"
    );

    // Resumed, it fires again; resuming an active schedule is a success that stores nothing.
    let (status, resumed) = set_state(&app, &alice, "tick/resume").await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    let resumed: ScheduleView = serde_json::from_value(resumed).expect("a schedule");
    assert!(!resumed.paused);
    assert!(resumed.next_fire_at.is_some());
    assert_eq!(
        resumed.created_at, listed.created_at,
        "still the same definition"
    );
    let seq = record_seq(&app, "alice", "tick").await;
    assert_eq!(
        set_state(&app, &alice, "tick/resume").await.0,
        StatusCode::OK
    );
    assert_eq!(record_seq(&app, "alice", "tick").await, seq);
    let after = eventually("a firing after the resume", WAIT, || async {
        let all = app.fired_jobs("alice", "tick").await;
        (all.len() > fired).then_some(all)
    })
    .await;
    // A resumed firing is a job like any other: it runs.
    let (_, last) = after.last().expect("a firing");
    app.wait_for_row(&last.job_id.to_string(), "the resumed firing to run", |r| {
        r.status == "succeeded" && r.result == Some(json!("t"))
    })
    .await;
    app.when_projected("the schedule listed as active", || async {
        app.schedules(&alice)
            .await
            .into_iter()
            .find(|s| !s.paused && s.created_at == listed.created_at)
    })
    .await;

    // A paused schedule can be deleted.
    assert_eq!(
        set_state(&app, &alice, "tick/pause").await.0,
        StatusCode::OK
    );
    assert_eq!(
        app.delete_schedule(&app.base, &alice, "tick").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        set_state(&app, &alice, "tick/resume").await.0,
        StatusCode::NOT_FOUND,
        "a deleted schedule cannot be resumed"
    );
    app.when_projected("the deleted schedule to leave the list", || async {
        app.schedules(&alice).await.is_empty().then_some(())
    })
    .await;
}
db_test!(a_paused_schedule_fires_no_more_until_resumed);

/// Waits until the listed schedule `name` shows the latest firing in the stream, then
/// checks its next firing is the one nats-server announced on that firing
/// (`Nats-Schedule-Next`): the computation agrees with the server.
async fn next_firing_agrees_with_the_server(
    app: &TestApp,
    token: &str,
    name: &str,
) -> ScheduleView {
    let subject = fired_subject("alice", name);
    let (view, announced) = eventually("the last firing projected", WAIT, || async {
        let msg = app.broker.last_on_subject(&subject).await.ok()??;
        let fired_at = StoredMessage::from_raw(&msg).time.trunc_subsecs(6);
        let announced = msg.headers.get("Nats-Schedule-Next")?.as_str().to_owned();
        let view = app
            .schedules(token)
            .await
            .into_iter()
            .find(|s| s.name == name)?;
        (view.last_fired_at == Some(fired_at)).then_some((view, announced))
    })
    .await;
    let announced: DateTime<Utc> = announced.parse().expect("an RFC 3339 time");
    assert_eq!(view.next_fire_at, Some(announced), "{name}: {view:?}");
    view
}

async fn next_and_last_firing_are_listed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice", false);
    let every = json!({"name": "every2", "every": "2s", "kind": "echo"});
    let (status, created) = app.create_schedule(&app.base, &alice, &every).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let created: ScheduleView = serde_json::from_value(created).expect("a schedule");
    assert_eq!(created.last_fired_at, None);
    assert!(!created.paused);
    let cron = json!({"name": "cron3", "cron": "*/3 * * * * *", "kind": "echo"});
    assert_eq!(
        app.create_schedule(&app.base, &alice, &cron).await.0,
        StatusCode::CREATED
    );

    // In the future, within one interval (plus the rounding of the record's time to the second).
    let listed = app
        .when_projected("both schedules listed", || async {
            let list = app.schedules(&alice).await;
            (list.len() == 2).then_some(list)
        })
        .await;
    let now = Utc::now();
    for s in &listed {
        let next = s
            .next_fire_at
            .expect("an active schedule has a next firing");
        let interval = if s.name == "every2" { 2 } else { 3 };
        assert!(next > now - chrono::Duration::milliseconds(200), "{s:?}");
        assert!(
            next <= now + chrono::Duration::milliseconds(interval * 1000 + 600),
            "{s:?}"
        );
    }

    // Once it fired: the last firing is that of the latest fired job, and the next one is
    // what nats-server itself announced.
    for name in ["every2", "cron3"] {
        let view = next_firing_agrees_with_the_server(&app, &alice, name).await;
        let (_, env) = app
            .fired_jobs("alice", name)
            .await
            .pop()
            .expect("a fired job");
        let row = app
            .wait_for_row(&env.job_id.to_string(), "the fired job projected", |_| true)
            .await;
        let last = view.last_fired_at.expect("a last firing");
        assert!(last >= row.created_at, "{last} < {}", row.created_at);
    }
}
db_test!(next_and_last_firing_are_listed);

async fn another_user_cannot_pause_or_resume_your_schedule(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, bob, admin) = (
        app.token("alice", false),
        app.token("bob", false),
        app.token("root", true),
    );
    let body = json!({"name": "n", "every": "1h", "kind": "echo"});
    assert_eq!(
        app.create_schedule(&app.base, &alice, &body).await.0,
        StatusCode::CREATED
    );
    for path in [
        "n/pause",
        "n/pause?owner=alice",
        "n/resume?owner=alice",
        "nope/pause",
    ] {
        let (status, problem) = set_state(&app, &bob, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("no schedule"),
            "{problem}"
        );
    }
    let before = record_seq(&app, "alice", "n").await;
    assert_eq!(
        set_state(&app, &alice, "nope/resume").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        record_seq(&app, "alice", "n").await,
        before,
        "nothing stored"
    );
    // An admin names the owner.
    let (status, paused) = set_state(&app, &admin, "n/pause?owner=alice").await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["owner"], "alice");
    assert_eq!(paused["paused"], true);
    app.when_projected("alice sees her schedule paused", || async {
        app.schedules(&alice).await.into_iter().find(|s| s.paused)
    })
    .await;
    assert_eq!(set_state(&app, &alice, "n/resume").await.0, StatusCode::OK);
}
db_test!(another_user_cannot_pause_or_resume_your_schedule);

async fn the_console_shows_schedule_state_and_pauses_with_csrf(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice", false);
    let body = json!({"name": "nightly", "every": "1h", "kind": "echo"});
    assert_eq!(
        app.create_schedule(&app.base, &alice, &body).await.0,
        StatusCode::CREATED
    );
    let a = Browser::login(&app, &alice).await;
    let page = eventually("the schedule on the page", WAIT, || async {
        let p = a.get("/ui/schedules").await;
        p.body.contains("nightly").then_some(p)
    })
    .await;
    assert!(page.body.contains(">active<"), "{}", page.body);
    assert!(
        page.body
            .contains(r#"action="/ui/schedules/nightly/pause""#)
    );
    assert!(page.body.contains("Next") && page.body.contains("Last"));
    let token = page.csrf();

    for form in [vec![], vec![("csrf", "forged")]] {
        let refused = a.post("/ui/schedules/nightly/pause", &form).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{form:?}");
    }
    assert!(
        !app.schedules(&alice).await[0].paused,
        "nothing paused without the token"
    );

    let paused = a
        .post("/ui/schedules/nightly/pause", &[("csrf", token.as_str())])
        .await;
    assert_eq!(paused.status, StatusCode::SEE_OTHER, "{}", paused.body);
    let page = eventually("the page to show it paused", WAIT, || async {
        let p = a.get("/ui/schedules").await;
        p.body.contains(">paused<").then_some(p)
    })
    .await;
    assert!(
        page.body
            .contains(r#"action="/ui/schedules/nightly/resume""#)
    );
    assert!(app.schedules(&alice).await[0].paused);

    let resumed = a
        .post("/ui/schedules/nightly/resume", &[("csrf", token.as_str())])
        .await;
    assert_eq!(resumed.status, StatusCode::SEE_OTHER, "{}", resumed.body);
    eventually("the page to show it active again", WAIT, || async {
        a.get("/ui/schedules")
            .await
            .body
            .contains(">active<")
            .then_some(())
    })
    .await;
}
db_test!(the_console_shows_schedule_state_and_pauses_with_csrf);

async fn the_last_firing_outlives_the_sweep_of_its_jobs(backend: Backend) {
    let options = Options {
        projector_config: ProjectorConfig {
            job_ttl: Duration::from_millis(500),
            sweep_interval: Duration::from_millis(100),
            ..ProjectorConfig::default()
        },
        ..Options::default()
    };
    let app = TestApp::with(backend, options).await;
    let alice = app.token("alice", false);
    let body = json!({"name": "tick", "every": "1s", "kind": "echo"});
    assert_eq!(
        app.create_schedule(&app.base, &alice, &body).await.0,
        StatusCode::CREATED
    );
    eventually("a first firing", WAIT, || async {
        (!app.fired_jobs("alice", "tick").await.is_empty()).then_some(())
    })
    .await;
    // Paused, so the last firing stays the last one while its jobs are swept.
    assert_eq!(
        set_state(&app, &alice, "tick/pause").await.0,
        StatusCode::OK
    );
    let msg = app
        .broker
        .last_on_subject(&fired_subject("alice", "tick"))
        .await
        .expect("read")
        .expect("a firing");
    let fired_at = StoredMessage::from_raw(&msg).time.trunc_subsecs(6);
    app.when_projected("every fired job swept", || async {
        app.rows().await.is_empty().then_some(())
    })
    .await;
    let listed = app
        .when_projected("the paused schedule listed", || async {
            app.schedules(&alice).await.into_iter().find(|s| s.paused)
        })
        .await;
    assert_eq!(listed.last_fired_at, Some(fired_at));
}
db_test!(the_last_firing_outlives_the_sweep_of_its_jobs);
