//! # jobstream-core
//!
//! The vocabulary every jobstream process shares.
//!
//! ## Layout
//! - [`event`]: the closed, versioned event enum and its envelope (the wire format).
//! - [`subject`]: validated subject tokens and the `jobs.<queue>.<job_id>.<event>` scheme.
//! - [`fold`]: the job state machine; folds events into a [`fold::JobState`]. Pure, no I/O.
//! - [`catalogue`]: the built-in job kinds and their defaults.
//! - [`broker`]: connecting to NATS, the `JOBS` stream, publishing events (I/O).
//! - [`nats_server`]: starting a local nats-server child (dev mode, tests).
//! - [`store`]: connecting to the SQL projection store (I/O).
//! - [`telemetry`]: the tracing subscriber.
//! - [`shutdown`]: Ctrl-C / SIGTERM into a cancellation token.
//! - [`user`]: user events (`users.<user_id>.<event>`), ids derived from `sub`, the user fold. Pure.
//! - [`stream_event`]: a stored message as a job or user event, by subject prefix.
//! - [`user_broker`]: publishing and reading user events; reading the whole stream (I/O).

pub mod broker;
pub mod catalogue;
pub mod event;
pub mod fold;
pub mod nats_server;
pub mod shutdown;
pub mod store;
pub mod stream_event;
pub mod subject;
pub mod telemetry;
pub mod user;
pub mod user_broker;

pub use event::{Envelope, Event, EventType};
pub use fold::{JobState, JobStatus};
