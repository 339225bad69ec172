//! End-to-end tests: real nats-server, real databases, the real API over HTTP.
//! One binary (this file plus modules) so it links once.

mod email;
mod files;
mod helpers;
mod kinds;
mod pipeline;
mod python_worker;
mod resilience;
mod retention;
mod retries;
mod stream;
mod validation;
mod webhook;
