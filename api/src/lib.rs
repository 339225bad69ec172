//! # jobstream-api
//!
//! The HTTP face of jobstream. It validates and authenticates requests, appends
//! events to the `JOBS` stream (a `202` means the event is stored), and serves
//! reads from the SQL projection.
//!
//! ## Layout
//! - [`app`]: the pure `Router` (tests call it with `oneshot`), and [`App`] which binds and serves it.
//! - [`auth`]: Bearer JWT verification, the [`auth::Caller`] extractor, dev token minting.
//! - [`error`]: [`error::ApiError`], rendered as `application/problem+json`.
//! - [`extract`]: body, path and query extractors that refuse bad input as problem documents.
//! - [`lifecycle`]: storing submissions in the stream: delayed jobs (timers), idempotency records, atomic batches.
//! - [`routes`]: one module per resource, each with its own `router()`.
//! - [`state`]: [`state::AppState`], what every handler gets.
//! - [`live`]: the process's one live tail of the stream, fanned out to SSE connections and waits.
//! - [`tickets`]: single-use SSE tickets for browsers.
//! - [`openapi`]: the OpenAPI document generated from the handlers.
//! - [`users`]: registering users (first request, `POST /v1/users`) through the stream.

pub mod app;
pub mod auth;
pub mod error;
pub mod extract;
pub mod lifecycle;
pub mod live;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod tickets;
pub mod users;

pub use app::{App, app};
pub use state::AppState;
