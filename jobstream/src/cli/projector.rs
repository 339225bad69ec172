//! `jobstream projector`, and the commands that rebuild or check its tables: `migrate`,
//! `replay`, `verify`.

use std::time::Duration;

use std::sync::LazyLock;

use clap::Args;
use jobstream_projector::ProjectorConfig;
use jobstream_projector::replay::ReplayOptions;

use super::parse::{format_duration, parse_duration};
use super::{DEFAULT_JOB_TTL, DbArgs, MetricsArgs, NatsArgs};

/// The projector's sweep interval as flag text (the default is the projector crate's).
static SWEEP_INTERVAL: LazyLock<String> =
    LazyLock::new(|| format_duration(ProjectorConfig::default().sweep_interval));
/// The projector's linger as flag text (the default is the projector crate's).
static LINGER: LazyLock<String> =
    LazyLock::new(|| format_duration(ProjectorConfig::default().linger));

/// Projector tuning.
#[derive(Debug, Clone, Args)]
pub struct ProjectorTuning {
    /// Finished jobs are deleted from the tables this long after they finish (the seeds' MAX_JOB_TTL).
    #[arg(long, env = "JOB_TTL", default_value = DEFAULT_JOB_TTL.as_str(), value_parser = parse_duration)]
    pub job_ttl: Duration,
    /// How often the TTL sweep runs.
    #[arg(long, env = "SWEEP_INTERVAL", default_value = SWEEP_INTERVAL.as_str(), value_parser = parse_duration)]
    pub sweep_interval: Duration,
    /// Most events folded per transaction.
    #[arg(long, env = "PROJECTOR_BATCH", default_value_t = ProjectorConfig::default().batch_size)]
    pub batch_size: usize,
    /// How long a small delivery waits for more events before it is folded: fewer, larger
    /// transactions for a projection that lags this much more.
    #[arg(long, env = "PROJECTOR_LINGER", default_value = LINGER.as_str(), value_parser = parse_duration)]
    pub linger: Duration,
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
    #[command(flatten)]
    #[allow(missing_docs)]
    pub metrics: MetricsArgs,
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
    #[arg(long, default_value_t = ReplayOptions::default().batch_size)]
    pub batch_size: usize,
    /// Finished jobs older than this are left out, as the projector's sweep would (the seeds' MAX_JOB_TTL).
    #[arg(long, env = "JOB_TTL", default_value = DEFAULT_JOB_TTL.as_str(), value_parser = parse_duration)]
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
    #[arg(long, env = "JOB_TTL", default_value = DEFAULT_JOB_TTL.as_str(), value_parser = parse_duration)]
    pub job_ttl: Duration,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub nats: NatsArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
}
