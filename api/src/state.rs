//! Shared state handed to every handler, and how an API instance builds it.

use std::sync::Arc;

use jobstream_core::broker::Broker;
use jobstream_core::files::{FileSettings, FileStore};
use jobstream_core::kinds::Catalogue;
use sea_orm::DatabaseConnection;

use crate::auth::Verifier;
use crate::live::{EventHub, HubConfig};
use crate::routes::files::FilesState;
use crate::routes::health::Readiness;

/// What every handler gets: the broker to append events, the projection to read, the token verifier.
///
/// One `Arc`: axum clones the state for every request and every middleware layer, and
/// cloning each part (NATS clients, stream infos, the files store) one by one was about
/// an eighth of the API's CPU per submitted job. Handlers read the parts through `Deref`.
#[derive(Clone)]
pub struct AppState(Arc<AppStateParts>);

/// The parts of [`AppState`].
#[derive(Clone)]
pub struct AppStateParts {
    /// NATS / JetStream.
    pub broker: Broker,
    /// The SQL projection.
    pub db: DatabaseConnection,
    /// Bearer token verification.
    pub verifier: Arc<Verifier>,
    /// User settings and the cache of registered users.
    pub users: Arc<crate::users::Users>,
    /// The job kinds accepted, with their payload schemas.
    pub kinds: Catalogue,
    /// The files bucket (uploads, thumbnails).
    pub files: FilesState,
    /// The live tail of the stream (SSE, `wait`), one per API process.
    pub live: EventHub,
    /// Bounds `/readyz` holds the system to.
    pub readiness: Readiness,
    /// Bounds on each queue's backlog: submissions past them are refused with `429`.
    pub admission: crate::jobs::admission::Admission,
    /// What `GET /metrics` serves; `jobstream dev` adds the projector's gauges to it.
    pub metrics: jobstream_core::metrics::Exporter,
    /// Signs console sessions and their CSRF tokens.
    pub console: crate::ui::ConsoleKey,
}

impl std::ops::Deref for AppState {
    type Target = AppStateParts;

    fn deref(&self) -> &AppStateParts {
        &self.0
    }
}

/// How an API instance is set up, apart from its connections.
pub struct ApiSettings {
    /// Bearer token verification.
    pub verifier: Arc<Verifier>,
    /// Any authenticated caller may create users (else admins only).
    pub open_registration: bool,
    /// The job kinds accepted.
    pub kinds: Catalogue,
    /// The files bucket.
    pub files: FileSettings,
    /// Largest upload, in bytes.
    pub max_upload_bytes: u64,
    /// Bounds of `/readyz`.
    pub readiness: Readiness,
    /// The live tail's buffers.
    pub hub: HubConfig,
    /// Bounds on each queue's backlog (default: none).
    pub admission: crate::jobs::admission::Admission,
    /// Secret that signs console sessions; instances sharing it share sessions (default: random).
    pub console_secret: Option<secrecy::SecretString>,
}

impl AppState {
    /// The state of one API instance on `broker` and `db`: opens the files bucket and
    /// sets up the live tail of the stream (started by its first subscriber).
    pub async fn build(
        broker: Broker,
        db: DatabaseConnection,
        settings: ApiSettings,
    ) -> anyhow::Result<Self> {
        let store = FileStore::open(broker.jetstream(), &settings.files).await?;
        let metrics = jobstream_core::metrics::Exporter::new().with_source(Arc::new(
            jobstream_core::metrics::NatsConnected(broker.client().clone()),
        ));
        Ok(AppState(Arc::new(AppStateParts {
            live: EventHub::with_config(broker.clone(), db.clone(), settings.hub).await?,
            files: FilesState {
                store,
                max_upload_bytes: settings.max_upload_bytes,
            },
            broker,
            db,
            verifier: settings.verifier,
            users: Arc::new(crate::users::Users::new(settings.open_registration)),
            kinds: settings.kinds,
            readiness: settings.readiness,
            admission: settings.admission,
            metrics,
            console: crate::ui::ConsoleKey::new(settings.console_secret.as_ref()),
        })))
    }

    /// The parts, to change while setting an instance up (copied if already shared).
    pub fn edit(&mut self) -> &mut AppStateParts {
        Arc::make_mut(&mut self.0)
    }

    /// The queues and workers service over this state.
    pub fn queues(&self) -> crate::queues::QueueService {
        crate::queues::QueueService::new(self)
    }

    /// The jobs service over this state.
    pub fn jobs(&self) -> crate::jobs::JobService {
        crate::jobs::JobService::new(self)
    }
}
