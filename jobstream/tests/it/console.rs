//! The console (`/ui`): every page and action answers as it should, a user never sees
//! another user's data, actions without their session's CSRF token are refused, the SQL
//! console refuses writes, `/docs` and the assets are served from the binary.

use jobstream_testkit::Backend;
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, WAIT, db_test};

/// A browser without JavaScript: a session cookie and form posts, no redirects followed.
pub(crate) struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

/// Status, headers and body of a response.
pub(crate) struct Page {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Page {
    /// The CSRF token of the page's forms.
    pub(crate) fn csrf(&self) -> String {
        let start = self
            .body
            .find(r#"name="csrf" value=""#)
            .expect("a form with a CSRF token")
            + r#"name="csrf" value=""#.len();
        let len = self.body[start..].find('"').expect("end of the token");
        self.body[start..start + len].to_owned()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn page_of(res: reqwest::Response) -> Page {
    Page {
        status: res.status(),
        headers: res.headers().clone(),
        body: res.text().await.expect("body"),
    }
}

impl Browser {
    /// Logs in with `token`; panics unless the console starts a session.
    pub(crate) async fn login(app: &TestApp, token: &str) -> Browser {
        let res = client()
            .post(format!("{}/ui/login", app.base))
            .form(&[("token", token)])
            .send()
            .await
            .expect("POST /ui/login");
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "login");
        let set = res
            .headers()
            .get(SET_COOKIE)
            .expect("session cookie")
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(set.contains("HttpOnly"), "{set}");
        assert!(set.contains("SameSite=Strict"), "{set}");
        assert!(!set.contains(token), "the cookie never carries the token");
        Browser {
            http: client(),
            base: app.base.clone(),
            cookie: set.split(';').next().expect("name=value").to_owned(),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Page {
        page_of(
            self.http
                .get(format!("{}{path}", self.base))
                .header("cookie", &self.cookie)
                .send()
                .await
                .expect("GET"),
        )
        .await
    }

    pub(crate) async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        page_of(
            self.http
                .post(format!("{}{path}", self.base))
                .header("cookie", &self.cookie)
                .form(form)
                .send()
                .await
                .expect("POST"),
        )
        .await
    }
}

/// Submits a job as `token` and waits until its row has `status`; returns its id.
async fn job_in(app: &TestApp, token: &str, body: Value, status: &str) -> String {
    let id = app.submit_job(token, &body).await.id.to_string();
    app.wait_for_row(&id, status, |r| r.status == status).await;
    id
}

async fn pages_answer_and_users_see_only_their_own(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, bob, admin) = (
        app.token("alice", false),
        app.token("bob", false),
        app.token("root", true),
    );
    let alice_job = job_in(
        &app,
        &alice,
        json!({"kind": "echo", "payload": {"note": "alice-secret-marker"}}),
        "succeeded",
    )
    .await;
    let bob_job = job_in(
        &app,
        &bob,
        json!({"kind": "fail", "payload": {"times": 5}, "max_attempts": 1}),
        "failed",
    )
    .await;

    // No session: the login page, with the console's CSP.
    let anonymous = client();
    let res = anonymous
        .get(format!("{}/ui/jobs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "/ui/login");
    let login = page_of(
        anonymous
            .get(format!("{}/ui/login", app.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(
        login.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'self'")
    );
    let refused = anonymous
        .post(format!("{}/ui/login", app.base))
        .form(&[("token", "not-a-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get(SET_COOKIE).is_none());
    // Login CSRF: a form posted from another site does not log the browser in.
    let foreign = anonymous
        .post(format!("{}/ui/login", app.base))
        .header("origin", "http://evil.example")
        .form(&[("token", alice.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    assert!(foreign.headers().get(SET_COOKIE).is_none());

    let a = Browser::login(&app, &alice).await;
    let b = Browser::login(&app, &bob).await;
    let root = Browser::login(&app, &admin).await;

    for path in [
        "/ui".to_owned(),
        "/ui/jobs".to_owned(),
        format!("/ui/jobs/{alice_job}"),
        "/ui/schedules".to_owned(),
        "/ui/kinds".to_owned(),
        "/ui/events".to_owned(),
        "/ui/events?from=1".to_owned(),
    ] {
        let p = a.get(&path).await;
        assert_eq!(p.status, StatusCode::OK, "{path}: {}", p.body);
        assert_eq!(p.headers[CACHE_CONTROL], "no-store", "{path}");
    }
    for path in [
        "/ui/users",
        "/ui/operations",
        "/ui/data",
        "/ui/data/queued_jobs",
        "/ui/data/sql",
    ] {
        assert_eq!(a.get(path).await.status, StatusCode::FORBIDDEN, "{path}");
        let p = root.get(path).await;
        assert_eq!(p.status, StatusCode::OK, "{path}: {}", p.body);
    }
    assert_eq!(
        root.get("/ui/data/no_such_table").await.status,
        StatusCode::NOT_FOUND
    );

    // Isolation: bob sees nothing of alice's, anywhere.
    assert_eq!(
        b.get(&format!("/ui/jobs/{alice_job}")).await.status,
        StatusCode::NOT_FOUND
    );
    for path in ["/ui", "/ui/jobs", "/ui/events", "/ui/events?from=1"] {
        let p = b.get(path).await;
        assert!(
            !p.body.contains(&alice_job),
            "{path} shows alice's job to bob"
        );
        assert!(!p.body.contains("alice-secret-marker"), "{path}");
    }
    let bobs = b.get("/ui/jobs").await.body;
    assert!(bobs.contains(&bob_job));
    // A user's owner filter is ignored: their list stays theirs.
    let sneaky = b.get("/ui/jobs?owner=alice").await.body;
    assert!(!sneaky.contains(&alice_job) && sneaky.contains(&bob_job));
    let alices_events = a.get("/ui/events?from=1").await.body;
    assert!(alices_events.contains(&alice_job) && !alices_events.contains(&bob_job));
    let everything = root.get("/ui/jobs").await.body;
    assert!(everything.contains(&alice_job) && everything.contains(&bob_job));

    // The overview counts what the caller may see, including the failure group.
    let overview = b.get("/ui").await.body;
    assert!(overview.contains("Recent failures") && overview.contains(">fail<"));

    // Filters: text in the payload, id prefix, status, created range; on the REST list too.
    let by_text = root.get("/ui/jobs?q=SECRET-marker").await.body;
    assert!(by_text.contains(&alice_job) && !by_text.contains(&bob_job));
    // "All N matching" counts what the filter matches (and only what the caller sees).
    assert!(by_text.contains("all 1 matching"), "{by_text}");
    assert!(b.get("/ui/jobs").await.body.contains("all 1 matching"));
    let prefix = &bob_job[..30];
    let by_prefix = root.get(&format!("/ui/jobs?id_prefix={prefix}")).await.body;
    assert!(by_prefix.contains(&bob_job) && !by_prefix.contains(&alice_job));
    let failed = root.get("/ui/jobs?status=failed&queue=&kind=").await.body;
    assert!(failed.contains(&bob_job) && !failed.contains(&alice_job));
    let future = root
        .get("/ui/jobs?created_after=2999-01-01T00:00")
        .await
        .body;
    assert!(!future.contains(&bob_job) && !future.contains(&alice_job));
    assert_eq!(
        root.get("/ui/jobs?created_after=yesterday").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (status, page) = app.get(&admin, "/v1/jobs?q=secret-MARKER").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [alice_job.as_str()]);
    let (status, page) = app
        .get(
            &admin,
            &format!("/v1/jobs?id_prefix={prefix}&status=failed"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"][0]["id"], bob_job.as_str());
    let (status, _) = app.get(&admin, "/v1/jobs?id_prefix=xyz").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // The job page shows the timeline from the stream.
    let detail = a.get(&format!("/ui/jobs/{alice_job}")).await.body;
    assert!(detail.contains("queued") && detail.contains("succeeded"));
    assert!(detail.contains("alice-secret-marker"));
}
db_test!(pages_answer_and_users_see_only_their_own);

async fn actions_need_the_sessions_csrf_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, bob) = (app.token("alice", false), app.token("bob", false));
    let failed = job_in(
        &app,
        &alice,
        json!({"kind": "fail", "payload": {"times": 5}, "max_attempts": 1}),
        "failed",
    )
    .await;
    let a = Browser::login(&app, &alice).await;
    let b = Browser::login(&app, &bob).await;
    let page = a.get(&format!("/ui/jobs/{failed}")).await;
    let token = page.csrf();
    let bobs_token = b.get("/ui/jobs").await.csrf();
    assert_ne!(token, bobs_token);
    let retry = format!("/ui/jobs/{failed}/retry");

    assert_eq!(a.post(&retry, &[]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        a.post(&retry, &[("csrf", "forged")]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        a.post(&retry, &[("csrf", &bobs_token)]).await.status,
        StatusCode::FORBIDDEN,
        "another session's token"
    );
    assert!(
        app.events_of(&failed, jobstream_core::EventType::RetryRequested)
            .await
            .is_empty(),
        "a refused action stores nothing"
    );
    // Bob's session with his own token cannot act on alice's job either.
    assert_eq!(
        b.post(&retry, &[("csrf", &bobs_token)]).await.status,
        StatusCode::NOT_FOUND
    );
    let done = a.post(&retry, &[("csrf", &token)]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(done.headers[LOCATION], format!("/ui/jobs/{failed}"));
    assert_eq!(
        app.events_of(&failed, jobstream_core::EventType::RetryRequested)
            .await
            .len(),
        1
    );
    app.wait_for_row(&failed, "failed again", |r| {
        r.status == "failed"
            && r.attempt >= 1
            && r.errors
                .as_ref()
                .is_some_and(|e| e.as_array().is_some_and(|a| a.len() >= 2))
    })
    .await;

    // Bulk: the confirmation shows the count; only the confirmed post acts.
    let long = job_in(
        &app,
        &alice,
        json!({"kind": "sleep", "payload": {"ms": 60000}}),
        "running",
    )
    .await;
    let ask = a
        .post(
            "/ui/jobs/bulk",
            &[("csrf", &token), ("action", "cancel"), ("id", &long)],
        )
        .await;
    assert_eq!(ask.status, StatusCode::OK);
    assert!(ask.body.contains("Cancel 1 job?"), "{}", ask.body);
    assert!(
        app.events_of(&long, jobstream_core::EventType::CancelRequested)
            .await
            .is_empty()
    );
    let all = a
        .post(
            "/ui/jobs/bulk",
            &[
                ("csrf", &token),
                ("action", "retry"),
                ("all", "1"),
                ("f_status", "failed"),
            ],
        )
        .await;
    assert!(all.body.contains("Retry 1 job?"), "{}", all.body);
    assert_eq!(
        a.post(
            "/ui/jobs/bulk",
            &[("action", "cancel"), ("id", &long), ("confirm", "1")]
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    let confirmed = a
        .post(
            "/ui/jobs/bulk",
            &[
                ("csrf", &token),
                ("action", "cancel"),
                ("id", &long),
                ("confirm", "1"),
            ],
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK);
    assert!(confirmed.body.contains("1 requested"), "{}", confirmed.body);
    app.wait_for_row(&long, "cancelled", |r| r.status == "cancelled")
        .await;

    // Logging out needs the token too, and ends the session.
    assert_eq!(
        a.post("/ui/logout", &[]).await.status,
        StatusCode::FORBIDDEN
    );
    let out = a.post("/ui/logout", &[("csrf", &token)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(
        out.headers[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
}
db_test!(actions_need_the_sessions_csrf_token);

async fn the_sql_console_refuses_writes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.token("root", true);
    let id = job_in(
        &app,
        &admin,
        json!({"kind": "echo", "payload": {}}),
        "succeeded",
    )
    .await;
    let root = Browser::login(&app, &admin).await;
    let token = root.get("/ui/data/sql").await.csrf();
    let before = app.rows().await.len();
    for write in [
        "DELETE FROM queued_jobs",
        "UPDATE queued_jobs SET status = 'failed'",
        "SELECT 1; DELETE FROM queued_jobs",
        "WITH gone AS (DELETE FROM queued_jobs RETURNING id) SELECT * FROM gone",
        "DROP TABLE queued_jobs",
    ] {
        let p = root
            .post("/ui/data/sql", &[("csrf", &token), ("sql", write)])
            .await;
        assert_eq!(
            p.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{write}: {}",
            p.body
        );
    }
    assert_eq!(app.rows().await.len(), before, "nothing was deleted");
    assert!(app.rows().await.iter().all(|r| r.status == "succeeded"));
    let read = root
        .post(
            "/ui/data/sql",
            &[
                ("csrf", &token),
                ("sql", "SELECT id, status FROM queued_jobs"),
            ],
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert!(read.body.contains(&id) && read.body.contains("succeeded"));
    let no_csrf = root.post("/ui/data/sql", &[("sql", "SELECT 1")]).await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let sorted = root
        .get("/ui/data/queued_jobs?sort=created_at&desc=true")
        .await;
    assert_eq!(sorted.status, StatusCode::OK);
    assert!(sorted.body.contains(&id));
}
db_test!(the_sql_console_refuses_writes);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_and_assets_are_served_from_the_binary() {
    let app = TestApp::with(Backend::Sqlite, Options::api_only()).await;
    let http = client();
    let docs = http
        .get(format!("{}/docs/", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("swagger"));
    let init = http
        .get(format!("{}/docs/swagger-initializer.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), StatusCode::OK);
    assert!(init.text().await.unwrap().contains("/openapi.json"));

    let login = page_of(
        http.get(format!("{}/ui/login", app.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let start = login.body.find("/ui/assets/").expect("asset link");
    let end = start + login.body[start..].find('"').unwrap();
    let css = &login.body[start..end];
    let res = http.get(format!("{}{css}", app.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()[CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    let js = css.replace("console.css", "htmx.min.js");
    let res = http.get(format!("{}{js}", app.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("htmx"));
    let stale = http
        .get(format!("{}/ui/assets/0000/console.css", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::NOT_FOUND);
}

async fn schedules_are_created_run_and_deleted_from_the_console(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, bob) = (app.token("alice", false), app.token("bob", false));
    let a = Browser::login(&app, &alice).await;
    let b = Browser::login(&app, &bob).await;
    let token = a.get("/ui/schedules").await.csrf();
    let form = [
        ("csrf", token.as_str()),
        ("name", "nightly"),
        ("timing", "every"),
        ("when", "1h"),
        ("kind", "echo"),
        ("payload", r#"{"from": "schedule"}"#),
    ];
    let created = a.post("/ui/schedules", &form).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let bad = a
        .post(
            "/ui/schedules",
            &[
                ("csrf", token.as_str()),
                ("name", "x"),
                ("when", "1h"),
                ("kind", "nope"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let list = jobstream_testkit::eventually("schedule listed", crate::helpers::WAIT, || async {
        let p = a.get("/ui/schedules").await;
        p.body.contains("nightly").then_some(p)
    })
    .await;
    assert!(list.body.contains("every"));
    assert!(!b.get("/ui/schedules").await.body.contains("nightly"));

    let run = a
        .post("/ui/schedules/nightly/run", &[("csrf", token.as_str())])
        .await;
    assert_eq!(run.status, StatusCode::SEE_OTHER, "{}", run.body);
    let job_page = run.headers[LOCATION].to_str().unwrap().to_owned();
    let id = job_page.trim_start_matches("/ui/jobs/").to_owned();
    app.wait_for_row(&id, "run now succeeded", |r| {
        r.status == "succeeded" && r.owner == "alice"
    })
    .await;
    let bobs_token = b.get("/ui/schedules").await.csrf();
    assert_eq!(
        b.post(
            "/ui/schedules/nightly/run",
            &[("csrf", bobs_token.as_str()), ("owner", "alice")]
        )
        .await
        .status,
        StatusCode::NOT_FOUND,
        "bob cannot run alice's schedule"
    );
    // The same operation over REST: the owner runs it; another user gets 404; an admin
    // names the owner (the job is the admin's own submission).
    let run_rest = |token: String, query: &'static str| {
        let req = app
            .http
            .post(format!("{}/v1/schedules/nightly/run{query}", app.base))
            .bearer_auth(token);
        async move { req.send().await.expect("POST run") }
    };
    let res = run_rest(app.token("alice", false), "").await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let location = res.headers()[LOCATION].to_str().unwrap().to_owned();
    let job: Value = res.json().await.expect("job");
    assert_eq!(
        location,
        format!("/v1/jobs/{}", job["id"].as_str().unwrap())
    );
    assert_eq!(job["kind"], "echo");
    app.wait_for_row(job["id"].as_str().unwrap(), "REST run now", |r| {
        r.status == "succeeded" && r.owner == "alice" && r.payload == json!({"from": "schedule"})
    })
    .await;
    let res = run_rest(app.token("bob", false), "?owner=alice").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let res = run_rest(app.token("root", true), "?owner=alice").await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let job: Value = res.json().await.expect("job");
    assert_eq!(job["owner"], "root");
    let deleted = a
        .post("/ui/schedules/nightly/delete", &[("csrf", token.as_str())])
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    jobstream_testkit::eventually("schedule gone", crate::helpers::WAIT, || async {
        (!a.get("/ui/schedules").await.body.contains("nightly")).then_some(())
    })
    .await;
}
db_test!(schedules_are_created_run_and_deleted_from_the_console);

async fn queues_and_workers_pages_show_the_queue_service_and_pause_with_csrf(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, admin) = (app.token("alice", false), app.token("root", true));
    job_in(
        &app,
        &alice,
        json!({"kind": "echo", "payload": {}}),
        "succeeded",
    )
    .await;
    let a = Browser::login(&app, &alice).await;
    let root = Browser::login(&app, &admin).await;

    // Operators' pages: a user is refused and not linked to them.
    for path in ["/ui/queues", "/ui/workers"] {
        assert_eq!(a.get(path).await.status, StatusCode::FORBIDDEN, "{path}");
    }
    assert!(!a.get("/ui").await.body.contains(r#"href="/ui/queues""#));

    let page = root.get("/ui/queues").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body
            .contains(r#"href="/ui/queues" aria-current="page""#)
    );
    assert!(
        page.body.contains(r#"data-queue="default""#),
        "{}",
        page.body
    );
    assert!(page.body.contains("/ui/queues/default/pause"));
    let token = page.csrf();

    // Pausing needs the session's CSRF token; a refused request stores nothing.
    let pause = "/ui/queues/default/pause";
    assert_eq!(root.post(pause, &[]).await.status, StatusCode::FORBIDDEN);
    let alices_token = a.get("/ui/jobs").await.csrf();
    assert_eq!(
        root.post(pause, &[("csrf", &alices_token)]).await.status,
        StatusCode::FORBIDDEN
    );
    // A user with a valid token of their own is refused by the service.
    assert_eq!(
        a.post(pause, &[("csrf", &alices_token)]).await.status,
        StatusCode::FORBIDDEN
    );
    let control = jobstream_core::subject::queue_control(
        &jobstream_core::subject::QueueName::default_queue(),
    );
    assert!(
        app.broker
            .last_on_subject(&control)
            .await
            .expect("read")
            .is_none()
    );

    let paused = root.post(pause, &[("csrf", &token)]).await;
    assert_eq!(paused.status, StatusCode::SEE_OTHER, "{}", paused.body);
    assert_eq!(paused.headers[LOCATION], "/ui/queues");
    // The same state GET /v1/queues reports, once projected; the page then offers Resume.
    app.wait_for_queue(&admin, "default", "default paused", |q| {
        q["paused"] == true && q["changed_by"] == "root"
    })
    .await;
    let page = root.get("/ui/queues").await.body;
    assert!(page.contains("/ui/queues/default/resume") && page.contains(">paused<"));
    let resumed = root
        .post("/ui/queues/default/resume", &[("csrf", &token)])
        .await;
    assert_eq!(resumed.status, StatusCode::SEE_OTHER);
    app.wait_for_queue(&admin, "default", "default resumed", |q| {
        q["paused"] == false
    })
    .await;
    assert_eq!(
        root.post("/ui/queues/default/explode", &[("csrf", &token)])
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // The workers page lists the running worker from the registry.
    let workers = jobstream_testkit::eventually("the worker on the page", WAIT, || async {
        let p = root.get("/ui/workers").await;
        assert_eq!(p.status, StatusCode::OK);
        p.body
            .contains(r#"data-id="test-worker""#)
            .then_some(p.body)
    })
    .await;
    assert!(
        workers.contains("default") && !workers.contains(">stale<"),
        "{workers}"
    );
}
db_test!(queues_and_workers_pages_show_the_queue_service_and_pause_with_csrf);
