//! Idempotency keys: decided by the stream, across API instances; owners never collide.

use futures::StreamExt;
use jobstream_core::EventType;
use jobstream_entity::queued_job;
use jobstream_testkit::Backend;
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, db_test};

async fn the_same_key_from_two_api_instances_yields_one_job(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (base2, _api2) = app.second_api().await;
    let alice = app.token("alice", false);
    let body = json!({"kind": "echo", "payload": {"order": 42}});

    // 16 concurrent requests with one key, alternating between the two API instances.
    let answers: Vec<(StatusCode, Value)> = futures::stream::iter(0..16)
        .map(|i| {
            let (app, alice, body) = (&app, &alice, &body);
            let base = if i % 2 == 0 {
                app.base.clone()
            } else {
                base2.clone()
            };
            async move { app.submit_keyed(&base, alice, "order-42", body).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let created: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .collect();
    assert_eq!(created.len(), 1, "exactly one 202: {answers:?}");
    let id = created[0].1["id"].as_str().unwrap().to_owned();
    for (status, job) in &answers {
        assert!(
            *status == StatusCode::ACCEPTED || *status == StatusCode::OK,
            "{status}: {job}"
        );
        assert_eq!(job["id"], id.as_str(), "every answer is the same job");
    }
    // The stream holds one queued event for the key, the projection one row.
    assert_eq!(app.events_of(&id, EventType::Queued).await.len(), 1);
    let row = app
        .wait_for_row(&id, "keyed job to succeed", |r| r.status == "succeeded")
        .await;
    assert_eq!(row.idempotency_key.as_deref(), Some("order-42"));
    let rows = queued_job::Entity::find()
        .filter(queued_job::Column::IdempotencyKey.eq("order-42"))
        .count(&app.db.conn)
        .await
        .unwrap();
    assert_eq!(rows, 1);

    // Later (the job finished meanwhile), from either instance: still that job, 200.
    let (status, job) = app.submit_keyed(&base2, &alice, "order-42", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["status"], "succeeded");

    // Another owner with the same key gets a job of their own.
    let bob = app.token("bob", false);
    let (status, bobs) = app.submit_keyed(&app.base, &bob, "order-42", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_ne!(bobs["id"], id.as_str());
    assert_eq!(bobs["owner"], "bob");

    // The body field works like the header; a different key is a different job.
    let res = app
        .submit(
            &alice,
            &json!({"kind": "echo", "idempotency_key": "order-42"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["id"], id.as_str());
    let (status, other) = app.submit_keyed(&app.base, &alice, "order-43", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_ne!(other["id"], id.as_str());
}
db_test!(the_same_key_from_two_api_instances_yields_one_job);

async fn a_restarted_api_still_knows_the_key_and_bad_keys_are_refused(backend: Backend) {
    let app = TestApp::with(backend, Options::api_only()).await;
    let alice = app.token("alice", false);
    let body = json!({"kind": "echo"});
    let (status, first) = app.submit_keyed(&app.base, &alice, "k", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // A brand-new API process (no projector running: nothing in SQL) decides from the stream.
    let (base2, api2) = app.second_api().await;
    let (status, again) = app.submit_keyed(&base2, &alice, "k", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["status"], "queued");
    api2.stop().await;

    let before = app.stream_messages().await;
    let res = app
        .http
        .post(format!("{}/v1/jobs", app.base))
        .bearer_auth(&alice)
        .header("Idempotency-Key", "a")
        .json(&json!({"kind": "echo", "idempotency_key": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["errors"][0]["field"], "idempotency_key");
    let res = app
        .submit(
            &alice,
            &json!({"kind": "echo", "idempotency_key": "x".repeat(256)}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.stream_messages().await, before, "nothing published");
}
db_test!(a_restarted_api_still_knows_the_key_and_bad_keys_are_refused);
