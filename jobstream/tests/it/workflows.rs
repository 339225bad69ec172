//! Workflows: the photo flow end to end with real images and mail, each step enqueued
//! once, a replay folding to identical workflow rows, cancel, retry of the failed part,
//! and validation `422`s naming the steps.

use jobstream_core::EventType;
use jobstream_core::kinds::Catalogue;
use jobstream_entity::{workflow, workflow_step};
use jobstream_testkit::Backend;
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

use crate::files::png;
use jobstream_core::workflow::{OnFailure, StepDef, children_workflow_id, step_job_id};
use jobstream_worker::children::Children;
use jobstream_worker::{JobContext, JobError};

use crate::helpers::{Options, RealKinds, TestApp, WAIT, connect, db_test};

/// A step of `wf` by id.
fn step<'a>(wf: &'a Value, id: &str) -> &'a Value {
    wf["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {wf}"))
}

/// Every workflow and step row, in key order.
async fn workflow_rows(
    db: &DatabaseConnection,
) -> (Vec<workflow::Model>, Vec<workflow_step::Model>) {
    let w = workflow::Entity::find()
        .order_by_asc(workflow::Column::Id)
        .all(db)
        .await
        .expect("workflows");
    let s = workflow_step::Entity::find()
        .order_by_asc(workflow_step::Column::WorkflowId)
        .order_by_asc(workflow_step::Column::StepId)
        .all(db)
        .await
        .expect("steps");
    (w, s)
}

async fn photo_flow_thumbnails_in_parallel_then_one_mail_and_a_replay_gives_the_same_rows(
    backend: Backend,
) {
    let mailbox = tempfile::tempdir().unwrap();
    let dir = mailbox.path().join("mailbox");
    let kinds = RealKinds {
        mail: jobstream_worker::email::MailConfig {
            mailbox_dir: dir.clone(),
            from: "photos <noreply@jobstream.test>".into(),
            ..Default::default()
        },
        ..RealKinds::default()
    };
    let app = TestApp::with_real_kinds(backend, kinds, Catalogue::builtin()).await;
    let alice = app.token("alice", false);
    let photo = app.upload_ok(&alice, "image/png", png(800, 600)).await;

    let thumb = |id: &str, size: u32| {
        json!({"id": id, "after": ["upload"], "kind": "image.thumbnail",
               "payload": {"file_id": {"$from": "upload.result.file_id"}, "width": size, "height": size}})
    };
    let (id, _) = app.workflow_ok(&alice, &json!({"name": "photo", "steps": [
                {"id": "upload", "kind": "echo", "payload": {"file_id": photo}},
                thumb("thumb_small", 64), thumb("thumb_medium", 256), thumb("thumb_large", 512),
                {"id": "notify", "after": ["thumb_small", "thumb_medium", "thumb_large"], "kind": "email.send",
                 "payload": {"to": "alice@example.com", "subject": "Your thumbnails",
                   "text": {"$text": "Thumbnails: {thumb_small.result.file_id} {thumb_medium.result.file_id} {thumb_large.result.file_id}"}}}
            ]})).await;
    let (code, read) = app.get(&alice, &format!("/v1/workflows/{id}")).await;
    assert_eq!(code, StatusCode::OK, "read-your-writes: {read}");

    let done = app.wait_for_workflow(&alice, &id, "succeeded").await;
    let mut thumbs = Vec::new();
    for (name, size) in [
        ("thumb_small", 64),
        ("thumb_medium", 256),
        ("thumb_large", 512),
    ] {
        let s = step(&done, name);
        assert_eq!(s["status"], "succeeded", "{s}");
        assert_eq!(s["result"]["source"]["file_id"], photo.as_str());
        assert_eq!(s["result"]["width"], size, "{s}");
        thumbs.push(s["result"]["file_id"].as_str().unwrap().to_owned());
    }
    let notify = step(&done, "notify");
    let eml =
        std::fs::read_to_string(dir.join(format!("{}.eml", notify["job_id"].as_str().unwrap())))
            .expect("the mail")
            // Quoted-printable soft line breaks.
            .replace("=\r\n", "")
            .replace("=\n", "");
    for t in &thumbs {
        assert!(eml.contains(t.as_str()), "the mail lists {t}: {eml}");
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "one mail");
    // Each step's job was enqueued once and ran to completion once.
    for s in done["steps"].as_array().unwrap() {
        let job = s["job_id"].as_str().unwrap();
        assert_eq!(app.events_of(job, EventType::Queued).await.len(), 1, "{s}");
        assert_eq!(
            app.events_of(job, EventType::Succeeded).await.len(),
            1,
            "{s}"
        );
    }
    // A step's job says which workflow step it is, alone and in the list; a job
    // submitted on its own says nothing of the kind.
    let notify_job = notify["job_id"].as_str().unwrap();
    let (code, job) = app.get(&alice, &format!("/v1/jobs/{notify_job}")).await;
    assert_eq!(code, StatusCode::OK, "{job}");
    assert_eq!(job["workflow_id"], id.as_str(), "{job}");
    assert_eq!(job["step_id"], "notify", "{job}");
    let (_, list) = app.get(&alice, "/v1/jobs?kind=email.send").await;
    assert_eq!(list["items"][0]["id"], notify_job, "{list}");
    assert_eq!(list["items"][0]["workflow_id"], id.as_str(), "{list}");
    assert_eq!(list["items"][0]["step_id"], "notify", "{list}");
    let alone = app
        .submit_job(&alice, &json!({"kind": "echo", "payload": {}}))
        .await;
    let (_, alone) = app.get(&alice, &format!("/v1/jobs/{}", alone.id)).await;
    assert!(alone.get("workflow_id").is_none(), "{alone}");
    assert!(alone.get("step_id").is_none(), "{alone}");
    // The other user sees nothing of it.
    let bob = app.token("bob", false);
    assert_eq!(
        app.get(&bob, &format!("/v1/jobs/{notify_job}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&bob, &format!("/v1/workflows/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, list) = app.get(&bob, "/v1/workflows").await;
    assert_eq!(list["items"], json!([]));
    let (_, list) = app.get(&alice, "/v1/workflows?status=succeeded").await;
    assert_eq!(list["items"][0]["id"], id.as_str());

    // A fold of the stream into a fresh database gives the same rows, ids included.
    let fresh = app.clean_fold("workflow-replay").await;
    assert_eq!(
        workflow_rows(&fresh.conn).await,
        workflow_rows(&app.db.conn).await
    );
    // `verify` compares workflow rows too, and names a corrupted step.
    let verify =
        || jobstream_projector::replay::verify(&app.broker, &app.db.conn, "projector", WAIT);
    let report = verify().await.unwrap();
    assert!(report.is_clean(), "{:?}", report.differences);
    workflow_step::Entity::update_many()
        .col_expr(
            workflow_step::Column::Status,
            sea_orm::sea_query::Expr::value("failed"),
        )
        .filter(workflow_step::Column::StepId.eq("notify"))
        .exec(&app.db.conn)
        .await
        .unwrap();
    let report = verify().await.unwrap();
    assert_eq!(report.differences.len(), 1, "{:?}", report.differences);
    assert_eq!(
        report.differences[0].job_id,
        format!("workflow {id} step notify")
    );
}
db_test!(photo_flow_thumbnails_in_parallel_then_one_mail_and_a_replay_gives_the_same_rows);

async fn cancelling_a_workflow_stops_its_running_and_pending_steps(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice", false);
    let (id, wf) = app
        .workflow_ok(
            &alice,
            &json!({"chain": [
                {"id": "slow", "kind": "sleep", "payload": {"ms": 60000}},
                {"id": "after", "kind": "echo", "payload": {}}
            ]}),
        )
        .await;
    let slow = step(&wf, "slow")["job_id"].as_str().unwrap().to_owned();
    app.wait_for_row(&slow, "the slow step running", |r| r.status == "running")
        .await;
    let (code, body) = app.workflow_action(&alice, &id, "cancel").await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    app.wait_for_row(&slow, "the slow step cancelled", |r| {
        r.status == "cancelled"
    })
    .await;
    let wf = app.wait_for_workflow(&alice, &id, "cancelled").await;
    assert_eq!(step(&wf, "slow")["status"], "cancelled");
    assert_eq!(step(&wf, "after")["status"], "skipped", "{wf}");
    let after = step(&wf, "after")["job_id"].as_str().unwrap().to_owned();
    assert!(
        app.events_of(&after, EventType::Queued).await.is_empty(),
        "never enqueued"
    );
    assert_eq!(
        app.workflow_action(&alice, &id, "cancel").await.0,
        StatusCode::CONFLICT
    );
}
db_test!(cancelling_a_workflow_stops_its_running_and_pending_steps);

async fn retrying_a_failed_workflow_reruns_only_the_failed_part(backend: Backend) {
    // `echo`, failing for good while the flag file exists.
    let flag = tempfile::NamedTempFile::new().unwrap();
    let app = TestApp::with_echo(backend, |ctx: JobContext| async move {
        match ctx.payload.get("fail_while").and_then(Value::as_str) {
            Some(path) if std::path::Path::new(path).exists() => {
                Err(JobError::Fatal("the flag is up".into()))
            }
            _ => Ok(ctx.payload.clone()),
        }
    })
    .await;
    let alice = app.token("alice", false);
    let path = flag.path().display().to_string();
    let (id, _) = app.workflow_ok(&alice, &json!({"steps": [
                {"id": "a", "kind": "echo", "payload": {"n": 1}},
                {"id": "b", "after": ["a"], "kind": "echo", "payload": {"fail_while": path, "n": 2}},
                {"id": "c", "after": ["b"], "kind": "echo", "payload": {"from_b": {"$from": "b.result.n"}}},
                {"id": "side", "kind": "fail", "max_attempts": 1, "on_failure": "continue", "payload": {"times": 5}},
                {"id": "side_after", "after": ["side"], "kind": "echo", "payload": {}}
            ]})).await;
    let failed = app.wait_for_workflow(&alice, &id, "failed").await;
    assert_eq!(step(&failed, "b")["status"], "failed");
    assert_eq!(step(&failed, "c")["status"], "skipped");
    assert_eq!(
        app.workflow_action(&alice, &id, "cancel").await.0,
        StatusCode::CONFLICT
    );

    drop(flag);
    let (code, body) = app.workflow_action(&alice, &id, "retry").await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let done = app.wait_for_workflow(&alice, &id, "succeeded").await;
    assert_eq!(step(&done, "c")["result"], json!({"from_b": 2}), "{done}");
    // `side` fails with on_failure: continue: not the workflow's failure; its dependent is skipped.
    assert_eq!(step(&done, "side")["status"], "failed");
    assert_eq!(step(&done, "side_after")["status"], "skipped");
    let job = |s: &str| step(&done, s)["job_id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.events_of(&job("a"), EventType::Succeeded).await.len(),
        1,
        "a ran once"
    );
    assert!(
        app.events_of(&job("a"), EventType::RetryRequested)
            .await
            .is_empty()
    );
    assert_eq!(
        app.events_of(&job("b"), EventType::RetryRequested)
            .await
            .len(),
        1
    );
    assert_eq!(app.events_of(&job("c"), EventType::Queued).await.len(), 1);
}
db_test!(retrying_a_failed_workflow_reruns_only_the_failed_part);

async fn a_worker_killed_mid_workflow_still_runs_each_step_to_completion_once(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let alice = app.token("alice", false);
    let (id, wf) = app.workflow_ok(&alice, &json!({"chord": {
                "header": [
                    {"id": "h1", "kind": "sleep", "payload": {"ms": 1500}},
                    {"id": "h2", "kind": "sleep", "payload": {"ms": 1500}}
                ],
                "callback": {"id": "cb", "kind": "echo", "payload": {"h1": {"$from": "h1.result.slept_ms"}}}
            }})).await;
    let h1 = step(&wf, "h1")["job_id"].as_str().unwrap().to_owned();
    app.wait_for_row(&h1, "h1 running", |r| r.status == "running")
        .await;
    app.worker.take().expect("worker").kill().await;
    app.start_worker().await;
    let done = app.wait_for_workflow(&alice, &id, "succeeded").await;
    assert_eq!(step(&done, "cb")["result"], json!({"h1": 1500}));
    for s in done["steps"].as_array().unwrap() {
        let job = s["job_id"].as_str().unwrap();
        assert_eq!(app.events_of(job, EventType::Queued).await.len(), 1, "{s}");
        assert_eq!(
            app.events_of(job, EventType::Succeeded).await.len(),
            1,
            "{s}"
        );
    }
}
db_test!(a_worker_killed_mid_workflow_still_runs_each_step_to_completion_once);

async fn invalid_workflows_are_422s_naming_the_steps_and_store_nothing(backend: Backend) {
    let app = TestApp::with(backend, Options::api_only()).await;
    let alice = app.token("alice", false);
    let fields = |body: &Value| {
        body["errors"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|e| e["field"].as_str().unwrap_or("").to_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let echo =
        |id: &str, after: &[&str]| json!({"id": id, "after": after, "kind": "echo", "payload": {}});
    let cases = [
        (
            json!({"steps": [{"id": "x", "kind": "nope"}]}),
            vec!["steps[x].kind"],
        ),
        (
            json!({"steps": [{"id": "t", "kind": "image.thumbnail", "payload": {"file_id": "018f0000-0000-7000-8000-000000000000", "width": "wide", "height": 5}}]}),
            vec!["steps[t].payload.width"],
        ),
        (
            json!({"steps": [echo("a", &[]), {"id": "b", "kind": "echo", "payload": {"v": {"$from": "a.result.x"}}}]}),
            vec!["steps[b].payload.v"],
        ),
        (
            json!({"steps": [echo("a", &["ghost"])]}),
            vec!["steps[a].after"],
        ),
        (
            json!({"steps": [echo("a", &["b"]), echo("b", &["a"]), echo("c", &[])]}),
            vec!["steps[a].after", "steps[b].after"],
        ),
        (
            json!({"group": (0..1001).map(|i| echo(&format!("s{i}"), &[])).collect::<Vec<_>>()}),
            vec!["steps"],
        ),
    ];
    for (body, expected) in cases {
        let (status, problem) = app.submit_workflow(&alice, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(fields(&problem), expected, "{problem}");
    }
    let stored = app
        .broker
        .last_on_subject(&jobstream_core::subject::all_workflow_events())
        .await;
    assert!(matches!(stored, Ok(None)), "nothing stored: {stored:?}");
}
db_test!(invalid_workflows_are_422s_naming_the_steps_and_store_nothing);

async fn a_handler_fans_out_children_and_its_continuation_gets_their_results(backend: Backend) {
    // `echo` with `{"fan_out": n}` enqueues n children and a continuation, and returns at once.
    let children = std::sync::Arc::new(tokio::sync::OnceCell::<Children>::new());
    let handle = children.clone();
    let app = TestApp::with_echo(backend, move |ctx: JobContext| {
        let children = handle.clone();
        async move {
            let Some(n) = ctx.payload.get("fan_out").and_then(Value::as_u64) else {
                return Ok(ctx.payload.clone());
            };
            let step = |id: String, payload: Value| StepDef {
                id,
                after: Vec::new(),
                on_failure: OnFailure::Fail,
                spec: serde_json::from_value(json!({"kind": "echo", "queue": "default",
                    "owner": ctx.owner, "payload": payload, "max_attempts": 3, "timeout_ms": 60_000}))
                .expect("a job spec"),
            };
            let kids = (0..n).map(|i| step(format!("c{i}"), json!({"i": i}))).collect();
            let sum: Vec<Value> = (0..n).map(|i| json!({"$from": format!("c{i}.result.i")})).collect();
            let done = step("done".into(), json!({"collected": sum}));
            let children = children.get().expect("children set before any job runs");
            let wf = children.fan_out(&ctx, kids, done).await?;
            Ok(json!({"children": wf}))
        }
    })
    .await;
    let _ = children.set(Children::new(connect(&app.nats.url(), "children").await));
    let alice = app.token("alice", false);
    let parent = app
        .submit_job(&alice, &json!({"kind": "echo", "payload": {"fan_out": 5}}))
        .await;
    let parent_id = parent.id;
    let wf_id = children_workflow_id(parent_id);
    let continuation = step_job_id(wf_id, "done").to_string();
    let row = app
        .wait_for_row(&continuation, "the continuation to succeed", |r| {
            r.status == "succeeded"
        })
        .await;
    assert_eq!(row.result, Some(json!({"collected": [0, 1, 2, 3, 4]})));
    assert_eq!(row.owner, "alice", "children belong to the parent's owner");
    let parent = app
        .wait_for_row(&parent_id.to_string(), "parent", |r| {
            r.status == "succeeded"
        })
        .await;
    assert_eq!(parent.result, Some(json!({"children": wf_id})));
    let wf = app
        .wait_for_workflow(&alice, &wf_id.to_string(), "succeeded")
        .await;
    assert_eq!(wf["step_count"], 6);
}
db_test!(a_handler_fans_out_children_and_its_continuation_gets_their_results);

async fn workflow_transitions_stream_over_sse_until_the_workflow_ends(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice", false);
    let (id, _) = app.workflow_ok(&alice, &json!({"chain": [{"kind": "sleep", "payload": {"ms": 300}}, {"kind": "echo", "payload": {}}]})).await;
    let bob = app.token("bob", false);
    assert_eq!(
        app.get(&bob, &format!("/v1/workflows/{id}/events")).await.0,
        StatusCode::NOT_FOUND
    );
    let res = app
        .http
        .get(format!("{}/v1/workflows/{id}/events", app.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // The stream ends after the workflow has ended.
    let body = tokio::time::timeout(WAIT, res.text())
        .await
        .expect("the stream ends")
        .unwrap();
    let sent: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let statuses: Vec<&str> = sent.iter().map(|w| w["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.last(), Some(&"succeeded"), "{body}");
    assert!(
        statuses[..statuses.len() - 1]
            .iter()
            .all(|s| *s == "running"),
        "{statuses:?}"
    );
    assert!(sent.len() >= 2, "transitions while it ran: {body}");
}
db_test!(workflow_transitions_stream_over_sse_until_the_workflow_ends);
