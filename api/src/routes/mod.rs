//! One module per resource, each exposing `router()`.

pub mod health;
pub mod job_actions;
pub mod jobs;
