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
//! - user events (`users.*`) fold into the `users` table in the same transaction.
//! - [`sweep`](Projector::sweep): deletes finished jobs older than the job TTL.
//! - `schedules`: folds schedule records (`schedules.<key>`) into the `schedules` table,
//!   in the same transaction and under the same checkpoint as the job events.
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
pub mod replay;
mod run;
mod schedules;
mod standby;
mod users;

pub use apply::BatchOutcome;
pub use run::{Connector, Projector, ProjectorConfig, ProjectorError, own_pool};
