//! One module per resource, each exposing `router()`.

pub mod admin_replay;
pub mod events;
pub mod health;
pub mod job_events;
pub mod jobs;
