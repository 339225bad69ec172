//! `jobstream worker`: its tuning and the settings of the built-in kinds.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

use super::parse::{parse_duration, parse_size};
use super::{DataDirArgs, FilesArgs, NatsArgs};

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
    /// How often the worker writes its record into the workers registry (`GET /v1/workers`);
    /// it shows as stale after three missed heartbeats.
    #[arg(long, env = "WORKER_HEARTBEAT", default_value = "5s", value_parser = parse_duration)]
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
