//! End-to-end tests: real nats-server, real databases, the real API over HTTP.
//! One binary (this file plus modules) so it links once.

mod helpers;
mod lifecycle;
mod pipeline;
mod resilience;
mod retention;
mod retries;
mod stream;
mod validation;
