//! One module per resource, each exposing `router()`.

pub mod admin_rejected;
pub mod admin_replay;
pub mod admin_verify;
pub mod batch;
pub mod events;
pub mod files;
pub mod health;
pub mod job_actions;
pub mod job_events;
pub mod jobs;
pub mod kinds;
pub mod metrics;
pub mod queues;
pub mod schedules;
pub mod users;
pub mod workflows;
