//! Shared state handed to every handler.

use std::sync::Arc;

use jobstream_core::broker::Broker;
use sea_orm::DatabaseConnection;

use crate::auth::Verifier;

/// What every handler gets: the broker to append events, the projection to read, the token verifier.
#[derive(Clone)]
pub struct AppState {
    /// NATS / JetStream.
    pub broker: Broker,
    /// The SQL projection.
    pub db: DatabaseConnection,
    /// Bearer token verification.
    pub verifier: Arc<Verifier>,
    /// The live tail of the stream (SSE, `wait`), one per API process.
    pub live: crate::live::EventHub,
    /// The admin replay this process runs.
    pub replay: crate::routes::admin_replay::ReplayControl,
}
