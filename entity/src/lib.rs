//! # jobstream-entity
//!
//! sea-orm entities of the read model. These tables are a projection of the
//! `JOBS` stream: only the projector writes them; they can be dropped and rebuilt
//! from the stream at any time.
//!
//! - [`queued_job`]: the current state of each job.
//! - [`job_count`]: jobs per (queue, owner, status), kept with the job rows.
//! - [`projector_checkpoint`]: the last stream sequence folded, per projector.
//! - [`schedule`]: the active periodic schedules.
//! - [`user`]: one row per user, folded from `user.*` events.
//! - [`rejected_event`]: events the projector could not apply (dead letters).
//! - [`queue_state`]: each queue's pause state, folded from `queues.<queue>` records.
//! - [`projector_status`]: the projector's health (heartbeat, last error).
//! - [`workflow`], [`workflow_step`]: workflows and their steps (the step rows are the conductor's outbox).

pub mod job_count;
pub mod projector_checkpoint;
pub mod projector_status;
pub mod queue_state;
pub mod queued_job;
pub mod rejected_event;
pub mod schedule;
pub mod user;
pub mod workflow;
pub mod workflow_step;
