//! Every default of the worker and of its kinds, written once: the `Default` impls
//! and the `jobstream worker` flags both read them.

use std::time::Duration;

/// Jobs one worker process runs at once ([`crate::WorkerConfig::concurrency`]).
pub const CONCURRENCY: usize = 32;
/// Time the server waits for an ack or progress before redelivering.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// `max_ack_pending` of a lane consumer created for a queue without a limit.
pub const QUEUE_MAX_IN_FLIGHT: i64 = 10_000;
/// Delay before the second attempt (doubling each attempt).
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest delay between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// On shutdown, how long running jobs may finish before they are cancelled.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
/// How long a cancelled job's handler may take to return.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// How often the worker writes its record into the workers registry.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Sender of e-mails that name none.
pub const MAIL_FROM: &str = "jobstream <noreply@localhost>";
/// Deadline of one SMTP exchange.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest source image a thumbnail job reads, in bytes.
pub const IMAGE_MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;
/// Largest width or height of a source image, in pixels.
pub const IMAGE_MAX_SIDE: u32 = 12_000;
/// Most memory the image decoder may allocate for one image, in bytes.
pub const IMAGE_MAX_ALLOC: u64 = 512 * 1024 * 1024;

/// Largest webhook response body kept in the result, in bytes.
pub const WEBHOOK_MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Webhook timeout when the payload names none.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);
