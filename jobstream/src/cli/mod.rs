//! Command-line and environment configuration. Every flag has an environment
//! variable; `.env.sample` lists them.
//!
//! ## Layout
//! - [`common`]: groups several commands share (NATS and the stream, database, data
//!   folder, listen address, readiness bounds) and their defaults.
//! - [`auth`]: token verification, `token`.
//! - [`api`], [`worker`], [`projector`] (with `migrate`, `replay`, `verify`), [`dev`]
//!   (which flattens the groups of the three), [`tools`] (`bench`, `seed`, `bench-sse`).
//! - [`client`]: the terminal client (`jobs`, `queues`, `workers`), over the API.
//! - [`parse`]: durations and sizes.

use clap::{Parser, Subcommand};
use jobstream_core::telemetry::LogFormat;

pub mod api;
pub mod auth;
pub mod client;
pub mod common;
pub mod dev;
pub mod parse;
pub mod projector;
pub mod tools;
pub mod worker;

pub use api::{ApiArgs, CatalogueArgs, FilesArgs};
pub use auth::{AuthArgs, TokenArgs};
pub use client::{ClientArgs, JobsArgs, JobsCommand, QueuesArgs, QueuesCommand, WorkersArgs};
pub use common::{
    DEFAULT_API_PORT, DEFAULT_DATA_DIR, DEFAULT_JOB_TTL, DEFAULT_NATS_URL, DataDirArgs, DbArgs,
    ListenArgs, MetricsArgs, NatsArgs, ReadinessArgs,
};
pub use dev::DevArgs;
pub use parse::{format_duration, format_size, parse_duration, parse_size};
pub use projector::{
    MigrateAction, MigrateArgs, ProjectorArgs, ProjectorTuning, ReplayArgs, VerifyArgs,
};
pub use tools::{
    BenchArgs, BenchMetrics, BenchSseArgs, SeedArgs, parse_bench_pid, parse_durability,
};
pub use worker::{KindsArgs, WorkerArgs, WorkerTuning, parse_queue_limit};

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
            Command::Jobs(_) | Command::Queues(_) | Command::Workers(_) => "warn",
            _ => "info,sqlx=warn,async_nats=warn",
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process: nats-server child, api, worker and projector on SQLite.
    Dev(Box<DevArgs>),
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
    /// Jobs through the API: list, get, submit, cancel, retry, tail.
    Jobs(JobsArgs),
    /// Queues through the API: list, pause, resume (admins).
    Queues(QueuesArgs),
    /// The workers registry through the API (admins).
    Workers(WorkersArgs),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The arguments of `jobstream <args>`, with every setting at its default.
    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("jobstream").chain(args.iter().copied()))
            .expect("parses")
            .command
    }

    #[test]
    fn the_flags_default_to_what_the_crates_default_to() {
        // The worker's flags and its `Default` read the same consts
        // (`jobstream_worker::defaults`); this checks the flags reach the right fields.
        let Command::Worker(w) = parse(&["worker"]) else {
            unreachable!()
        };
        let ours = crate::system::worker_config(&w.tuning).unwrap();
        let theirs = jobstream_worker::WorkerConfig {
            id: ours.id.clone(),
            ..Default::default()
        };
        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
        let Command::Projector(p) = parse(&["projector"]) else {
            unreachable!()
        };
        let ours = crate::system::projector_config(&p.tuning);
        let theirs = jobstream_projector::ProjectorConfig::default();
        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
        let Command::Replay(r) = parse(&["replay"]) else {
            unreachable!()
        };
        let theirs = jobstream_projector::replay::ReplayOptions::default();
        assert_eq!(
            (r.job_ttl, r.batch_size),
            (theirs.job_ttl, theirs.batch_size)
        );
        let Command::Dev(d) = parse(&["dev"]) else {
            unreachable!()
        };
        let Command::Api(a) = parse(&["api"]) else {
            unreachable!()
        };
        assert_eq!(d.db.url_in(&d.data.data_dir), a.db.url());
        assert_eq!(
            format!("{:?}", d.readiness.readiness()),
            format!("{:?}", jobstream_api::routes::health::Readiness::default())
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn defaults_taken_from_the_crates_read_back_as_written() {
        for d in [500, 1_000, 25_000, 300_000, 86_400_000, 90_061_001] {
            let d = Duration::from_millis(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "24h");
        for n in [0, 1, 65_536, 32 << 20, 512 << 20, (1 << 30) + 1] {
            assert_eq!(parse_size(&format_size(n)), Ok(n));
        }
        assert_eq!(format_size(64 << 10), "64KiB");
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
