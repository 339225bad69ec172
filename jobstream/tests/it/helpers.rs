//! `TestApp`: a whole jobstream system per test, with typed helpers.

use std::sync::Arc;
use std::time::Duration;

use jobstream_api::auth::{AuthConfig, Verifier};
use jobstream_api::{App, AppState};
use jobstream_core::broker::{Broker, StreamSettings};
use jobstream_core::{Envelope, EventType};
use jobstream_entity::queued_job;
use jobstream_projector::{Projector, ProjectorConfig};
use jobstream_testkit::{Backend, NatsServer, NatsTestCluster, TestDb, eventually};
use jobstream_worker::{Backoff, Registry, Worker, WorkerConfig};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use secrecy::SecretString;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Generates one test per backend: `<name>::sqlite` always, `<name>::postgres` when
/// `TEST_DATABASE_URL` is set (it returns early, saying so, when it is not).
macro_rules! db_test {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(jobstream_testkit::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if std::env::var("TEST_DATABASE_URL").map_or(true, |u| u.is_empty()) {
                    eprintln!("TEST_DATABASE_URL unset: PostgreSQL variant not run");
                    return;
                }
                super::$name(jobstream_testkit::Backend::Postgres).await;
            }
        }
    };
}
pub(crate) use db_test;

/// Generous bound for waits; tests finish as soon as the awaited condition holds.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// A running piece of the system that a test can stop cleanly or kill.
pub(crate) struct Component {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl Component {
    pub(crate) fn spawn<F>(f: impl FnOnce(CancellationToken) -> F) -> Self
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let handle = tokio::spawn(f(stop.clone()));
        Component { stop, handle }
    }

    /// Graceful stop: cancel and wait.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.handle.await;
    }

    /// A crash: the task and everything it owns (its NATS connection, running jobs) is dropped, nothing acked.
    pub(crate) async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

/// Knobs a test may turn.
#[derive(Clone)]
pub(crate) struct Options {
    /// Start a worker with the system.
    pub(crate) worker: bool,
    /// Start the projector with the system.
    pub(crate) projector: bool,
    /// Worker settings.
    pub(crate) worker_config: WorkerConfig,
    /// Projector settings.
    pub(crate) projector_config: ProjectorConfig,
    /// Token verifier of the API (default: HS256 with the test secret).
    pub(crate) verifier: Option<Arc<Verifier>>,
    /// `--open-registration`.
    pub(crate) open_registration: bool,
    /// Kinds the API accepts.
    pub(crate) kinds: jobstream_core::kinds::Catalogue,
    /// Bounds of the API's `/readyz`.
    pub(crate) readiness: jobstream_api::routes::health::Readiness,
    /// The text of the nats-server configuration, instead of the project's `nats.conf`.
    pub(crate) nats_config: Option<String>,
    /// How long the API retries a publish whose outcome is unknown (default: the broker's).
    pub(crate) publish_deadline: Option<Duration>,
    /// Run on a three-node cluster with an R3 stream instead of one nats-server.
    pub(crate) cluster: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            worker: true,
            projector: true,
            worker_config: WorkerConfig {
                id: "test-worker".into(),
                concurrency: 16,
                ack_wait: Duration::from_secs(5),
                backoff: Backoff {
                    base: Duration::from_millis(50),
                    max: Duration::from_millis(200),
                },
                shutdown_grace: Duration::from_secs(2),
                ..WorkerConfig::default()
            },
            projector_config: ProjectorConfig {
                sweep_interval: Duration::from_secs(3600),
                ..ProjectorConfig::default()
            },
            verifier: None,
            open_registration: false,
            kinds: jobstream_core::kinds::Catalogue::builtin(),
            readiness: Default::default(),
            nats_config: None,
            publish_deadline: None,
            cluster: false,
        }
    }
}

impl Options {
    /// The API alone: no worker, no projector (a test starts them when it wants them).
    pub(crate) fn api_only() -> Self {
        Options {
            worker: false,
            projector: false,
            ..Options::default()
        }
    }
}

/// The NATS side of a test system: one nats-server, or a three-node cluster.
pub(crate) enum TestNats {
    Single(Box<NatsServer>),
    Cluster(NatsTestCluster),
}

impl TestNats {
    /// The client URL (every node's, comma-separated, for a cluster).
    pub(crate) fn url(&self) -> String {
        match self {
            TestNats::Single(s) => s.url(),
            TestNats::Cluster(c) => c.urls(),
        }
    }

    /// SIGKILL of the one server.
    pub(crate) async fn kill(&mut self) {
        self.single().kill().await;
    }

    /// Starts the one server again on its port and store.
    pub(crate) async fn restart(&mut self) {
        self.single().restart().await;
    }

    fn single(&mut self) -> &mut NatsServer {
        match self {
            TestNats::Single(s) => s,
            TestNats::Cluster(_) => panic!("a cluster test kills nodes through cluster()"),
        }
    }

    /// The cluster (of a test spawned with `Options::cluster`).
    pub(crate) fn cluster(&mut self) -> &mut NatsTestCluster {
        match self {
            TestNats::Cluster(c) => c,
            TestNats::Single(_) => panic!("not a cluster test"),
        }
    }
}

/// A whole system: nats-server, database, api, worker, projector.
pub(crate) struct TestApp {
    pub(crate) nats: TestNats,
    pub(crate) db: TestDb,
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    pub(crate) auth: AuthConfig,
    pub(crate) options: Options,
    /// Broker connection of the test itself (to inspect the stream).
    pub(crate) broker: Broker,
    pub(crate) worker: Option<Component>,
    pub(crate) projector: Option<Component>,
    /// Where the default worker writes e-mails (`<job_id>.eml`; no SMTP in tests unless asked).
    pub(crate) mailbox: tempfile::TempDir,
    _api: Component,
}

impl TestApp {
    /// Spawns with default options; `None` when the backend is not configured.
    pub(crate) async fn spawn(backend: Backend) -> TestApp {
        Self::with(backend, Options::default()).await
    }

    /// Spawns with the given options.
    pub(crate) async fn with(backend: Backend, options: Options) -> TestApp {
        // Output is captured per test; RUST_LOG=debug shows what a failing test did.
        jobstream_core::telemetry::init(
            "warn",
            jobstream_core::telemetry::LogFormat::Pretty,
            jobstream_core::telemetry::test_writer(),
        );
        let (nats, replicas) = if options.cluster {
            (TestNats::Cluster(NatsTestCluster::start().await), 3)
        } else {
            let single = NatsServer::start_with_config(options.nats_config.as_deref()).await;
            (TestNats::Single(Box::new(single)), 1)
        };
        let db = TestDb::create(backend).await.expect("backend configured");
        let broker = connect(&nats.url(), "test").await;
        broker
            .ensure_stream(&StreamSettings {
                replicas,
                ..StreamSettings::default()
            })
            .await
            .expect("stream");
        let auth = AuthConfig {
            hs256_secret: SecretString::from(format!("secret-{}", Uuid::new_v4())),
            issuer: "jobstream-test".into(),
            audience: "jobstream".into(),
        };
        let state = api_state(
            &nats.url(),
            &db.conn,
            &options,
            &auth,
            "api",
            jobstream_api::live::HubConfig::default(),
        )
        .await;
        let app = App::build(([127, 0, 0, 1], 0).into(), state)
            .await
            .expect("bind api");
        let base = format!("http://127.0.0.1:{}", app.port());
        let api = Component::spawn(|stop| async move {
            app.run_until_stopped(stop).await.expect("api");
        });
        let mut t = TestApp {
            nats,
            db,
            base,
            http: reqwest::Client::new(),
            auth,
            options: options.clone(),
            broker,
            worker: None,
            projector: None,
            mailbox: tempfile::tempdir().expect("mailbox dir"),
            _api: api,
        };
        if options.worker {
            t.start_worker().await;
        }
        if options.projector {
            t.start_projector().await;
        }
        t
    }

    /// The state of another API instance of this system: its own NATS connection, live
    /// tail and user cache, on the same nats-server and database.
    pub(crate) async fn api_state(
        &self,
        name: &str,
        hub: jobstream_api::live::HubConfig,
    ) -> AppState {
        api_state(
            &self.nats.url(),
            &self.db.conn,
            &self.options,
            &self.auth,
            name,
            hub,
        )
        .await
    }

    /// Another API instance on the same nats-server and database, with its own NATS
    /// connection and user cache: returns its base URL and the running component.
    pub(crate) async fn second_api(&self) -> (String, Component) {
        let state = self
            .api_state("api-2", jobstream_api::live::HubConfig::default())
            .await;
        let app = App::build(([127, 0, 0, 1], 0).into(), state)
            .await
            .expect("bind second api");
        let base = format!("http://127.0.0.1:{}", app.port());
        let c = Component::spawn(|stop| async move {
            app.run_until_stopped(stop).await.expect("api 2");
        });
        (base, c)
    }

    /// Starts a worker with every built-in kind (its own NATS connection); e-mails go to [`Self::mailbox`].
    pub(crate) async fn start_worker(&mut self) {
        let registry = Registry::with_all_builtins(jobstream_worker::KindsConfig {
            mail: jobstream_worker::email::MailConfig {
                mailbox_dir: self.mailbox.path().to_path_buf(),
                ..Default::default()
            },
            files: jobstream_core::files::FileStore::open(
                self.broker.jetstream(),
                &jobstream_core::files::FileSettings::default(),
            )
            .await
            .expect("files bucket"),
            images: Default::default(),
            webhook: Default::default(),
        })
        .expect("registry");
        self.start_worker_with(registry).await;
    }

    /// Starts a worker with the given handlers (its own NATS connection).
    pub(crate) async fn start_worker_with(&mut self, registry: Registry) {
        let broker = connect(&self.nats.url(), "worker").await;
        let worker = Worker::build(broker, registry, self.options.worker_config.clone())
            .await
            .expect("worker");
        self.worker = Some(Component::spawn(|stop| async move {
            worker.run(stop).await.expect("worker run");
        }));
    }

    /// Starts the projector (its own NATS connection) on the test database.
    pub(crate) async fn start_projector(&mut self) {
        let broker = connect(&self.nats.url(), "projector").await;
        let projector = Projector::build(
            broker,
            self.db.conn.clone(),
            self.options.projector_config.clone(),
        )
        .await
        .expect("projector");
        self.projector = Some(Component::spawn(|stop| async move {
            projector.run(stop).await.expect("projector run");
        }));
    }

    /// Folds the whole stream, as it is now, into a fresh database with a fresh projector
    /// consumer named `name` (what "the tables can be rebuilt from the stream" means);
    /// returns that database once the fold has reached the stream's last sequence.
    pub(crate) async fn clean_fold(&self, name: &str) -> TestDb {
        let fresh = self.db.sibling().await;
        let projector = Projector::build(
            connect(&self.nats.url(), name).await,
            fresh.conn.clone(),
            ProjectorConfig {
                name: name.into(),
                ..self.options.projector_config.clone()
            },
        )
        .await
        .expect("projector");
        let mut applied = projector.applied();
        let last_seq = self
            .broker
            .jetstream()
            .get_stream("JOBS")
            .await
            .expect("stream")
            .info()
            .await
            .expect("info")
            .state
            .last_sequence;
        let stop = CancellationToken::new();
        let run = tokio::spawn(projector.run(stop.clone()));
        tokio::time::timeout(WAIT, applied.wait_for(|seq| *seq >= last_seq))
            .await
            .expect("clean fold finished")
            .expect("watch");
        stop.cancel();
        run.await.expect("join").expect("projector run");
        fresh
    }

    /// A token for `sub`.
    pub(crate) fn token(&self, sub: &str, admin: bool) -> String {
        jobstream_api::auth::mint_hs256(&self.auth, sub, admin, Duration::from_secs(600))
            .expect("token")
    }

    /// `POST /v1/jobs`.
    pub(crate) async fn submit(&self, token: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/jobs", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("POST /v1/jobs")
    }

    /// `POST /v1/jobs`, asserting `202`; returns the job.
    pub(crate) async fn submit_ok(&self, token: &str, body: &Value) -> Value {
        let res = self.submit(token, body).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED, "submit {body}");
        res.json().await.expect("job json")
    }

    /// `GET <path>` with a token; returns status and JSON body.
    pub(crate) async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET");
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// The projected row of a job, once it satisfies `pred`.
    pub(crate) async fn wait_for_row(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&queued_job::Model) -> bool,
    ) -> queued_job::Model {
        eventually(what, WAIT, || async {
            queued_job::Entity::find_by_id(id.to_owned())
                .one(&self.db.conn)
                .await
                .expect("query")
                .filter(|r| pred(r))
        })
        .await
    }

    /// Waits until `n` rows have `status`.
    pub(crate) async fn wait_for_count(&self, status: &str, n: u64) {
        eventually(&format!("{n} jobs {status}"), WAIT, || async {
            let c = queued_job::Entity::find()
                .filter(queued_job::Column::Status.eq(status))
                .count(&self.db.conn)
                .await
                .expect("count");
            (c >= n).then_some(())
        })
        .await;
    }

    /// Every row of the projection, by id.
    pub(crate) async fn rows(&self) -> Vec<queued_job::Model> {
        queued_job::Entity::find()
            .order_by_asc(queued_job::Column::Id)
            .all(&self.db.conn)
            .await
            .expect("rows")
    }

    /// Number of job events in the stream (`jobs.>`; a caller's first authenticated request
    /// also stores their `user.registered` under `users.>`, not counted here).
    pub(crate) async fn stream_messages(&self) -> u64 {
        use async_nats::jetstream::consumer::{AckPolicy, pull};
        let consumer = self
            .broker
            .jetstream()
            .get_stream("JOBS")
            .await
            .expect("stream")
            .create_consumer(pull::Config {
                filter_subject: "jobs.>".into(),
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(5),
                ..Default::default()
            })
            .await
            .expect("counting consumer");
        consumer.cached_info().num_pending
    }

    /// The events of a job in the stream, of one type.
    pub(crate) async fn events_of(&self, id: &str, t: EventType) -> Vec<Envelope> {
        let id = Uuid::parse_str(id).expect("uuid");
        self.broker
            .job_history(id)
            .await
            .expect("history")
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| e.event_type() == t)
            .collect()
    }
}

/// The state of an API instance: its own NATS connection and live tail.
async fn api_state(
    nats_url: &str,
    db: &sea_orm::DatabaseConnection,
    options: &Options,
    auth: &AuthConfig,
    name: &str,
    hub: jobstream_api::live::HubConfig,
) -> AppState {
    let mut broker = connect(nats_url, name).await;
    if let Some(deadline) = options.publish_deadline {
        broker = broker.with_publish_deadline(deadline);
    }
    let settings = jobstream_api::ApiSettings {
        verifier: options
            .verifier
            .clone()
            .unwrap_or_else(|| Arc::new(Verifier::new(auth))),
        open_registration: options.open_registration,
        kinds: options.kinds.clone(),
        files: jobstream_core::files::FileSettings::default(),
        // Uploads up to 1 MiB.
        max_upload_bytes: 1024 * 1024,
        readiness: options.readiness.clone(),
        hub,
        admission: Default::default(),
    };
    AppState::build(broker, db.clone(), settings)
        .await
        .expect("api state")
}

/// A broker connection with its own client.
pub(crate) async fn connect(url: &str, name: &str) -> Broker {
    Broker::connect(url, name, "JOBS")
        .await
        .expect("connect to nats")
}
