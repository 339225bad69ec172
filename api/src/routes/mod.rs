//! One module per resource, each exposing `router()`.

pub mod files;
pub mod health;
pub mod jobs;
pub mod kinds;
