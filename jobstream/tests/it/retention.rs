//! Finished jobs leave the tables after JOB_TTL; unfinished ones stay.

use std::time::Duration;

use jobstream_projector::ProjectorConfig;
use jobstream_testkit::{Backend, eventually};
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
