//! Client tools against a running API: `bench`, `seed`, `bench-sse`.

use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

use super::AuthArgs;
use super::parse::parse_duration;

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
    /// Start this many nats-server nodes as one cluster on loopback (3: an R3 stream)
    /// instead of one server. Self-contained mode only.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_cluster: u8,
    /// Database of the started system (default: SQLite in the temporary data dir); with
    /// `--url`, the system's database, read for latencies instead of the API.
    #[arg(long)]
    pub database_url: Option<String>,
    /// nats-server binary (else .tools/nats-server/bin/nats-server, else PATH).
    #[arg(long, env = "NATS_SERVER_BIN")]
    pub nats_server_bin: Option<String>,
    /// Metrics of the started system: `on` (as shipped), `off`, or `compare`: the system
    /// run twice, metrics off then on, and the throughput of the second as a share of the first.
    #[arg(long, default_value = "on")]
    pub metrics: BenchMetrics,
    /// Instead of the usual run: N echo steps fanned out in workflows with fan-in callbacks
    /// against N independent jobs, on the same started system (self-contained mode only).
    #[arg(long, conflicts_with_all = ["url", "rate", "batch"])]
    pub fan_out: Option<usize>,
    /// Run the raw loop and the system this many times, alternating, and report the pair
    /// with the median ratio (with every pair's ratio): one sitting's noise moves a single
    /// pair by ±10 % (self-contained closed or open loop only).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=9),
          conflicts_with_all = ["url", "fan_out", "batch", "list_rows", "console_rows"])]
    pub repeat: u8,
    /// Keep the temporary data dir (logs, store, database) instead of deleting it.
    #[arg(long)]
    pub keep_data: bool,
    /// Give up waiting for completion after this long.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// After the run, seed this many job rows straight into SQL and time every list
    /// query through the API (self-contained mode; e.g. 1000000).
    #[arg(long)]
    pub list_rows: Option<usize>,
    /// After the run, seed this many job rows straight into SQL and time every console
    /// page (`/ui/...`) as a user and as an admin (self-contained mode; e.g. 1000000).
    #[arg(long)]
    pub console_rows: Option<usize>,
    /// The started API's backlog bound per queue (`api --max-queue-depth`): past it,
    /// submissions are shed with `429` and counted, not failed (for overload runs).
    #[arg(long)]
    pub max_queue_depth: Option<u64>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub auth: AuthArgs,
}

/// `jobstream bench --metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMetrics {
    /// The processes record metrics.
    On,
    /// They do not (`--metrics off`).
    Off,
    /// Once off, once on: what metrics cost.
    Compare,
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
