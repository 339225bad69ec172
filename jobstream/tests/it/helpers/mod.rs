//! `TestApp`: a whole jobstream system per test, with typed helpers.
//!
//! Layout: this file starts a system; [`http`] talks to its API as a client, [`components`]
//! starts more of its pieces, [`admin`], [`workflows`] and [`cli`] drive the operators' endpoints, workflows and the
//! terminal client, [`projection`] reads and waits on the tables, [`stream`] reads
//! and writes the job stream.

pub(crate) mod admin;
pub(crate) mod cli;
pub(crate) mod components;
pub(crate) mod http;
pub(crate) mod projection;
pub(crate) mod stream;
pub(crate) mod workflows;

pub(crate) use components::RealKinds;

use std::sync::Arc;
use std::time::Duration;

use jobstream_api::auth::{AuthConfig, Verifier};
use jobstream_api::{App, AppState};
use jobstream_core::broker::{Broker, StreamSettings};
use jobstream_projector::ProjectorConfig;
use jobstream_testkit::{Backend, NatsServer, NatsTestCluster, TestDb};
use jobstream_worker::{Backoff, WorkerConfig};
use secrecy::SecretString;
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
    /// API and projector, no worker (a test starts it when it wants it).
    pub(crate) fn without_worker() -> Self {
        Options {
            worker: false,
            ..Options::default()
        }
    }

    /// The API alone: no worker, no projector (a test starts them when it wants them).
    pub(crate) fn api_only() -> Self {
        Options {
            projector: false,
            ..Options::without_worker()
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
    /// The checkpoint of the projector [`Self::start_projector`] started last: waits on the
    /// projection wake up when it moves.
    pub(crate) applied: Option<tokio::sync::watch::Receiver<u64>>,
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
            applied: None,
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
        console_secret: None,
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
