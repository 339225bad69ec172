//! `jobstream worker`: its tuning and the settings of the built-in kinds.

use std::path::PathBuf;
use std::time::Duration;

use std::sync::LazyLock;

use clap::Args;
use jobstream_core::subject::QueueName;
use jobstream_worker::defaults;
use secrecy::SecretString;

use super::parse::{format_duration, format_size, parse_duration, parse_size};
use super::{DataDirArgs, FilesArgs, MetricsArgs, NatsArgs};

/// Defaults of the worker crate ([`defaults`]) that a flag shows as text: each
/// default is written once, there.
struct DefaultTexts {
    queue: String,
    ack_wait: String,
    backoff_base: String,
    backoff_max: String,
    shutdown_grace: String,
    cancel_grace: String,
    heartbeat: String,
    smtp_timeout: String,
    image_max_file_size: String,
    image_max_alloc: String,
    webhook_max_response: String,
}

static DEFAULTS: LazyLock<DefaultTexts> = LazyLock::new(|| DefaultTexts {
    queue: QueueName::default_queue().to_string(),
    ack_wait: format_duration(defaults::ACK_WAIT),
    backoff_base: format_duration(defaults::BACKOFF_BASE),
    backoff_max: format_duration(defaults::BACKOFF_MAX),
    shutdown_grace: format_duration(defaults::SHUTDOWN_GRACE),
    cancel_grace: format_duration(defaults::CANCEL_GRACE),
    heartbeat: format_duration(defaults::HEARTBEAT),
    smtp_timeout: format_duration(defaults::SMTP_TIMEOUT),
    image_max_file_size: format_size(defaults::IMAGE_MAX_FILE_BYTES),
    image_max_alloc: format_size(defaults::IMAGE_MAX_ALLOC),
    webhook_max_response: format_size(defaults::WEBHOOK_MAX_RESPONSE_BYTES as u64),
});

/// Worker tuning.
#[derive(Debug, Clone, Args)]
pub struct WorkerTuning {
    /// Queues to take jobs from (comma-separated).
    #[arg(
        long,
        env = "WORKER_QUEUES",
        value_delimiter = ',',
        default_value = DEFAULTS.queue.as_str()
    )]
    pub queues: Vec<String>,
    /// Jobs this worker runs at once.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = defaults::CONCURRENCY)]
    pub concurrency: usize,
    /// Time before an unacknowledged job is redelivered (kept alive by heartbeats while running).
    #[arg(long, env = "WORKER_ACK_WAIT", default_value = DEFAULTS.ack_wait.as_str(), value_parser = parse_duration)]
    pub ack_wait: Duration,
    /// `max_ack_pending` of a queue's lane consumers when they are created without a
    /// `--queue-limit` (a cap on delivered, unacknowledged jobs per lane).
    #[arg(long, env = "QUEUE_MAX_IN_FLIGHT", default_value_t = defaults::QUEUE_MAX_IN_FLIGHT)]
    pub queue_max_in_flight: i64,
    /// Delay before the second attempt, doubling each attempt, for jobs whose `queued`
    /// event names no back-off (the API always writes the kind's default).
    #[arg(long, env = "RETRY_BACKOFF_BASE", default_value = DEFAULTS.backoff_base.as_str(), value_parser = parse_duration)]
    pub backoff_base: Duration,
    /// Longest delay between attempts.
    #[arg(long, env = "RETRY_BACKOFF_MAX", default_value = DEFAULTS.backoff_max.as_str(), value_parser = parse_duration)]
    pub backoff_max: Duration,
    /// On shutdown, how long running jobs may finish before they are cancelled and redelivered.
    #[arg(long, env = "WORKER_SHUTDOWN_GRACE", default_value = DEFAULTS.shutdown_grace.as_str(), value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Global limit of jobs running at once in a queue across all workers, as
    /// `queue=N` (comma-separated or repeated), enforced by the NATS server.
    #[arg(long = "queue-limit", env = "QUEUE_LIMITS", value_delimiter = ',', value_parser = parse_queue_limit)]
    pub queue_limits: Vec<(String, i64)>,
    /// How long a cancelled job's handler may take to stop before it is abandoned.
    #[arg(long, env = "WORKER_CANCEL_GRACE", default_value = DEFAULTS.cancel_grace.as_str(), value_parser = parse_duration)]
    pub cancel_grace: Duration,
    /// How often the worker writes its record into the workers registry (`GET /v1/workers`);
    /// it shows as stale after three missed heartbeats.
    #[arg(long, env = "WORKER_HEARTBEAT", default_value = DEFAULTS.heartbeat.as_str(), value_parser = parse_duration)]
    pub heartbeat: Duration,
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
    #[command(flatten)]
    #[allow(missing_docs)]
    pub data: DataDirArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub metrics: MetricsArgs,
}

/// Settings of the built-in kinds that do real work (e-mail, thumbnails, webhooks): worker.
#[derive(Debug, Clone, Args)]
pub struct KindsArgs {
    /// SMTP server: `smtp://user:pass@host:port` (plain), `smtp://…?tls=required` (STARTTLS), `smtps://…` (TLS).
    /// Unset: e-mails are written as .eml files into the mailbox folder.
    #[arg(long, env = "SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<SecretString>,
    /// Deadline of one SMTP exchange.
    #[arg(long, env = "SMTP_TIMEOUT", default_value = DEFAULTS.smtp_timeout.as_str(), value_parser = parse_duration)]
    pub smtp_timeout: Duration,
    /// Mailbox folder used without SMTP (default: `<data dir>/mailbox`).
    #[arg(long, env = "MAILBOX_DIR")]
    pub mailbox_dir: Option<PathBuf>,
    /// Sender of e-mails that name none.
    #[arg(
        long,
        env = "MAIL_FROM",
        default_value = defaults::MAIL_FROM
    )]
    pub mail_from: String,
    /// Networks webhooks may call although they are not public, comma-separated (e.g. 127.0.0.1/32,10.0.0.0/8).
    #[arg(long, env = "WEBHOOK_ALLOW", value_delimiter = ',')]
    pub webhook_allow: Vec<ipnet::IpNet>,
    /// Largest webhook response body kept in the job's result (the rest is cut).
    #[arg(long, env = "WEBHOOK_MAX_RESPONSE", default_value = DEFAULTS.webhook_max_response.as_str(), value_parser = parse_size)]
    pub webhook_max_response: u64,
    /// Largest source image a thumbnail job reads.
    #[arg(long, env = "IMAGE_MAX_FILE_SIZE", default_value = DEFAULTS.image_max_file_size.as_str(), value_parser = parse_size)]
    pub image_max_file_size: u64,
    /// Largest width or height of a source image, in pixels (decompression bombs are refused).
    #[arg(long, env = "IMAGE_MAX_SIDE", default_value_t = defaults::IMAGE_MAX_SIDE)]
    pub image_max_side: u32,
    /// Most memory the image decoder may allocate for one image.
    #[arg(long, env = "IMAGE_MAX_ALLOC", default_value = DEFAULTS.image_max_alloc.as_str(), value_parser = parse_size)]
    pub image_max_alloc: u64,
}
