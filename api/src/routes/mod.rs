//! One module per resource, each exposing `router()`.

pub mod batch;
pub mod files;
pub mod health;
pub mod job_actions;
pub mod jobs;
pub mod kinds;
pub mod schedules;
pub mod users;
