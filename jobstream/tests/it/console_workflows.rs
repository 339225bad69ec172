//! The console's workflow pages (`/ui/workflows`): the list and one workflow with its
//! steps by level, for their owner and admins only; cancel and retry need the session's
//! CSRF token and reach only one's own workflows.

use jobstream_testkit::Backend;
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde_json::json;

use crate::console::Browser;
use crate::helpers::{TestApp, db_test};

async fn workflow_pages_show_steps_by_level_to_their_owner_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, bob, admin) = (
        app.token("alice", false),
        app.token("bob", false),
        app.token("root", true),
    );
    let (id, _) = app
        .workflow_ok(
            &alice,
            &json!({"name": "alice-fan", "steps": [
                {"id": "first", "kind": "echo", "payload": {"n": 41}},
                {"id": "second", "after": ["first"], "kind": "echo", "payload": {"got": {"$from": "first.result.n"}}},
                {"id": "third", "after": ["first"], "kind": "echo", "payload": {}},
                {"id": "last", "after": ["second", "third"], "kind": "echo", "payload": {}}
            ]}),
        )
        .await;
    let done = app.wait_for_workflow(&alice, &id, "succeeded").await;
    let job_of = |step: &str| {
        done["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == step)
            .unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    let a = Browser::login(&app, &alice).await;
    let list = a.get("/ui/workflows").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains(r#"href="/ui/workflows""#), "nav link");
    assert!(list.body.contains(&format!("/ui/workflows/{id}")));
    assert!(list.body.contains("alice-fan"));
    let failed_only = a.get("/ui/workflows?status=failed").await;
    assert_eq!(failed_only.status, StatusCode::OK);
    assert!(!failed_only.body.contains(&id), "filtered out");
    assert_eq!(
        a.get("/ui/workflows?status=sideways").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let page = a.get(&format!("/ui/workflows/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let at = |needle: &str| {
        page.body
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} on the page"))
    };
    // Three levels: first; second and third side by side; last.
    assert!(at("Level 1") < at(r#"data-step="first""#));
    assert!(at(r#"data-step="first""#) < at("Level 2"));
    assert!(at("Level 2") < at(r#"data-step="second""#));
    assert!(at("Level 2") < at(r#"data-step="third""#));
    assert!(at(r#"data-step="third""#) < at("Level 3"));
    assert!(at("Level 3") < at(r#"data-step="last""#));
    assert!(page.body.contains("first → second"), "edges listed");
    assert!(
        page.body
            .contains(&format!("/ui/jobs/{}", job_of("second")))
    );
    assert!(page.body.contains("41"), "a step's result");
    assert!(!page.body.contains(r#"id="cancel""#), "a finished workflow");

    // Bob sees none of it; an admin sees it, with its owner.
    let b = Browser::login(&app, &bob).await;
    let bobs_list = b.get("/ui/workflows").await;
    assert_eq!(bobs_list.status, StatusCode::OK);
    assert!(!bobs_list.body.contains(&id));
    assert_eq!(
        b.get(&format!("/ui/workflows/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        b.get("/ui/workflows/not-an-id").await.status,
        StatusCode::NOT_FOUND
    );
    let root = Browser::login(&app, &admin).await;
    let all = root.get("/ui/workflows").await;
    assert!(all.body.contains(&id) && all.body.contains("<td>alice</td>"));
    assert_eq!(
        root.get(&format!("/ui/workflows/{id}")).await.status,
        StatusCode::OK
    );
}
db_test!(workflow_pages_show_steps_by_level_to_their_owner_only);

async fn a_workflow_is_cancelled_and_retried_from_its_page(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, bob) = (app.token("alice", false), app.token("bob", false));
    let (id, _) = app
        .workflow_ok(
            &alice,
            &json!({"chain": [
                {"id": "slow", "kind": "sleep", "payload": {"ms": 60000}},
                {"id": "after", "kind": "echo", "payload": {}}
            ]}),
        )
        .await;
    let a = Browser::login(&app, &alice).await;
    let b = Browser::login(&app, &bob).await;
    let page = a.get(&format!("/ui/workflows/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let token = page.csrf();
    let bobs_token = b.get("/ui/jobs").await.csrf();
    let cancel = format!("/ui/workflows/{id}/cancel");

    assert_eq!(a.post(&cancel, &[]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        a.post(&cancel, &[("csrf", &bobs_token)]).await.status,
        StatusCode::FORBIDDEN,
        "another session's token"
    );
    assert_eq!(
        b.post(&cancel, &[("csrf", &bobs_token)]).await.status,
        StatusCode::NOT_FOUND,
        "bob's own session, alice's workflow"
    );
    assert_eq!(
        a.post(&format!("/ui/workflows/{id}/pause"), &[("csrf", &token)])
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (_, wf) = app.get(&alice, &format!("/v1/workflows/{id}")).await;
    assert_eq!(wf["status"], "running", "a refused action stores nothing");

    let done = a.post(&cancel, &[("csrf", &token)]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(done.headers[LOCATION], format!("/ui/workflows/{id}"));
    app.wait_for_workflow(&alice, &id, "cancelled").await;
    assert_eq!(
        a.post(&cancel, &[("csrf", &token)]).await.status,
        StatusCode::CONFLICT,
        "cancelled already"
    );
    let page = a.get(&format!("/ui/workflows/{id}")).await;
    assert!(page.body.contains(r#"id="retry""#), "{}", page.body);
    let retried = a
        .post(&format!("/ui/workflows/{id}/retry"), &[("csrf", &token)])
        .await;
    assert_eq!(retried.status, StatusCode::SEE_OTHER);
    app.wait_for_workflow(&alice, &id, "running").await;
}
db_test!(a_workflow_is_cancelled_and_retried_from_its_page);
