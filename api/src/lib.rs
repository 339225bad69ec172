//! # jobstream-api
//!
//! The HTTP face of jobstream. It validates and authenticates requests, appends
//! events to the `JOBS` stream (a `202` means the event is stored), and serves
//! reads from the SQL projection.
//!
//! ## Layout
//! - [`server`]: [`app()`], the pure `Router` (tests call it with `oneshot`), and [`App`], which binds and serves it.
//! - [`auth`]: Bearer JWT verification, the [`auth::Caller`] extractor, dev token minting.
//! - [`error`]: [`error::ApiError`], rendered as `application/problem+json`.
//! - [`http`]: HTTP glue shared by the routes: body/path/query extractors that refuse bad input as
//!   problem documents, [`http::RequestId`], cursor pages ([`http::Page`]).
//! - [`input`]: typed request bodies that still name every bad field ([`input::Field`]).
//! - [`jobs`]: the jobs service ([`jobs::JobService`]): submit, get, list, cancel, retry, history,
//!   wait; typed inputs, the caller, domain results. Routes, console and CLI call it.
//! - [`queues`]: the queues service ([`queues::QueueService`]): pause, resume, the queues overview,
//!   the workers registry. Routes, console and CLI call it.
//! - [`routes`]: one module per resource, each with its own `router()`: HTTP glue only.
//! - [`state`]: [`state::AppState`], what every handler gets.
//! - [`live`]: the process's one live tail of the stream, fanned out to SSE connections and waits.
//! - [`tickets`]: single-use SSE tickets for browsers.
//! - [`openapi`]: the OpenAPI document generated from the handlers, and `/docs` (Swagger UI).
//! - [`ui`]: the operator's console at `/ui` (askama pages, vendored htmx).
//! - [`workflows`]: the workflows service ([`workflows::WorkflowService`]): DAGs of jobs, submitted as
//!   one event, read from the projection, cancelled and retried as a whole.
//! - [`users`]: registering users (first request, `POST /v1/users`) through the stream.

pub mod auth;
pub mod error;
pub mod http;
pub mod input;
pub mod jobs;
pub mod live;
pub mod openapi;
pub mod queues;
pub mod routes;
pub mod server;
pub mod state;
pub mod tickets;
pub mod ui;
pub mod users;
pub mod workflows;

pub use server::{App, app};
pub use state::{ApiSettings, AppState, AppStateParts};
