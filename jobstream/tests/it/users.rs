//! Users, the seeds' flows: a user exists from their first authenticated request (once,
//! even with concurrent requests on several API instances); `GET /v1/users/me` reads
//! its writes; admins list users; `POST /v1/users` registers a user and queues the
//! registration e-mail job, which runs like any job; `jobstream seed` fills a system.

use std::collections::HashSet;
use std::time::Duration;

use jobstream_core::user::{self, UserEvent};
use jobstream_entity::user as user_row;
use jobstream_testkit::Backend;
use jobstream_worker::{JobContext, JobError, Registry};
use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{claims, issuer_app, sign};
use crate::helpers::{Options, TestApp, db_test};

/// The built-in kinds and an `email.registration` that checks the payload contract and
/// reports where the mail would go (the real SMTP/mailbox handler is tested in `email`).
fn mail_registry() -> Registry {
    let mut registry = Registry::with_builtins();
    registry.register("email.registration", |ctx: JobContext| async move {
        let field = |k: &str| {
            ctx.payload[k]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| JobError::Fatal(format!("payload.{k} missing")))
        };
        let (to, name, user_id) = (field("to")?, field("name")?, field("user_id")?);
        Ok(json!({"delivered_to": to, "greeting": format!("Welcome, {name}!"), "user_id": user_id}))
    });
    registry
}

/// A token from the test issuer with profile claims.
fn person(sub: &str, name: &str, email: &str) -> String {
    let mut c = claims(sub);
    c["name"] = json!(name);
    c["email"] = json!(email);
    sign(Algorithm::RS256, "rsa-private.pem", Some("test-rsa"), &c)
}

fn admin_token() -> String {
    let mut c = claims("root");
    c["roles"] = json!(["admin"]);
    sign(
        Algorithm::EdDSA,
        "ed25519-private.pem",
        Some("test-ed25519"),
        &c,
    )
}

async fn first_requests_register_the_user_once_and_me_reads_its_writes(backend: Backend) {
    // No projector yet: `/v1/users/me` must answer from the stream.
    let mut app = issuer_app(backend, Options::api_only()).await;
    let (base2, api2) = app.second_api().await;
    let sub = "google-oauth2|1077.42|x";
    let token = person(sub, "Ada Lovelace", "Ada@Example.com");
    let requests = (0..12).map(|i| {
        let base = if i % 2 == 0 { &app.base } else { &base2 };
        let req = app
            .http
            .get(format!("{base}/v1/jobs"))
            .bearer_auth(&token)
            .send();
        async move { req.await.expect("GET").status() }
    });
    for status in futures::future::join_all(requests).await {
        assert_eq!(status, StatusCode::OK);
    }
    let id = user::user_id_for_sub(sub);
    let history = app.broker.user_history(id).await.expect("history");
    assert_eq!(history.len(), 1, "one registration: {history:?}");
    assert!(matches!(history[0].1.event, UserEvent::Registered { .. }));
    assert_eq!(app.stream_total().await, 1);

    for base in [&app.base, &base2] {
        let res = app
            .http
            .get(format!("{base}/v1/users/me"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("me");
        assert_eq!(res.status(), StatusCode::OK);
        let me: Value = res.json().await.expect("json");
        assert_eq!(me["id"], id.to_string());
        assert_eq!(me["sub"], sub);
        assert_eq!(me["name"], "Ada Lovelace");
        assert_eq!(me["email"], "ada@example.com");
        assert_eq!(me["created_by"], Value::Null);
    }

    app.start_projector().await;
    let row = app.wait_for_user(id).await;
    assert_eq!(row.sub.as_deref(), Some(sub));
    assert_eq!(row.email.as_deref(), Some("ada@example.com"));
    let (status, page) = app.get(&admin_token(), "/v1/users").await;
    assert_eq!(status, StatusCode::OK);
    let subs: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|u| u["sub"].as_str())
        .collect();
    assert!(subs.contains(&sub), "{page}");
    api2.stop().await;
}
db_test!(first_requests_register_the_user_once_and_me_reads_its_writes);

async fn admins_create_users_whose_registration_email_job_runs(backend: Backend) {
    let app = issuer_app(backend, Options::without_worker()).await;
    let worker = app
        .spawn_worker(mail_registry(), app.options.worker_config.clone())
        .await;
    let admin = admin_token();
    let created = app
        .create_user(
            &admin,
            &json!({"email": " Grace@Navy.MIL ", "name": "Grace Hopper", "sub": "auth0|grace"}),
        )
        .await;
    let user_id = created.user.id.to_string();
    assert_eq!(user_id, user::user_id_for_sub("auth0|grace").to_string());
    assert_eq!(created.user.email.as_deref(), Some("grace@navy.mil"));
    assert_eq!(created.user.created_by.as_deref(), Some("root"));
    let job = &created.registration_job;
    assert_eq!(job.kind, "email.registration");
    assert_eq!(job.status, "queued");
    assert_eq!(
        job.payload,
        json!({"to": "grace@navy.mil", "name": "Grace Hopper", "user_id": user_id})
    );
    let job_id = &job.id.to_string();

    // The registration e-mail is a job like any other: its progress is visible.
    let row = app
        .wait_for_row(job_id, "registration e-mail sent", |r| {
            r.status == "succeeded"
        })
        .await;
    assert_eq!(
        row.result,
        Some(
            json!({"delivered_to": "grace@navy.mil", "greeting": "Welcome, Grace Hopper!", "user_id": user_id})
        )
    );
    let (status, got) = app.get(&admin, &format!("/v1/jobs/{job_id}")).await;
    assert_eq!(
        (status, got["status"].as_str()),
        (StatusCode::OK, Some("succeeded"))
    );

    // The user signs in later with that sub: it is the same user, not a new one.
    let id = Uuid::parse_str(&user_id).expect("uuid");
    app.wait_for_user(id).await;
    let grace = sign(
        Algorithm::ES256,
        "ec-private.pem",
        Some("test-ec"),
        &claims("auth0|grace"),
    );
    let (status, me) = app.get(&grace, "/v1/users/me").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["id"], user_id);
    assert_eq!(me["name"], "Grace Hopper");
    assert_eq!(app.broker.user_history(id).await.expect("history").len(), 1);
    worker.stop().await;
}
db_test!(admins_create_users_whose_registration_email_job_runs);

async fn user_creation_is_validated_authorised_and_unique(backend: Backend) {
    let app = issuer_app(backend, Options::without_worker()).await;
    let admin = admin_token();
    let alice = person("alice", "Alice", "alice@example.com");
    // Register both callers first, so the stream count below only moves with what we test.
    assert_eq!(app.get(&admin, "/v1/users/me").await.0, StatusCode::OK);
    assert_eq!(app.get(&alice, "/v1/users/me").await.0, StatusCode::OK);
    let before = app.stream_total().await;

    let fields = |p: &Value| -> Vec<String> {
        let mut f: Vec<String> = p["errors"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(|f| f["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        f.sort();
        f
    };
    let (status, p) = app
        .post_user(&admin, &json!({"email": "not-an-address", "name": "X"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), ["email"]);
    let (status, p) = app
        .post_user(&admin, &json!({"email": "x@example.com", "name": "   "}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), ["name"]);
    let (status, p) = app
        .post_user(&admin, &json!({"sub": "", "role": "admin"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), ["email", "name", "role", "sub"]);
    // Users may not create users (open registration is off).
    let (status, p) = app
        .post_user(&alice, &json!({"email": "b@example.com", "name": "B"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{p}");
    assert_eq!(
        app.stream_total().await,
        before,
        "refused requests store nothing"
    );

    // Duplicate e-mail, right away: the stream refuses the second registration.
    let (status, _) = app
        .post_user(
            &admin,
            &json!({"email": "carol@example.com", "name": "Carol"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, p) = app
        .post_user(
            &admin,
            &json!({"email": "CAROL@example.com", "name": "Carol 2"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("carol@example.com"))
    );
    // Duplicate e-mail under another sub, once the projection has the first user.
    app.wait_for_user(user::user_id_for_email("carol@example.com"))
        .await;
    let (status, _) = app
        .post_user(
            &admin,
            &json!({"email": "carol@example.com", "name": "Carol", "sub": "carol-sso"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Duplicate sub: alice registered herself on her first request.
    let (status, _) = app
        .post_user(
            &admin,
            &json!({"email": "alice2@example.com", "name": "Alice", "sub": "alice"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // One user event and one job event for carol; nothing for the refusals.
    assert_eq!(app.stream_total().await, before + 2);
}
db_test!(user_creation_is_validated_authorised_and_unique);

async fn users_are_listed_page_by_page(backend: Backend) {
    let app = issuer_app(backend, Options::without_worker()).await;
    let admin = admin_token();
    for i in 0..7 {
        let (status, _) = app
            .post_user(
                &admin,
                &json!({"email": format!("u{i}@example.com"), "name": format!("User {i}")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    // 7 created + the admin (registered by their first request).
    app.when_projected("8 users projected", || async {
        let (_, page) = app.get(&admin, "/v1/users?limit=100").await;
        (page["items"].as_array().map(Vec::len) == Some(8)).then_some(())
    })
    .await;
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut next = Some("/v1/users?limit=3".to_owned());
    while let Some(path) = next {
        let (status, page) = app.get(&admin, &path).await;
        assert_eq!(status, StatusCode::OK);
        for u in page["items"].as_array().expect("items") {
            seen.push(u["id"].as_str().expect("id").to_owned());
        }
        next = page["next"].as_str().map(str::to_owned);
        pages.push(page);
    }
    assert_eq!(pages.len(), 3);
    assert_eq!(seen.len(), 8);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 8, "no repeats");
    // Back from page 2 to page 1.
    let prev = pages[1]["prev"].as_str().expect("prev link");
    let (_, back) = app.get(&admin, prev).await;
    assert_eq!(back["items"], pages[0]["items"]);
    let (_, one) = app.get(&admin, "/v1/users?email=U3@example.com").await;
    assert_eq!(one["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        app.get(&admin, "/v1/users?limit=0").await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}
db_test!(users_are_listed_page_by_page);

async fn the_users_table_is_rebuilt_identically_from_the_stream(backend: Backend) {
    let app = issuer_app(backend, Options::default()).await;
    let admin = admin_token();
    for i in 0..5 {
        let (status, _) = app
            .post_user(&admin, &json!({"email": format!("r{i}@example.com"), "name": format!("R {i}"), "sub": format!("sso|{i}")}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let token = person(
            &format!("self.{i}"),
            &format!("Self {i}"),
            &format!("self{i}@example.com"),
        );
        app.submit_job(&token, &json!({"kind": "echo", "payload": i}))
            .await;
        let res = app
            .http
            .patch(format!("{}/v1/users/me", app.base))
            .bearer_auth(&token)
            .json(&json!({"name": format!("Renamed {i}")}))
            .send()
            .await
            .expect("PATCH");
        assert_eq!(res.status(), StatusCode::OK);
    }
    let rows = || async {
        use sea_orm::QueryOrder;
        user_row::Entity::find()
            .order_by_asc(user_row::Column::Id)
            .all(&app.db.conn)
            .await
            .expect("rows")
    };
    // 5 created + 5 self-registered + the admin.
    app.when_projected("11 users projected, renames included", || async {
        let rows = rows().await;
        let renamed = rows
            .iter()
            .filter(|r| r.name.as_deref().is_some_and(|n| n.starts_with("Renamed")))
            .count();
        (rows.len() == 11 && renamed == 5).then_some(())
    })
    .await;
    let live = rows().await;

    let fresh_db = app.clean_fold("clean-fold").await;
    let rebuilt = {
        use sea_orm::QueryOrder;
        user_row::Entity::find()
            .order_by_asc(user_row::Column::Id)
            .all(&fresh_db.conn)
            .await
            .expect("rows")
    };
    assert_eq!(rebuilt, live);
}
db_test!(the_users_table_is_rebuilt_identically_from_the_stream);

async fn users_update_their_profile_and_read_it_back_at_once(backend: Backend) {
    let app = issuer_app(backend, Options::without_worker()).await;
    let ada = person("ada", "Ada", "ada@example.com");
    let bob = person("bob", "Bob", "bob@example.com");
    let patch = |token: &str, body: Value| {
        let req = app
            .http
            .patch(format!("{}/v1/users/me", app.base))
            .bearer_auth(token)
            .json(&body)
            .send();
        async move {
            let res = req.await.expect("PATCH");
            let status = res.status();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, me) = patch(&ada, json!({"name": "Ada King, Countess of Lovelace"})).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["name"], "Ada King, Countess of Lovelace");
    assert_eq!(me["email"], "ada@example.com");
    // Read-your-writes, whatever the projector's lag.
    let (_, me) = app.get(&ada, "/v1/users/me").await;
    assert_eq!(me["name"], "Ada King, Countess of Lovelace");
    let id = user::user_id_for_sub("ada");
    app.when_projected("update projected", || async {
        user_row::Entity::find_by_id(id.to_string())
            .one(&app.db.conn)
            .await
            .expect("query")
            .filter(|r| r.name.as_deref() == Some("Ada King, Countess of Lovelace"))
    })
    .await;

    let (status, p) = patch(&ada, json!({"name": " ", "colour": "red"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["errors"].as_array().map(Vec::len), Some(2));
    // Bob's address, once the projection has Bob.
    assert_eq!(app.get(&bob, "/v1/users/me").await.0, StatusCode::OK);
    app.wait_for_user(user::user_id_for_sub("bob")).await;
    let (status, _) = patch(&ada, json!({"email": "BOB@example.com"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let history = app.broker.user_history(id).await.expect("history");
    assert_eq!(history.len(), 2, "registered + one update: {history:?}");
}
db_test!(users_update_their_profile_and_read_it_back_at_once);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_registration_lets_any_caller_create_users() {
    let app = issuer_app(
        Backend::Sqlite,
        Options {
            open_registration: true,
            ..Options::api_only()
        },
    )
    .await;
    let token = person("newcomer", "New Comer", "new@example.com");
    let created = app
        .create_user(
            &token,
            &json!({"email": "friend@example.com", "name": "A Friend"}),
        )
        .await;
    assert_eq!(created.user.created_by.as_deref(), Some("newcomer"));
    // The caller owns (and can follow) the registration e-mail job.
    let job = created.registration_job.id;
    assert_eq!(
        app.get(&token, &format!("/v1/jobs/{job}")).await.0,
        StatusCode::OK
    );
    // Listing users stays an admin route.
    assert_eq!(app.get(&token, "/v1/users").await.0, StatusCode::FORBIDDEN);
    // The routes are in the OpenAPI document.
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    for path in ["/v1/users", "/v1/users/me", "/v1/jobs"] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_fills_a_development_system_with_users_and_a_mix_of_jobs() {
    let app = TestApp::with(Backend::Sqlite, Options::without_worker()).await;
    let worker = app
        .spawn_worker(mail_registry(), app.options.worker_config.clone())
        .await;
    let plan = jobstream::cmd::seed::Plan {
        users: 3,
        jobs_per_user: 10,
        idle_queue: "backlog".into(),
        long_sleep_ms: 120_000,
        timeout: Duration::from_secs(60),
    };
    let auth = app.auth.clone();
    let mint = move |sub: &str, admin: bool| {
        jobstream_api::auth::mint_hs256(&auth, sub, admin, Duration::from_secs(600))
            .map_err(anyhow::Error::from)
    };
    let report = jobstream::cmd::seed::seed(&app.base, &plan, &mint)
        .await
        .expect("seed");
    assert_eq!(report.users_created, 3);
    assert_eq!(report.jobs.len(), 30);
    assert_eq!(report.registration_jobs.len(), 3);
    let count = |s: &str| report.statuses.get(s).copied().unwrap_or(0);
    // Per user: 5 succeed (one after a retry) + its registration e-mail, 2 fail, 1 runs, 2 wait.
    assert_eq!(count("succeeded"), 3 * 5 + 3, "{:?}", report.statuses);
    assert_eq!(count("failed"), 3 * 2, "{:?}", report.statuses);
    assert_eq!(count("running"), 3, "{:?}", report.statuses);
    assert_eq!(count("queued"), 3 * 2, "{:?}", report.statuses);
    // Seeding again creates no second copy of the users.
    let again = jobstream::cmd::seed::seed(
        &app.base,
        &jobstream::cmd::seed::Plan {
            jobs_per_user: 0,
            ..plan
        },
        &mint,
    )
    .await
    .expect("seed again");
    assert_eq!((again.users_created, again.users_existing), (0, 3));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_consumer_from_before_users_is_widened_to_the_whole_stream() {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    let mut app = issuer_app(Backend::Sqlite, Options::api_only()).await;
    // The durable consumer as the previous version created it: job events only.
    app.broker
        .stream()
        .await
        .expect("stream")
        .create_consumer(pull::Config {
            durable_name: Some("projector".into()),
            filter_subject: "jobs.>".into(),
            ack_policy: AckPolicy::All,
            ..Default::default()
        })
        .await
        .expect("old consumer");
    let token = person("late", "Late Adopter", "late@example.com");
    assert_eq!(app.get(&token, "/v1/users/me").await.0, StatusCode::OK);
    app.start_projector().await;
    let row = app.wait_for_user(user::user_id_for_sub("late")).await;
    assert_eq!(row.name.as_deref(), Some("Late Adopter"));
    let info = app
        .broker
        .stream()
        .await
        .expect("stream")
        .get_consumer::<pull::Config>("projector")
        .await
        .expect("consumer")
        .cached_info()
        .config
        .filter_subject
        .clone();
    assert_eq!(info, "");
}
