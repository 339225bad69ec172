//! End-to-end tests: real nats-server, real databases, the real API over HTTP.
//! One binary (this file plus modules) so it links once.

mod admission;
mod auth;
mod bad_input;
mod batch;
mod cluster;
mod delayed;
mod email;
mod fast_path;
mod faults_projector;
mod faults_worker;
mod files;
mod fuzz;
mod helpers;
mod history;
mod idempotency;
mod kinds;
mod lifecycle;
mod nats_config;
mod openapi_contract;
mod pipeline;
mod python_worker;
mod readiness;
mod replay;
mod resilience;
mod retention;
mod retries;
mod schedules;
mod shutdown;
mod sse;
mod stream;
mod users;
mod validation;
mod webhook;
mod wiring;
