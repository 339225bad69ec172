//! Argument groups several commands share: NATS and the stream, the database, the data
//! folder, where the API listens and what `/readyz` holds it to. Each default is written once.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use clap::Args;

use super::parse::{format_duration, parse_duration};

/// NATS server when none is given.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Folder of local state (SQLite, the dev secret and JetStream store, the mailbox).
pub const DEFAULT_DATA_DIR: &str = "data";
/// [`jobstream_core::replay::DEFAULT_JOB_TTL`] as flag text.
pub static DEFAULT_JOB_TTL: LazyLock<String> =
    LazyLock::new(|| format_duration(jobstream_core::replay::DEFAULT_JOB_TTL));
/// Port of the API.
pub const DEFAULT_API_PORT: u16 = 8080;

/// Where NATS is and how the stream is set up.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL, or the servers of a cluster comma-separated (the client reconnects
    /// across them) [default: nats://127.0.0.1:4222; `dev` starts its own nats-server].
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// Name of the JetStream stream of job events.
    #[arg(long, env = "JOBSTREAM_STREAM", default_value = "JOBS")]
    pub stream: String,
    /// How long events stay in the stream (e.g. 7d, 12h).
    #[arg(long, env = "EVENT_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub event_retention: Duration,
    /// Stream replicas (1 in development, 3 in a production cluster).
    #[arg(long, env = "STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// The server's monitoring endpoint, where its JetStream sync setting is checked at
    /// start (default: the NATS host on port 8222).
    #[arg(long, env = "NATS_MONITOR_URL")]
    pub nats_monitor_url: Option<String>,
    /// Refuse to start unless the server is seen to fsync every write (`sync_interval: always`).
    #[arg(long, env = "REQUIRE_FSYNC")]
    pub require_fsync: bool,
}

impl NatsArgs {
    /// The NATS URL given, or the default.
    pub fn url(&self) -> String {
        self.nats_url
            .clone()
            .unwrap_or_else(|| DEFAULT_NATS_URL.to_owned())
    }
}

/// Where the SQL projection lives.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// `sqlite://path?mode=rwc` or `postgres://user@host/db` [default: SQLite
    /// `jobstream.db` in the data folder, `sqlite://data/jobstream.db?mode=rwc`].
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

impl DbArgs {
    /// The database URL given, or SQLite in the default data folder.
    pub fn url(&self) -> String {
        self.url_in(Path::new(DEFAULT_DATA_DIR))
    }

    /// The database URL given, or SQLite in `data_dir`.
    pub fn url_in(&self, data_dir: &Path) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("jobstream.db").display()
            )
        })
    }
}

/// The folder of local state.
#[derive(Debug, Clone, Args)]
pub struct DataDirArgs {
    /// Where SQLite, the JetStream store of `dev`, the dev secret and the mailbox live.
    #[arg(long, env = "DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

/// Where the API listens.
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Address to listen on.
    #[arg(long, env = "API_HOST", default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port to listen on (0: any free port).
    #[arg(long, env = "API_PORT", default_value_t = DEFAULT_API_PORT)]
    pub port: u16,
}

impl ListenArgs {
    /// The socket address.
    pub fn addr(&self) -> std::net::SocketAddr {
        (self.host, self.port).into()
    }
}

/// Prometheus metrics of a process.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Record metrics (`on`) or not (`off`: every metric call is a no-op and `/metrics` is empty).
    #[arg(long = "metrics", env = "METRICS", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set, value_name = "on|off")]
    pub enabled: bool,
    /// Where a worker or projector serves `GET /metrics`, e.g. `127.0.0.1:9464` (unset:
    /// nowhere; the API always serves it on its own port).
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Parses `on` or `off`.
pub fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.trim() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: use `on` or `off`")),
    }
}

/// What `/readyz` holds the system to.
#[derive(Debug, Clone, Args)]
pub struct ReadinessArgs {
    /// Stream events the projection may trail the stream by before `/readyz` says 503.
    #[arg(long, env = "READY_MAX_PROJECTOR_LAG", default_value_t = 100_000)]
    pub ready_max_projector_lag: u64,
    /// How long the projection may trail the stream with its checkpoint not moving before `/readyz` says 503.
    #[arg(long, env = "READY_PROJECTOR_STALL", default_value = "30s", value_parser = parse_duration)]
    pub ready_projector_stall: Duration,
    /// Admission control: runnable jobs (waiting plus running) a queue may hold before
    /// submissions are refused with `429` + `Retry-After` (unset: no bound).
    #[arg(long, env = "MAX_QUEUE_DEPTH")]
    pub max_queue_depth: Option<u64>,
    /// Admission control: how long a queue's oldest waiting job may have waited before
    /// submissions are refused with `429` + `Retry-After` (unset: no bound).
    #[arg(long, env = "MAX_QUEUE_AGE", value_parser = parse_duration)]
    pub max_queue_age: Option<Duration>,
}

impl ReadinessArgs {
    /// The API's readiness bounds.
    pub fn readiness(&self) -> jobstream_api::routes::health::Readiness {
        jobstream_api::routes::health::Readiness {
            max_projector_lag: self.ready_max_projector_lag,
            projector_stall: self.ready_projector_stall,
            ..Default::default()
        }
    }

    /// The API's admission control (backlog bounds per queue).
    pub fn admission(&self) -> jobstream_api::jobs::admission::Admission {
        jobstream_api::jobs::admission::Admission::new(
            jobstream_api::jobs::admission::AdmissionConfig {
                max_queue_depth: self.max_queue_depth,
                max_queue_age: self.max_queue_age,
                ..Default::default()
            },
        )
    }
}
