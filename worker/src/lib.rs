//! # jobstream-worker
//!
//! Pulls `queued` events from JetStream, runs the handler registered for the
//! job's kind, and appends the outcome events.
//!
//! ## Layout
//! - [`handler`]: the [`Handler`] trait, [`JobContext`], [`JobError`] and the [`Registry`].
//! - [`builtin`]: the built-in kinds (`echo`, `sleep`, `fail`).
//! - [`run`]: the pull loop, per-message processing, acks and shutdown.
//!
//! ## Outcomes and acks
//! A `queued` message is acked only after its outcome event is stored:
//! `succeeded` → `Ack`; `retrying` → `Nak(delay)`; `failed` → `Term`. While a
//! handler runs, `Progress` acks keep the message from being redelivered.

pub mod builtin;
pub mod handler;
pub mod run;

pub use handler::{Handler, JobContext, JobError, Registry};
pub use run::{Backoff, Worker, WorkerConfig, WorkerError};
