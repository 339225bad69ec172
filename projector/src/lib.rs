//! # jobstream-projector
//!
//! Folds every job event of the `JOBS` stream into the SQL read model.
//!
//! ## Layout
//! - [`Projector`]: the durable consumer loop (`run.rs`): decode a delivered chunk, fill
//!   any gap from the stream, fold, ack; catch up from the stream when idle. It also
//!   serves replay commands ([`replay::control`]) while it runs.
//! - `apply`: one batch = one transaction: rows and checkpoint together, so a redelivered
//!   or replayed event is a no-op; an event the database refuses becomes a dead letter.
//! - [`counts`]: jobs per (queue, owner, status) in `job_counts`, moved with the rows.
//! - user events (`users.*`) fold into the `users` table in the same transaction.
//! - [`sweep`](Projector::sweep): deletes finished jobs older than the job TTL.
//! - `schedules`: folds schedule records (`schedules.<key>`) into the `schedules` table,
//!   in the same transaction and under the same checkpoint as the job events.
//! - [`ProjectionGauges`]: scrape-time gauges (jobs by status, backlog age, lag, stream and
//!   consumers); the projector role exports them.
//! - `queues`: folds queue control records (`queues.<queue>`: paused / resumed) into the
//!   `queue_states` table, in the same transaction too.
//! - `workflows`: workflow events and the step jobs' events → `workflows` and
//!   `workflow_steps`, in the same transaction; a step whose dependencies succeeded gets a
//!   pending action (an outbox row).
//! - [`Conductor`]: publishes those actions (the next steps' `queued` events, retries,
//!   cancels), exactly once; runs beside the projector, woken by each committed batch.
//! - `standby`: one active projector and hot standbys (a pinned-client priority group on
//!   the consumer); the fold is fenced by locking the checkpoint row, so even while the pin
//!   moves two projectors never apply the same event.
//! - [`replay`]: rebuild the projection from the stream (into the live database through a
//!   shadow and an atomic swap, or into another database) and verify it against a fresh
//!   fold; on request, one replay at a time, with progress every API instance reads.
//!
//! Exactly-once fold: the checkpoint (last applied stream sequence) is committed
//! with the rows it covers, and messages are acked only after the commit.

mod apply;
mod conductor;
pub mod counts;
mod gauges;
mod queues;
pub mod replay;
mod run;
mod schedules;
mod standby;
mod users;
mod workflows;

pub use apply::BatchOutcome;
pub use conductor::Conductor;
pub use gauges::ProjectionGauges;
pub use run::{Connector, Projector, ProjectorConfig, ProjectorError, own_pool};
