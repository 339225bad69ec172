//! # jobstream-core
//!
//! The vocabulary every jobstream process shares.
//!
//! ## Layout
//! - [`event`]: the closed, versioned event enum and its envelope (the wire format).
//! - [`subject`]: validated subject tokens and the `jobs.<queue>.<job_id>.<event>` scheme.
//! - [`fold`]: the job state machine; folds events into a [`fold::JobState`]. Pure, no I/O.
//! - [`catalogue`]: the built-in job kinds and their defaults.
//! - [`kinds`]: the run-time catalogue (built-in plus custom kinds) with payload JSON Schemas.
//! - [`limits`]: input limits (nesting depth, body size, NUL) every reader can live with. Pure.
//! - [`files`]: the JetStream object store bucket of uploaded files and thumbnails.
//! - [`broker`]: connecting to NATS, the `JOBS` stream, publishing events (I/O).
//! - [`nats_server`]: starting a local nats-server child (dev mode, tests).
//! - [`nats_cluster`]: a local three-node nats-server cluster on loopback (dev, tests, bench).
//! - [`store`]: connecting to the SQL projection store (I/O).
//! - [`stream_read`]: reading stored messages back by sequence (catch-up, history, replay) (I/O).
//! - [`telemetry`]: the tracing subscriber.
//! - [`trace`]: one trace per job: the W3C `traceparent` every event of a job carries. Pure.
//! - [`metrics`]: Prometheus metric names, bounded labels, the recorder and scrape-time gauges.
//! - [`atomic`]: atomic batch publish, last-message lookups, reading every record kind (I/O).
//! - [`stored`]: the one decoder of stored stream messages (including scheduler-fired ones).
//! - [`schedule`]: periodic schedules: records, cron / `@every` syntax, subjects.
//! - [`queue`]: queue control records (pause / resume, `queues.<queue>`) and the workers
//!   registry's records (a KV bucket with a TTL). Pure.
//! - [`replay`]: replay commands and progress shared by the API, the CLI and the projector.
//! - [`verify`]: verify commands and results shared by the API and the projector.
//! - [`shutdown`]: Ctrl-C / SIGTERM into a cancellation token.
//! - [`user`]: user events (`users.<user_id>.<event>`), ids derived from `sub`, the user fold. Pure.
//! - [`user_broker`]: publishing and reading user events; reading the whole stream (I/O).
//! - [`workflow`]: workflow events (`workflows.<id>.<event>`), derived step job ids,
//!   `$from` references, the workflow fold (and why the conductor enqueues steps). Pure.

pub mod atomic;
pub mod broker;
pub mod catalogue;
pub mod event;
pub mod files;
pub mod fold;
pub mod kinds;
pub mod limits;
pub mod metrics;
pub mod nats_cluster;
pub mod nats_server;
pub mod queue;
pub mod replay;
pub mod schedule;
pub mod shutdown;
pub mod store;
pub mod stored;
pub mod stream_read;
pub mod subject;
pub mod telemetry;
pub mod trace;
pub mod user;
pub mod user_broker;
pub mod verify;
pub mod workflow;

pub use event::{Envelope, Event, EventType};
pub use fold::{JobState, JobStatus};
