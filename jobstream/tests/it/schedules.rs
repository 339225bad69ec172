//! Periodic jobs without a beat process: JetStream message schedules fire them, once
//! per firing, however many API and worker processes run.

use std::time::Duration;

use futures::StreamExt;
use jobstream_api::routes::schedules::ScheduleView;
use jobstream_core::EventType;
use jobstream_core::stored::fired_sequence;
use jobstream_entity::{queued_job, schedule as schedule_row};
use jobstream_testkit::{Backend, eventually};
use reqwest::StatusCode;
use sea_orm::{EntityTrait, QueryOrder};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::stream::fired_subject;
use crate::helpers::{TestApp, WAIT, db_test};

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
