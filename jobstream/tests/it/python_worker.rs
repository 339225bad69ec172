//! A worker in another language: `examples/python-worker/worker.py` (nats-py)
//! runs a custom kind through the wire protocol documented in the README.

use jobstream_core::EventType;
use jobstream_core::kinds::Catalogue;
use jobstream_testkit::{Backend, workspace_root};
use serde_json::json;

use crate::helpers::{Options, TestApp, db_test};
use crate::kinds::ChildProcess;

async fn a_python_worker_runs_a_custom_kind_submitted_over_the_api(backend: Backend) {
    let catalogue =
        Catalogue::from_file(&workspace_root().join("examples/python-worker/kinds.json"))
            .expect("kinds file");
    let app = TestApp::with(
        backend,
        Options {
            kinds: catalogue,
            ..Options::default()
        },
    )
    .await;
    let worker = ChildProcess::python(&[
        "examples/python-worker/worker.py",
        "--nats-url",
        &app.nats.url(),
        "--queue",
        "python",
        "--ack-wait",
        "5",
    ]);
    let token = app.token("alice", false);
    let job = app
        .submit_job(
            &token,
            &json!({"kind": "text.reverse", "payload": {"text": "hello python world"}}),
        )
        .await;
    assert_eq!(job.queue, "python");
    let id = job.id.to_string();
    let row = app
        .wait_for_row(&id, "the Python worker to finish the job", |r| {
            r.status == "succeeded" || r.status == "failed"
        })
        .await;
    assert_eq!(
        row.status,
        "succeeded",
        "{:?}\npython worker output:\n{}",
        row.error,
        worker.output()
    );
    assert_eq!(
        row.result.unwrap(),
        json!({"reversed": "dlrow nohtyp olleh", "words": 3, "worker": "python", "attempt": 1})
    );
    let started = app.events_of(&id, EventType::Started).await;
    assert_eq!(started.len(), 1);
    assert!(
        matches!(&started[0].event, jobstream_core::Event::Started { worker } if worker.starts_with("py-"))
    );
}
db_test!(a_python_worker_runs_a_custom_kind_submitted_over_the_api);
