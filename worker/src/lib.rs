//! # jobstream-worker
//!
//! Pulls `queued` events from JetStream, runs the handler registered for the
//! job's kind, and appends the outcome events.
//!
//! ## Layout
//! - [`handler`]: the [`Handler`] trait, [`JobContext`], [`JobError`] and the [`Registry`].
//! - [`builtin`]: the built-in kinds (`echo`, `sleep`, `fail`).
//! - [`children`]: child jobs from a handler ([`children::Children::fan_out`]): a workflow whose
//!   continuation step runs when every child has succeeded; no slot waits.
//! - [`kinds`]: the kinds that do real work and their typed config ([`kinds::KindsConfig`]):
//!   [`email`] (`email.send`, `email.registration`), [`thumbnail`] (`image.thumbnail`),
//!   [`webhook`] (`http.request`).
//! - [`defaults`]: every default of the worker and its kinds, once.
//! - [`run`]: the worker, per-message processing, acks and shutdown.
//! - [`limit`]: per-queue global concurrency limits (server-held tokens).
//! - `pause`: a queue's pause state, read at start and followed live; the puller waits
//!   while it is paused. `registry`: the heartbeat into the workers registry (KV bucket).
//! - `lanes`: priority lane consumers and the doorbell; `pull`: the pull loop of a queue
//!   (permits, tokens, a look at each lane), `idle`: its wait when every lane is empty,
//!   `watchdog`: telling a stalled puller from an idle one; `decide`: what a delivery
//!   does, from the job's history; `start`: the fast path (when `started` is stored);
//!   `cancel`: stopping running handlers.
//!
//! ## Outcomes and acks
//! A `queued` message is acked only after its outcome event is stored:
//! `succeeded` → `Ack`; `retrying` → `Nak(delay)`; `failed` or `cancelled` →
//! `Term`. While a delivery is being handled, `Progress` acks keep the message from
//! being redelivered; that includes waiting out a stream that refuses writes, since
//! the attempt number is the delivery count and an outage must not use up attempts
//! (see `run::decide_and_run`). Every server round trip of the puller is bounded,
//! and a watchdog rebuilds a queue's consumers when it stalls (`watchdog`).
//!
//! ## Lanes, retries and cancellation
//! Each queue has one durable consumer per priority lane (`high`, `normal`,
//! `low`); a worker pulls higher lanes first. A lane consumer takes the lane's
//! `queued` and `retry_requested` events, so a job retried by a client is picked
//! up like a new one (its spec is read from its `queued` event). Before running,
//! a worker folds the job's history (a first delivery of a `queued` message that is
//! still its job's latest event skips that): a cancelled or finished job, or a message
//! superseded by a later retry request, is acked without running. A short job costs
//! two stream writes, `queued` and its outcome: `started` is stored only past
//! [`STARTED_AFTER`] or before the first progress, and every append of the attempt
//! is conditional on the job having no newer event (optimistic concurrency), so a
//! cancel request stored first always wins (`start` has the design). Running jobs are cancelled through a core NATS subscription on
//! the queues' `cancel_requested` subjects.

pub mod builtin;
mod cancel;
pub mod children;
mod decide;
pub mod defaults;
pub mod email;
pub mod handler;
mod idle;
pub mod kinds;
mod lanes;
pub mod limit;
mod look;
mod pause;
mod pull;
mod registry;
pub mod run;
mod start;
pub mod thumbnail;
mod watchdog;
pub mod webhook;

pub use handler::{Handler, JobContext, JobError, ProgressReporter, Registry};
pub use kinds::KindsConfig;
pub use run::{Backoff, Worker, WorkerConfig, WorkerError};
pub use start::STARTED_AFTER;
