//! Finished jobs leave the tables after JOB_TTL; unfinished ones stay; the counts the
//! projector keeps beside the rows (`job_counts`, what overviews read) follow them.

use std::time::Duration;

use std::collections::BTreeMap;

use jobstream_entity::{job_count, queued_job};
use jobstream_projector::ProjectorConfig;
use jobstream_testkit::{Backend, eventually};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QuerySelect};
use serde_json::json;

use crate::helpers::{Options, TestApp, WAIT, db_test};

async fn the_sweep_deletes_finished_jobs_past_their_ttl_and_keeps_running_ones(backend: Backend) {
    let options = Options {
        projector_config: ProjectorConfig {
            job_ttl: Duration::from_millis(500),
            sweep_interval: Duration::from_millis(100),
            ..ProjectorConfig::default()
        },
        ..Options::default()
    };
    let app = TestApp::with(backend, options).await;
    let token = app.token("alice", false);
    let done = app
        .submit_job(&token, &json!({"kind": "echo", "payload": 1}))
        .await;
    let running = app
        .submit_job(&token, &json!({"kind": "sleep", "payload": {"ms": 20000}}))
        .await;
    let (done, running) = (done.id.to_string(), running.id.to_string());
    app.wait_for_row(&done, "echo job to succeed", |r| r.status == "succeeded")
        .await;
    app.wait_for_row(&running, "sleep job to start", |r| r.status == "running")
        .await;

    eventually("finished job to be swept", WAIT, || async {
        let rows = app.rows().await;
        (!rows.iter().any(|r| r.id == done)).then_some(())
    })
    .await;
    let rows = app.rows().await;
    assert!(
        rows.iter()
            .any(|r| r.id == running && r.status == "running"),
        "an unfinished job is never swept"
    );
    // Swept from the tables, still in the stream (the log is kept for its own retention).
    assert!(
        !app.events_of(&done, jobstream_core::EventType::Succeeded)
            .await
            .is_empty()
    );
}
db_test!(the_sweep_deletes_finished_jobs_past_their_ttl_and_keeps_running_ones);

/// `(queue, owner, status)` → jobs, as `job_counts` holds them (zero rows left out) and
/// as a `GROUP BY` over the job rows counts them.
async fn counts_and_rows(
    app: &TestApp,
) -> (
    BTreeMap<(String, String, String), i64>,
    BTreeMap<(String, String, String), i64>,
) {
    let kept = job_count::Entity::find()
        .all(&app.db.conn)
        .await
        .expect("job_counts")
        .into_iter()
        .filter(|c| c.jobs != 0)
        .map(|c| ((c.queue, c.owner, c.status), c.jobs))
        .collect();
    use queued_job::Column as C;
    let counted: Vec<(String, String, String, i64)> = queued_job::Entity::find()
        .select_only()
        .columns([C::Queue, C::Owner, C::Status])
        .column_as(C::Id.count(), "n")
        .group_by(C::Queue)
        .group_by(C::Owner)
        .group_by(C::Status)
        .into_tuple()
        .all(&app.db.conn)
        .await
        .expect("grouped rows");
    let counted = counted
        .into_iter()
        .map(|(q, o, s, n)| ((q, o, s), n))
        .collect();
    (kept, counted)
}

/// Waits until the projection is quiet and checks the counts equal the rows; returns them.
async fn counts_match_rows(app: &TestApp, what: &str) -> BTreeMap<(String, String, String), i64> {
    app.wait_projected().await;
    let (kept, counted) = counts_and_rows(app).await;
    assert_eq!(kept, counted, "job_counts against the rows {what}");
    kept
}

fn key(queue: &str, owner: &str, status: &str) -> (String, String, String) {
    (queue.to_owned(), owner.to_owned(), status.to_owned())
}

async fn the_job_counts_follow_the_rows_through_finish_retry_and_sweep(backend: Backend) {
    let options = Options {
        projector_config: ProjectorConfig {
            job_ttl: Duration::from_secs(3),
            sweep_interval: Duration::from_millis(100),
            ..ProjectorConfig::default()
        },
        ..Options::default()
    };
    let app = TestApp::with(backend, options).await;
    let (alice, bob) = (app.token("alice", false), app.token("bob", false));
    let mut done = Vec::new();
    for i in 0..3 {
        let job = app
            .submit_job(&alice, &json!({"kind": "echo", "payload": i}))
            .await;
        done.push(job.id.to_string());
    }
    let failed = app
        .submit_job(
            &alice,
            &json!({"kind": "fail", "payload": {"times": 9}, "max_attempts": 1}),
        )
        .await
        .id
        .to_string();
    let running = app
        .submit_job(&bob, &json!({"kind": "sleep", "payload": {"ms": 30000}}))
        .await
        .id
        .to_string();
    for id in &done {
        app.wait_for_row(id, "echo job to succeed", |r| r.status == "succeeded")
            .await;
    }
    app.wait_for_row(&failed, "failing job to fail", |r| r.status == "failed")
        .await;
    app.wait_for_row(&running, "sleep job to start", |r| r.status == "running")
        .await;
    let counts = counts_match_rows(&app, "once the jobs finished").await;
    assert_eq!(counts.get(&key("default", "alice", "succeeded")), Some(&3));
    assert_eq!(counts.get(&key("default", "alice", "failed")), Some(&1));
    assert_eq!(counts.get(&key("default", "bob", "running")), Some(&1));

    // A retried job leaves `failed` and comes back to it.
    let (status, _, body) = app
        .post(&alice, &format!("/v1/jobs/{failed}/retry"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.wait_for_row(&failed, "the retried job to fail again", |r| {
        let errors = r.errors.as_ref().and_then(|e| e.as_array()).map(Vec::len);
        r.status == "failed" && errors == Some(2)
    })
    .await;
    counts_match_rows(&app, "after a retry").await;

    // The sweep takes finished rows off the counts with the rows.
    eventually("finished jobs to be swept", WAIT, || async {
        let rows = app.rows().await;
        (rows.len() == 1).then_some(())
    })
    .await;
    let counts = counts_match_rows(&app, "after the sweep").await;
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        vec![(key("default", "bob", "running"), 1)],
        "only the running job is counted"
    );
}
db_test!(the_job_counts_follow_the_rows_through_finish_retry_and_sweep);
