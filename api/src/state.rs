//! Shared state handed to every handler.

use std::sync::Arc;

use jobstream_core::broker::Broker;
use jobstream_core::kinds::Catalogue;
use sea_orm::DatabaseConnection;

use crate::auth::Verifier;
use crate::routes::files::FilesState;

/// What every handler gets: the broker to append events, the projection to read, the token verifier.
#[derive(Clone)]
pub struct AppState {
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
    pub live: crate::live::EventHub,
    /// The admin replay this process runs.
    pub replay: crate::routes::admin_replay::ReplayControl,
    /// Bounds `/readyz` holds the system to.
    pub readiness: crate::routes::health::Readiness,
    /// Bounds on each queue's backlog: submissions past them are refused with `429`.
    pub admission: crate::jobs::admission::Admission,
}

impl AppState {
    /// The jobs service over this state.
    pub fn jobs(&self) -> crate::jobs::JobService {
        crate::jobs::JobService::new(self)
    }
}
