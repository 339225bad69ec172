//! One module per resource, each exposing `router()`.

pub mod health;
pub mod jobs;
pub mod users;
