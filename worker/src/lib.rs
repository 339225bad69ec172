//! # jobstream-worker
//!
//! Pulls `queued` events from JetStream, runs the handler registered for the
//! job's kind, and appends the outcome events.
//!
//! ## Layout
//! - [`handler`]: the [`Handler`] trait, [`JobContext`], [`JobError`] and the [`Registry`].
//! - [`builtin`]: the built-in kinds (`echo`, `sleep`, `fail`).
//! - [`kinds`]: the kinds that do real work and their typed config ([`kinds::KindsConfig`]):
//!   [`email`] (`email.send`, `email.registration`), [`thumbnail`] (`image.thumbnail`),
//!   [`webhook`] (`http.request`).
//! - [`run`]: the pull loop, per-message processing, acks and shutdown.
//!
//! ## Outcomes and acks
//! A `queued` message is acked only after its outcome event is stored:
//! `succeeded` → `Ack`; `retrying` → `Nak(delay)`; `failed` → `Term`. While a
//! handler runs, `Progress` acks keep the message from being redelivered.

pub mod builtin;
pub mod email;
pub mod handler;
pub mod kinds;
pub mod run;
pub mod thumbnail;
pub mod webhook;

pub use handler::{Handler, JobContext, JobError, Registry};
pub use kinds::KindsConfig;
pub use run::{Backoff, Worker, WorkerConfig, WorkerError};
