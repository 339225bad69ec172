//! Command-line and environment configuration. Every flag has an environment
//! variable; `.env.sample` lists them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use jobstream_core::telemetry::LogFormat;
use secrecy::SecretString;

/// Event-sourced background jobs on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "jobstream", version, about)]
pub struct Cli {
    /// Log lines as JSON objects (for log shippers) instead of text.
    #[arg(long, env = "LOG_JSON", global = true)]
    pub log_json: bool,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Format of log lines.
    pub fn log_format(&self) -> LogFormat {
        if self.log_json {
            LogFormat::Json
        } else {
            LogFormat::Pretty
        }
    }

    /// Log filter when `RUST_LOG` is unset (quieter for client commands).
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Token(_) | Command::Bench(_) => "warn",
            Command::Replay(_) | Command::Verify(_) | Command::BenchSse(_) => "warn",
            _ => "info,sqlx=warn,async_nats=warn",
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process: nats-server child, api, worker and projector on SQLite.
    Dev(DevArgs),
    /// The HTTP API.
    Api(ApiArgs),
    /// A worker: runs jobs of the given queues.
    Worker(WorkerArgs),
    /// The projector: folds the event stream into SQL.
    Projector(ProjectorArgs),
    /// Apply database migrations (`up`, `down`, `status`, `fresh`).
    Migrate(MigrateArgs),
    /// Print a development token signed with the HS256 secret.
    Token(TokenArgs),
    /// Submit N echo jobs over HTTP and measure throughput and latency.
    Bench(BenchArgs),
    /// Rebuild the projection from the stream (into the live database, or --into another).
    Replay(ReplayArgs),
    /// Fold the stream afresh in memory and compare it with the projection.
    Verify(VerifyArgs),
    /// Open N concurrent SSE connections and measure memory per connection and events/s.
    BenchSse(BenchSseArgs),
}

/// Where NATS is and how the stream is set up.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Name of the JetStream stream of job events.
    #[arg(long, env = "JOBSTREAM_STREAM", default_value = "JOBS")]
    pub stream: String,
    /// How long events stay in the stream (e.g. 7d, 12h).
    #[arg(long, env = "EVENT_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub event_retention: Duration,
    /// Stream replicas (1 in development, 3 in a production cluster).
    #[arg(long, env = "STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
}

/// Where the SQL projection lives.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// `sqlite://path?mode=rwc` (embedded default) or `postgres://user@host/db`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://data/jobstream.db?mode=rwc"
    )]
    pub database_url: String,
}

/// Token verification.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// HS256 secret (development). Prefer JWT_SECRET_FILE.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    /// File holding the HS256 secret (`jobstream dev` writes data/jwt-secret).
    #[arg(long, env = "JWT_SECRET_FILE", default_value = "data/jwt-secret")]
    pub jwt_secret_file: PathBuf,
    /// Required `iss` claim.
    #[arg(long, env = "JWT_ISSUER", default_value = "jobstream")]
    pub jwt_issuer: String,
    /// Required `aud` claim.
    #[arg(long, env = "JWT_AUDIENCE", default_value = "jobstream")]
    pub jwt_audience: String,
}

/// `jobstream api`.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Address to listen on.
    #[arg(long, env = "API_HOST", default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port to listen on.
    #[arg(long, env = "API_PORT", default_value_t = 8080)]
    pub port: u16,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub nats: NatsArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub auth: AuthArgs,
}

/// Worker tuning.
#[derive(Debug, Clone, Args)]
pub struct WorkerTuning {
    /// Queues to take jobs from (comma-separated).
    #[arg(
        long,
        env = "WORKER_QUEUES",
        value_delimiter = ',',
        default_value = "default"
    )]
    pub queues: Vec<String>,
    /// Jobs this worker runs at once.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,
    /// Time before an unacknowledged job is redelivered (kept alive by heartbeats while running).
    #[arg(long, env = "WORKER_ACK_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub ack_wait: Duration,
    /// Jobs running at once per queue across all workers.
    #[arg(long, env = "QUEUE_MAX_IN_FLIGHT", default_value_t = 10_000)]
    pub queue_max_in_flight: i64,
    /// Delay before the second attempt; doubles each attempt.
    #[arg(long, env = "RETRY_BACKOFF_BASE", default_value = "1s", value_parser = parse_duration)]
    pub backoff_base: Duration,
    /// Longest delay between attempts.
    #[arg(long, env = "RETRY_BACKOFF_MAX", default_value = "5m", value_parser = parse_duration)]
    pub backoff_max: Duration,
    /// On shutdown, how long running jobs may finish before they are cancelled and redelivered.
    #[arg(long, env = "WORKER_SHUTDOWN_GRACE", default_value = "25s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// `jobstream worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub nats: NatsArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub tuning: WorkerTuning,
}

/// Projector tuning.
#[derive(Debug, Clone, Args)]
pub struct ProjectorTuning {
    /// Finished jobs are deleted from the tables this long after they finish (the seeds' MAX_JOB_TTL).
    #[arg(long, env = "JOB_TTL", default_value = "24h", value_parser = parse_duration)]
    pub job_ttl: Duration,
    /// How often the TTL sweep runs.
    #[arg(long, env = "SWEEP_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub sweep_interval: Duration,
    /// Most events folded per transaction.
    #[arg(long, env = "PROJECTOR_BATCH", default_value_t = 500)]
    pub batch_size: usize,
}

/// `jobstream projector`.
#[derive(Debug, Clone, Args)]
pub struct ProjectorArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub nats: NatsArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub tuning: ProjectorTuning,
}

/// `jobstream migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// `up` (default), `down`, `status` or `fresh`.
    #[arg(default_value = "up")]
    pub action: MigrateAction,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
}

/// What `migrate` does.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MigrateAction {
    /// Apply all pending migrations (like `alembic upgrade head`).
    Up,
    /// Roll back the last migration (like `alembic downgrade -1`).
    Down,
    /// List applied and pending migrations.
    Status,
    /// Drop everything and apply all migrations.
    Fresh,
}

/// `jobstream dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// API port.
    #[arg(long, env = "API_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Where SQLite, the JetStream store and the dev secret live.
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Use this NATS server instead of starting a child nats-server.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// nats-server binary (else .tools/nats-server/bin/nats-server, else PATH).
    #[arg(long, env = "NATS_SERVER_BIN")]
    pub nats_server_bin: Option<String>,
    /// Config file of the child nats-server.
    #[arg(long, env = "NATS_CONFIG", default_value = "nats.conf")]
    pub nats_config: PathBuf,
    /// Database (default: SQLite in the data dir).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub worker: WorkerTuning,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub projector: ProjectorTuning,
}

/// `jobstream token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user id (`sub` claim).
    #[arg(long)]
    pub sub: String,
    /// Give the token the admin role.
    #[arg(long)]
    pub admin: bool,
    /// Validity (e.g. 1h, 30d).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub ttl: Duration,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub auth: AuthArgs,
}

/// `jobstream bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Base URL of a running API.
    #[arg(long, env = "JOBSTREAM_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token (an admin token lets the bench read the jobs back; default: minted from the dev secret).
    #[arg(long, env = "JOBSTREAM_TOKEN", hide_env_values = true)]
    pub token: Option<SecretString>,
    /// Jobs to submit.
    #[arg(long, default_value_t = 1000)]
    pub jobs: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Give up waiting for completion after this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub auth: AuthArgs,
}

/// `jobstream replay`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Start at this stream sequence (events before it are ignored).
    #[arg(long, conflicts_with = "since")]
    pub from_seq: Option<u64>,
    /// Start at the first event stored at or after this time (RFC 3339, e.g. 2026-11-23T08:00:00Z).
    #[arg(long)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Build into this database instead of swapping into the live one (resumes from its checkpoint).
    #[arg(long, value_name = "DATABASE_URL", hide_env_values = true)]
    pub into: Option<String>,
    /// Discard an interrupted replay instead of resuming it.
    #[arg(long)]
    pub fresh: bool,
    /// Events per transaction.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Finished jobs older than this are left out, as the projector's sweep would (the seeds' MAX_JOB_TTL).
    #[arg(long, env = "JOB_TTL", default_value = "24h", value_parser = parse_duration)]
    pub job_ttl: Duration,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub nats: NatsArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
}

/// `jobstream verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Finished jobs older than this may rightly be missing from the projection (swept).
    #[arg(long, env = "JOB_TTL", default_value = "24h", value_parser = parse_duration)]
    pub job_ttl: Duration,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub nats: NatsArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
}

/// `jobstream bench-sse`.
#[derive(Debug, Clone, Args)]
pub struct BenchSseArgs {
    /// Base URL of a running API.
    #[arg(long, env = "JOBSTREAM_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Concurrent SSE connections to hold open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Echo jobs to run while the connections are open (each yields 3 events).
    #[arg(long, default_value_t = 200)]
    pub jobs: usize,
    /// Connections opened at once while ramping up.
    #[arg(long, default_value_t = 64)]
    pub ramp: usize,
    /// Process id of the API (e.g. `jobstream dev`) whose RSS is measured from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Give up after this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub auth: AuthArgs,
}

/// Parses `500ms`, `30s`, `10m`, `12h`, `7d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 30s, 10m, 12h or 7d"))?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
            ));
        }
    };
    Ok(Duration::from_millis(n.saturating_mul(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
