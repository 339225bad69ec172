//! `jobstream api` and the API's own settings.

use std::path::PathBuf;

use clap::Args;

use super::parse::parse_size;
use super::{AuthArgs, DbArgs, ListenArgs, MetricsArgs, NatsArgs, ReadinessArgs};

/// `jobstream api`.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub listen: ListenArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub nats: NatsArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub auth: AuthArgs,
    /// Let any authenticated caller create users with `POST /v1/users` (else admins only).
    #[arg(long, env = "OPEN_REGISTRATION")]
    pub open_registration: bool,
    /// Secret that signs console sessions (`/ui`); API instances sharing it share
    /// sessions. Unset: a random key, so sessions end when the process stops.
    #[arg(long, env = "CONSOLE_SECRET", hide_env_values = true)]
    pub console_secret: Option<secrecy::SecretString>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub files: FilesArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub catalogue: CatalogueArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub readiness: ReadinessArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub metrics: MetricsArgs,
}

/// The files bucket (uploads and thumbnails): api and worker.
#[derive(Debug, Clone, Args)]
pub struct FilesArgs {
    /// JetStream object store bucket of uploaded files and thumbnails.
    #[arg(long, env = "FILES_BUCKET", default_value = "FILES")]
    pub files_bucket: String,
    /// Largest upload accepted by `POST /v1/files` (e.g. 10MiB, 500KiB, or bytes).
    #[arg(long, env = "MAX_UPLOAD_SIZE", default_value = "10MiB", value_parser = parse_size)]
    pub max_upload_size: u64,
    /// Largest total size of the files bucket (-1: unlimited).
    #[arg(long, env = "FILES_BUCKET_MAX_BYTES", default_value_t = -1, allow_hyphen_values = true)]
    pub files_bucket_max_bytes: i64,
}

/// Custom job kinds the API accepts (for workers in other languages).
#[derive(Debug, Clone, Args)]
pub struct CatalogueArgs {
    /// JSON file with custom kinds: `[{"name", "description", "queue", "max_attempts", "timeout_ms", "payload_schema"}]`.
    #[arg(long, env = "KINDS_FILE")]
    pub kinds_file: Option<PathBuf>,
}
