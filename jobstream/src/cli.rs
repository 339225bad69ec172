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
            Command::Token(_) | Command::Bench(_) | Command::Seed(_) => "warn",
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
    /// Measure jobstream end to end against the raw JetStream loop (starts its own system by default).
    Bench(BenchArgs),
    /// Fill a development system with demo users and a realistic mix of jobs (through the API).
    Seed(SeedArgs),
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
    /// The server's monitoring endpoint, where its JetStream sync setting is checked at
    /// start (default: the NATS host on port 8222).
    #[arg(long, env = "NATS_MONITOR_URL")]
    pub nats_monitor_url: Option<String>,
    /// Refuse to start unless the server is seen to fsync every write (`sync_interval: always`).
    #[arg(long, env = "REQUIRE_FSYNC")]
    pub require_fsync: bool,
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
    /// File holding the HS256 secret (`jobstream dev` writes data/jwt-secret, the default
    /// when no public key is configured; with public keys, HS256 is on only when this or
    /// JWT_SECRET is set).
    #[arg(long, env = "JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "JWT_ISSUER", default_value = "jobstream")]
    pub jwt_issuer: String,
    /// Required `aud` claim.
    #[arg(long, env = "JWT_AUDIENCE", default_value = "jobstream")]
    pub jwt_audience: String,
    /// PEM file with the issuer's public key (RSA → RS256, EC P-256 → ES256, Ed25519 → EdDSA).
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Key id of the PEM key (tokens carrying a `kid` must name it); none by default.
    #[arg(long, env = "JWT_PUBLIC_KEY_KID")]
    pub jwt_public_key_kid: Option<String>,
    /// JWKS file with the issuer's public keys (chosen by the token's `kid`).
    #[arg(long, env = "JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// Claim holding the role: a string or an array of strings; `admin` makes an admin.
    #[arg(long, env = "JWT_ROLE_CLAIM", default_value = "role")]
    pub jwt_role_claim: String,
    /// Clock-skew allowance for `exp` and `nbf`.
    #[arg(long, env = "JWT_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,
}

impl AuthArgs {
    /// Development settings: HS256 with the secret in `secret_file`, default issuer and audience.
    pub fn dev(secret_file: PathBuf) -> Self {
        AuthArgs {
            jwt_secret: None,
            jwt_secret_file: Some(secret_file),
            jwt_issuer: "jobstream".into(),
            jwt_audience: "jobstream".into(),
            jwt_public_key_file: None,
            jwt_public_key_kid: None,
            jwt_jwks_file: None,
            jwt_role_claim: jobstream_api::auth::DEFAULT_ROLE_CLAIM.into(),
            jwt_leeway: Duration::from_secs(jobstream_api::auth::DEFAULT_LEEWAY_SECS),
        }
    }
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
    /// Let any authenticated caller create users with `POST /v1/users` (else admins only).
    #[arg(long, env = "OPEN_REGISTRATION")]
    pub open_registration: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub files: FilesArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub catalogue: CatalogueArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub readiness: ReadinessArgs,
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
    /// `max_ack_pending` of a queue's lane consumers when they are created without a
    /// `--queue-limit` (a cap on delivered, unacknowledged jobs per lane).
    #[arg(long, env = "QUEUE_MAX_IN_FLIGHT", default_value_t = 10_000)]
    pub queue_max_in_flight: i64,
    /// Delay before the second attempt, doubling each attempt, for jobs whose `queued`
    /// event names no back-off (the API always writes the kind's default).
    #[arg(long, env = "RETRY_BACKOFF_BASE", default_value = "1s", value_parser = parse_duration)]
    pub backoff_base: Duration,
    /// Longest delay between attempts.
    #[arg(long, env = "RETRY_BACKOFF_MAX", default_value = "5m", value_parser = parse_duration)]
    pub backoff_max: Duration,
    /// On shutdown, how long running jobs may finish before they are cancelled and redelivered.
    #[arg(long, env = "WORKER_SHUTDOWN_GRACE", default_value = "25s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Global limit of jobs running at once in a queue across all workers, as
    /// `queue=N` (comma-separated or repeated), enforced by the NATS server.
    #[arg(long = "queue-limit", env = "QUEUE_LIMITS", value_delimiter = ',', value_parser = parse_queue_limit)]
    pub queue_limits: Vec<(String, i64)>,
    /// How long a cancelled job's handler may take to stop before it is abandoned.
    #[arg(long, env = "WORKER_CANCEL_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub cancel_grace: Duration,
}

/// Parses `queue=N` (N ≥ 1).
pub fn parse_queue_limit(s: &str) -> Result<(String, i64), String> {
    let (queue, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected queue=N, e.g. mail=5"))?;
    let n: i64 = n
        .trim()
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("{s:?}: the limit must be an integer of at least 1"))?;
    Ok((queue.trim().to_owned(), n))
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
    #[command(flatten)]
    #[allow(missing_docs)]
    pub files: FilesArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub kinds: KindsArgs,
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
    /// Config file of the child nats-server, instead of the built-in one (the repository's
    /// `nats.conf`, written into the data dir at start). Must exist.
    #[arg(long, env = "NATS_CONFIG")]
    pub nats_config: Option<PathBuf>,
    /// Database (default: SQLite in the data dir).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Let any authenticated caller create users with `POST /v1/users` (else admins only).
    #[arg(long, env = "OPEN_REGISTRATION")]
    pub open_registration: bool,
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
///
/// By default self-contained: it starts its own nats-server (the built-in `nats.conf`)
/// and jobstream's api, worker and projector as separate processes on a temporary data
/// dir, runs the raw JetStream loop and then the full system against that same server,
/// and stops everything at the end.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Base URL of an already running API to measure instead of starting one (the raw
    /// loop then needs `--nats-url`, and per-process figures need `--pid`).
    #[arg(long)]
    pub url: Option<String>,
    /// With `--url`: the NATS server of that system, for the raw loop and stream figures.
    #[arg(long)]
    pub nats_url: Option<String>,
    /// With `--url`: processes to measure from /proc, as `role=PID` (roles: api, worker,
    /// projector, nats-server; comma-separated or repeated).
    #[arg(long = "pid", value_delimiter = ',', value_parser = parse_bench_pid)]
    pub pids: Vec<(String, u32)>,
    /// Bearer token for `--url` (default: minted from the HS256 secret).
    #[arg(long, env = "JOBSTREAM_TOKEN", hide_env_values = true)]
    pub token: Option<SecretString>,
    /// Jobs to run (with `--rate`, `--duration` may give the count instead).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Closed loop: requests (and raw-loop publishes) in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Open loop: submit this many jobs per second whatever the system does (latencies
    /// then include queueing, measured from each job's scheduled send time).
    #[arg(long, conflicts_with = "batch")]
    pub rate: Option<u32>,
    /// Open loop: how long to submit at `--rate` (instead of `--jobs`).
    #[arg(long, requires = "rate", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Batch submit: jobs per `POST /v1/jobs/batch` request (1..=1000), `--concurrency` requests at once.
    #[arg(long)]
    pub batch: Option<usize>,
    /// nats-server sync for both runs: `always` (fsync before every PubAck, as shipped) or
    /// `default` (the server's periodic sync). Self-contained mode only.
    #[arg(long, default_value = "always", value_parser = parse_durability)]
    pub durability: jobstream_core::nats_server::Durability,
    /// Database of the started system (default: SQLite in the temporary data dir); with
    /// `--url`, the system's database, read for latencies instead of the API.
    #[arg(long)]
    pub database_url: Option<String>,
    /// nats-server binary (else .tools/nats-server/bin/nats-server, else PATH).
    #[arg(long, env = "NATS_SERVER_BIN")]
    pub nats_server_bin: Option<String>,
    /// Keep the temporary data dir (logs, store, database) instead of deleting it.
    #[arg(long)]
    pub keep_data: bool,
    /// Give up waiting for completion after this long.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub auth: AuthArgs,
}

/// Parses `role=PID` for `jobstream bench --pid`.
pub fn parse_bench_pid(s: &str) -> Result<(String, u32), String> {
    const ROLES: [&str; 4] = ["api", "worker", "projector", "nats-server"];
    let (role, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected role=PID, e.g. api=1234"))?;
    let role = role.trim();
    if !ROLES.contains(&role) {
        return Err(format!(
            "{s:?}: the role must be one of {}",
            ROLES.join(", ")
        ));
    }
    let pid = pid
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: the PID must be a number"))?;
    Ok((role.to_owned(), pid))
}

/// Parses `always` or `default` (nats-server sync) for `jobstream bench --durability`.
pub fn parse_durability(s: &str) -> Result<jobstream_core::nats_server::Durability, String> {
    use jobstream_core::nats_server::Durability;
    match s.trim() {
        "always" => Ok(Durability::Always),
        "default" => Ok(Durability::Default),
        _ => Err(format!("{s:?}: use `always` or `default`")),
    }
}

/// `jobstream seed`.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// Base URL of a running API (`jobstream dev`).
    #[arg(long, env = "JOBSTREAM_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Demo users to create (each gets a registration e-mail job).
    #[arg(long, default_value_t = 5)]
    pub users: usize,
    /// Jobs to submit per demo user (a mix that succeeds, fails, runs and waits).
    #[arg(long, default_value_t = 12)]
    pub jobs_per_user: usize,
    /// Queue with no worker, where the "waiting" jobs stay queued.
    #[arg(long, default_value = "backlog")]
    pub idle_queue: String,
    /// Stop waiting for jobs to settle after this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
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

/// Settings of the built-in kinds that do real work (e-mail, thumbnails, webhooks): worker.
#[derive(Debug, Clone, Args)]
pub struct KindsArgs {
    /// SMTP server: `smtp://user:pass@host:port` (plain), `smtp://…?tls=required` (STARTTLS), `smtps://…` (TLS).
    /// Unset: e-mails are written as .eml files into the mailbox folder.
    #[arg(long, env = "SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<SecretString>,
    /// Deadline of one SMTP exchange.
    #[arg(long, env = "SMTP_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub smtp_timeout: Duration,
    /// Mailbox folder used without SMTP (default: `<data dir>/mailbox`).
    #[arg(long, env = "MAILBOX_DIR")]
    pub mailbox_dir: Option<PathBuf>,
    /// Sender of e-mails that name none.
    #[arg(
        long,
        env = "MAIL_FROM",
        default_value = "jobstream <noreply@localhost>"
    )]
    pub mail_from: String,
    /// Networks webhooks may call although they are not public, comma-separated (e.g. 127.0.0.1/32,10.0.0.0/8).
    #[arg(long, env = "WEBHOOK_ALLOW", value_delimiter = ',')]
    pub webhook_allow: Vec<ipnet::IpNet>,
    /// Largest webhook response body kept in the job's result (the rest is cut).
    #[arg(long, env = "WEBHOOK_MAX_RESPONSE", default_value = "64KiB", value_parser = parse_size)]
    pub webhook_max_response: u64,
    /// Largest source image a thumbnail job reads.
    #[arg(long, env = "IMAGE_MAX_FILE_SIZE", default_value = "32MiB", value_parser = parse_size)]
    pub image_max_file_size: u64,
    /// Largest width or height of a source image, in pixels (decompression bombs are refused).
    #[arg(long, env = "IMAGE_MAX_SIDE", default_value_t = 12_000)]
    pub image_max_side: u32,
    /// Most memory the image decoder may allocate for one image.
    #[arg(long, env = "IMAGE_MAX_ALLOC", default_value = "512MiB", value_parser = parse_size)]
    pub image_max_alloc: u64,
}

/// Parses a size: `512`, `64KiB`, `10MiB`, `1GiB` (also `KB`/`MB`/`GB`, as powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 512, 64KiB or 10MiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))
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
    fn sizes_parse() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("10MiB"), Ok(10 * 1024 * 1024));
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn queue_limits_parse() {
        assert_eq!(parse_queue_limit("mail=5"), Ok(("mail".into(), 5)));
        assert!(parse_queue_limit("mail").is_err());
        assert!(parse_queue_limit("mail=0").is_err());
        assert!(parse_queue_limit("mail=x").is_err());
    }

    #[test]
    fn bench_flags_parse() {
        use jobstream_core::nats_server::Durability;
        assert_eq!(parse_bench_pid("api=12"), Ok(("api".into(), 12)));
        assert_eq!(
            parse_bench_pid("nats-server=7"),
            Ok(("nats-server".into(), 7))
        );
        assert!(parse_bench_pid("db=1").is_err());
        assert!(parse_bench_pid("api=x").is_err());
        assert_eq!(parse_durability("default"), Ok(Durability::Default));
        assert!(parse_durability("sometimes").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
