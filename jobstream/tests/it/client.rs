//! The terminal client: the real `jobstream` binary against a test system over HTTP
//! (`JOBSTREAM_URL`, `JOBSTREAM_TOKEN`): jobs list/get/submit/cancel/retry/tail,
//! queues, workers, `--json`, and a refusal as one line with a non-zero exit.

use std::process::Stdio;
use std::time::Duration;

use jobstream_testkit::Backend;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{TestApp, db_test};

async fn the_cli_lists_gets_submits_cancels_and_retries_jobs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice", false);

    let job = app
        .run_cli(
            &alice,
            &[
                "jobs",
                "submit",
                "echo",
                "--payload",
                r#"{"x":1}"#,
                "--json",
            ],
        )
        .await
        .json();
    let id = job["id"].as_str().expect("id").to_owned();
    assert_eq!(job["status"], "queued");
    app.wait_for_row(&id, "echo job done", |r| r.status == "succeeded")
        .await;

    let got = app
        .run_cli(&alice, &["jobs", "get", &id, "--json"])
        .await
        .json();
    assert_eq!(got["status"], "succeeded");
    assert_eq!(got["result"], serde_json::json!({"x": 1}));
    let page = app
        .run_cli(&alice, &["jobs", "list", "--json"])
        .await
        .json();
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id)
    );
    let table = app.run_cli(&alice, &["jobs", "list"]).await;
    assert!(table.ok, "{}", table.stderr);
    let mut lines = table.stdout.lines();
    assert!(lines.next().unwrap().starts_with("ID"), "{}", table.stdout);
    assert!(table.stdout.contains(&id) && table.stdout.contains("succeeded"));

    let long = app
        .run_cli(
            &alice,
            &[
                "jobs",
                "submit",
                "sleep",
                "--payload",
                r#"{"ms":60000}"#,
                "--json",
            ],
        )
        .await
        .json();
    let long_id = long["id"].as_str().unwrap().to_owned();
    let cancel = app
        .run_cli(
            &alice,
            &["jobs", "cancel", &long_id, "--reason", "not needed"],
        )
        .await;
    assert!(
        cancel.ok && cancel.stdout.contains(&long_id),
        "{}",
        cancel.stderr
    );
    app.wait_for_row(&long_id, "cancelled", |r| r.status == "cancelled")
        .await;
    let retried = app
        .run_cli(&alice, &["jobs", "retry", &long_id, "--json"])
        .await
        .json();
    assert_eq!(retried["status"], "queued");

    // A bulk file: every line submitted.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.jsonl");
    std::fs::write(
        &file,
        "{\"kind\":\"echo\",\"payload\":1}\n\n{\"kind\":\"echo\",\"payload\":2}\n{\"kind\":\"echo\",\"payload\":3}\n",
    )
    .unwrap();
    let bulk = app
        .run_cli(
            &alice,
            &["jobs", "submit", "--file", file.to_str().unwrap(), "--json"],
        )
        .await
        .json();
    assert_eq!(bulk["submitted"], 3);
    for id in bulk["ids"].as_array().unwrap() {
        app.wait_for_row(id.as_str().unwrap(), "bulk job done", |r| {
            r.status == "succeeded"
        })
        .await;
    }
}
db_test!(the_cli_lists_gets_submits_cancels_and_retries_jobs);

async fn refusals_are_one_line_with_a_non_zero_exit(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice", false);
    let missing = uuid::Uuid::now_v7().to_string();
    let run = app.run_cli(&alice, &["jobs", "get", &missing]).await;
    assert!(!run.ok);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("404") && run.stderr.contains(&missing),
        "{}",
        run.stderr
    );

    let run = app
        .run_cli(&alice, &["jobs", "submit", "no-such-kind"])
        .await;
    assert!(!run.ok);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("422") && run.stderr.contains("kind"),
        "{}",
        run.stderr
    );

    let run = app.run_cli(&alice, &["queues", "pause", "default"]).await;
    assert!(!run.ok);
    assert!(run.stderr.contains("403"), "{}", run.stderr);

    // A bad bulk file submits nothing and names the line.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.jsonl");
    std::fs::write(&file, "{\"kind\":\"echo\"}\nnot json\n").unwrap();
    let before = app.stream_messages().await;
    let run = app
        .run_cli(
            &alice,
            &["jobs", "submit", "--file", file.to_str().unwrap()],
        )
        .await;
    assert!(!run.ok);
    assert!(run.stderr.contains("line 2"), "{}", run.stderr);
    assert_eq!(app.stream_messages().await, before);
}
db_test!(refusals_are_one_line_with_a_non_zero_exit);

async fn the_cli_pauses_queues_lists_workers_and_tails_events(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.token("ops", true);

    let paused = app
        .run_cli(&admin, &["queues", "pause", "default", "--json"])
        .await
        .json();
    assert_eq!(paused["paused"], true);
    let resumed = app.run_cli(&admin, &["queues", "resume", "default"]).await;
    assert!(
        resumed.ok && resumed.stdout.contains("resumed"),
        "{}",
        resumed.stderr
    );
    let queues = app.run_cli(&admin, &["queues", "list"]).await;
    assert!(
        queues.ok && queues.stdout.starts_with("QUEUE"),
        "{}",
        queues.stderr
    );

    let workers = app.run_cli(&admin, &["workers", "--json"]).await.json();
    assert!(
        workers
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == "test-worker"),
        "{workers}"
    );

    // `tail` follows live: jobs submitted after it started show up as they happen.
    let mut tail = app
        .cli(&admin)
        .args(["jobs", "tail", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("tail runs");
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let deadline = tokio::time::Instant::now() + crate::helpers::WAIT;
    let line = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tail printed no event"
        );
        app.submit_job(
            &admin,
            &serde_json::json!({"kind": "echo", "payload": "tailed"}),
        )
        .await;
        if let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await
        {
            break line;
        }
    };
    let event: Value = serde_json::from_str(&line).expect("an event as JSON");
    assert!(event["job_id"].is_string(), "{event}");
    tail.kill().await.ok();
}
db_test!(the_cli_pauses_queues_lists_workers_and_tails_events);
