//! `jobstream dev`: the groups of `api`, `worker` and `projector`, flattened, plus the
//! child nats-server.

use std::path::PathBuf;

use clap::Args;

use super::{
    CatalogueArgs, DataDirArgs, DbArgs, FilesArgs, KindsArgs, ListenArgs, MetricsArgs, NatsArgs,
    ProjectorTuning, ReadinessArgs, WorkerTuning,
};

/// `jobstream dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub listen: ListenArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub data: DataDirArgs,
    /// NATS and the stream; without `NATS_URL`, a child nats-server is started.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// nats-server binary (else .tools/nats-server/bin/nats-server, else PATH).
    #[arg(long, env = "NATS_SERVER_BIN")]
    pub nats_server_bin: Option<String>,
    /// Config file of the child nats-server, instead of the built-in one (the repository's
    /// `nats.conf`, written into the data dir at start). Must exist.
    #[arg(long, env = "NATS_CONFIG")]
    pub nats_config: Option<PathBuf>,
    /// Start this many nats-server children as one cluster on loopback (3: the stream gets
    /// 3 replicas) instead of a single one. Ignored when `NATS_URL` is given.
    #[arg(long, env = "NATS_CLUSTER", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_cluster: Option<u8>,
    /// The database; SQLite in the data dir by default.
    #[command(flatten)]
    pub db: DbArgs,
    /// Let any authenticated caller create users with `POST /v1/users` (else admins only).
    #[arg(long, env = "OPEN_REGISTRATION")]
    pub open_registration: bool,
    /// Secret that signs console sessions (`/ui`). Unset: a random key, so sessions end
    /// when the process stops.
    #[arg(long, env = "CONSOLE_SECRET", hide_env_values = true)]
    pub console_secret: Option<secrecy::SecretString>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub readiness: ReadinessArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub worker: WorkerTuning,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub projector: ProjectorTuning,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub files: FilesArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub kinds: KindsArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub catalogue: CatalogueArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub metrics: MetricsArgs,
}
