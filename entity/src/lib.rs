//! # jobstream-entity
//!
//! sea-orm entities of the read model. These tables are a projection of the
//! `JOBS` stream: only the projector writes them; they can be dropped and rebuilt
//! from the stream at any time.
//!
//! - [`queued_job`]: the current state of each job.
//! - [`projector_checkpoint`]: the last stream sequence folded, per projector.
//! - [`schedule`]: the active periodic schedules.
//! - [`user`]: one row per user, folded from `user.*` events.

pub mod projector_checkpoint;
pub mod queued_job;
pub mod schedule;
pub mod user;
