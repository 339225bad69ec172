//! The running pieces of a test system besides the first API: more API instances,
//! workers, projectors, and the `jobstream` binary.

use std::process::Command;
use std::time::Duration;

use jobstream_api::jobs::admission::{Admission, AdmissionConfig};
use jobstream_api::live::HubConfig;
use jobstream_api::{App, AppState};
use jobstream_core::files::{FileSettings, FileStore};
use jobstream_core::kinds::Catalogue;
use jobstream_projector::{Projector, ProjectorConfig};
use jobstream_testkit::{Backend, TestDb};
use jobstream_worker::email::MailConfig;
use jobstream_worker::thumbnail::ImageLimits;
use jobstream_worker::webhook::WebhookConfig;
use jobstream_worker::{KindsConfig, Registry, Worker, WorkerConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Component, Options, TestApp, WAIT, connect};

/// Another API process of the same system (its own NATS connection, live tail and user cache).
pub(crate) struct ApiInstance {
    pub(crate) base: String,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl ApiInstance {
    /// Binds `state` on a free port and serves it.
    pub(crate) async fn serve(state: AppState) -> ApiInstance {
        let app = App::build(([127, 0, 0, 1], 0).into(), state)
            .await
            .expect("bind api");
        let base = format!("http://127.0.0.1:{}", app.port());
        let stop = CancellationToken::new();
        let s = stop.clone();
        let handle = tokio::spawn(async move {
            app.run_until_stopped(s).await.expect("api");
        });
        ApiInstance { base, stop, handle }
    }

    /// Graceful stop; returns how long it took.
    pub(crate) async fn stop(self) -> Duration {
        let t = std::time::Instant::now();
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("api stopped")
            .expect("api task");
        t.elapsed()
    }
}

/// What the real kinds of a test worker are configured with ([`TestApp::with_real_kinds`]).
#[derive(Default)]
pub(crate) struct RealKinds {
    pub(crate) mail: MailConfig,
    pub(crate) webhook: WebhookConfig,
    pub(crate) images: ImageLimits,
}

impl TestApp {
    /// Another API instance on the same nats-server and database: its base URL and itself.
    pub(crate) async fn second_api(&self) -> (String, ApiInstance) {
        let api = self.spawn_api_with(HubConfig::default()).await;
        (api.base.clone(), api)
    }

    /// Starts another API instance on a free port.
    pub(crate) async fn spawn_api(&self) -> ApiInstance {
        self.spawn_api_with(HubConfig::default()).await
    }

    /// Starts another API instance with the given live-tail tuning.
    pub(crate) async fn spawn_api_with(&self, config: HubConfig) -> ApiInstance {
        ApiInstance::serve(self.api_state("api-extra", config).await).await
    }

    /// Another API instance with admission control: its base URL and itself.
    pub(crate) async fn api_with_admission(
        &self,
        name: &str,
        config: AdmissionConfig,
    ) -> (String, ApiInstance) {
        let mut state = self.api_state(name, HubConfig::default()).await;
        state.edit().admission = Admission::new(config);
        let api = ApiInstance::serve(state).await;
        (api.base.clone(), api)
    }

    /// A worker with its own registry and settings, beside (or instead of) the default one.
    pub(crate) async fn spawn_worker(&self, registry: Registry, config: WorkerConfig) -> Component {
        let broker = connect(&self.nats.url(), &config.id).await;
        let worker = Worker::build(broker, registry, config)
            .await
            .expect("worker");
        Component::spawn(|stop| async move {
            worker.run(stop).await.expect("worker run");
        })
    }

    /// Another worker process with the built-in kinds, sharing the queues' durable consumers.
    pub(crate) async fn extra_worker(&self, id: &str) -> Component {
        let config = WorkerConfig {
            id: id.to_owned(),
            ..self.options.worker_config.clone()
        };
        self.spawn_worker(Registry::with_builtins(), config).await
    }

    /// Starts this system's worker with the given handlers (its own NATS connection).
    pub(crate) async fn start_worker_with(&mut self, registry: Registry) {
        let config = self.options.worker_config.clone();
        self.worker = Some(self.spawn_worker(registry, config).await);
    }

    /// Runs the `jobstream` binary against this system.
    pub(crate) fn jobstream(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_jobstream"))
            .args(args)
            .env("NATS_URL", self.nats.url())
            .env("DATABASE_URL", &self.db.url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run jobstream")
    }

    /// Starts a worker with every built-in kind (its own NATS connection); e-mails go to [`Self::mailbox`].
    pub(crate) async fn start_worker(&mut self) {
        let registry = Registry::with_all_builtins(KindsConfig {
            mail: MailConfig {
                mailbox_dir: self.mailbox.path().to_path_buf(),
                ..Default::default()
            },
            files: self.files().await,
            images: Default::default(),
            webhook: Default::default(),
        })
        .expect("registry");
        self.start_worker_with(registry).await;
    }

    /// A system whose worker runs every built-in kind, configured by `kinds`.
    pub(crate) async fn with_real_kinds(
        backend: Backend,
        kinds: RealKinds,
        catalogue: Catalogue,
    ) -> TestApp {
        let mut app = TestApp::with(
            backend,
            Options {
                kinds: catalogue,
                ..Options::without_worker()
            },
        )
        .await;
        let registry = Registry::with_all_builtins(KindsConfig {
            mail: kinds.mail,
            files: app.files().await,
            images: kinds.images,
            webhook: kinds.webhook,
        })
        .expect("registry");
        app.start_worker_with(registry).await;
        app
    }

    /// The files bucket.
    pub(crate) async fn files(&self) -> FileStore {
        FileStore::open(self.broker.jetstream(), &FileSettings::default())
            .await
            .expect("files bucket")
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
        self.applied = Some(projector.applied());
        let db = self.db.conn.clone();
        self.projector = Some(Component::spawn(|stop| async move {
            // Workflow steps are enqueued beside the fold, as in `jobstream projector`.
            jobstream_projector::Conductor::spawn_beside(&projector, db, stop.clone());
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
        let last_seq = self.stream_last().await;
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
}
