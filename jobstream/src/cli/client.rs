//! The terminal client's commands (`jobs`, `queues`, `workers`): they talk to a
//! running API over HTTP, never to NATS or the database.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use secrecy::SecretString;

/// Where the API is and who calls it; shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Base URL of the API.
    #[arg(
        long,
        env = "JOBSTREAM_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Bearer token (e.g. one printed by `make run` or `jobstream token`).
    #[arg(long, env = "JOBSTREAM_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<SecretString>,
    /// Print JSON (one document, or one line per event for `tail`) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `jobstream jobs …`.
#[derive(Debug, Clone, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub client: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// Operations on jobs.
#[derive(Debug, Clone, Subcommand)]
pub enum JobsCommand {
    /// A page of jobs, newest first (yours; an admin sees all).
    List {
        /// Only jobs in this status.
        #[arg(long)]
        status: Option<String>,
        /// Only jobs of this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only jobs of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Page size.
        #[arg(long)]
        limit: Option<u64>,
        /// The page after this cursor (printed under a full page).
        #[arg(long)]
        after: Option<String>,
    },
    /// One job.
    Get {
        /// Job id.
        id: String,
    },
    /// Submit one job, or every line of a JSON-lines file (`--file`).
    Submit {
        /// Kind of the job (not with `--file`).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        kind: Option<String>,
        /// Its payload, as JSON.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// Queue (default: the kind's).
        #[arg(long)]
        queue: Option<String>,
        /// A JSON-lines file: one submission body per line (as `POST /v1/jobs` takes it).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Cancel a job.
    Cancel {
        /// Job id.
        id: String,
        /// Why (kept in the job's history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Run a failed or cancelled job again.
    Retry {
        /// Job id.
        id: String,
    },
    /// Follow job events live (Server-Sent Events) until interrupted.
    Tail {
        /// Only this job's events.
        #[arg(long)]
        job: Option<String>,
        /// Only jobs of this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only jobs of this kind.
        #[arg(long)]
        kind: Option<String>,
    },
}

/// `jobstream queues …`.
#[derive(Debug, Clone, Args)]
pub struct QueuesArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub client: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: QueuesCommand,
}

/// Operations on queues (admins).
#[derive(Debug, Clone, Subcommand)]
pub enum QueuesCommand {
    /// Every queue: depth, oldest waiting job, paused, NATS counts, global limit.
    List,
    /// Pause a queue: its workers take no new jobs.
    Pause {
        /// Queue name.
        name: String,
    },
    /// Resume a paused queue.
    Resume {
        /// Queue name.
        name: String,
    },
}

/// `jobstream workers`: the workers registry (admins).
#[derive(Debug, Clone, Args)]
pub struct WorkersArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub client: ClientArgs,
}
