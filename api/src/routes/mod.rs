//! One module per resource, each exposing `router()`.

pub mod batch;
pub mod health;
pub mod jobs;
pub mod schedules;
pub mod users;
