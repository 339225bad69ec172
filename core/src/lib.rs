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
//! - [`stream_read`]: reading stored messages back by sequence (catch-up, history, replay) (I/O).
//! - [`telemetry`]: the tracing subscriber.
//! - [`shutdown`]: Ctrl-C / SIGTERM into a cancellation token.

pub mod broker;
pub mod catalogue;
pub mod event;
pub mod fold;
pub mod nats_server;
pub mod shutdown;
pub mod store;
pub mod stream_read;
pub mod subject;
pub mod telemetry;

pub use event::{Envelope, Event, EventType};
pub use fold::{JobState, JobStatus};
