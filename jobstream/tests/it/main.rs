//! End-to-end tests: real nats-server, real databases, the real API over HTTP.
//! One binary (this file plus modules) so it links once.

mod helpers;
mod history;
mod pipeline;
mod replay;
mod resilience;
mod retention;
mod retries;
mod sse;
mod stream;
mod validation;
