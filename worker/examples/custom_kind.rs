//! A worker with a custom kind written in Rust, as the README shows.
//!
//! ```sh
//! NATS_URL=nats://127.0.0.1:4222 cargo run -p jobstream-worker --example custom_kind
//! ```
//! The API must accept the kind too: declare it in a kinds file (`--kinds-file`,
//! see the README's "Custom kinds").

use jobstream_core::broker::{Broker, StreamSettings};
use jobstream_worker::{JobContext, JobError, Registry, Worker, WorkerConfig};
use serde_json::{Value, json};

/// The handler: any `async fn(JobContext) -> Result<Value, JobError>`.
async fn word_count(ctx: JobContext) -> Result<Value, JobError> {
    let text = ctx.payload["text"]
        .as_str()
        .ok_or_else(|| JobError::Fatal("payload.text must be a string".into()))?;
    Ok(json!({ "words": text.split_whitespace().count() }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let broker = Broker::connect(&url, "custom-kind-example", "JOBS").await?;
    broker.ensure_stream(&StreamSettings::default()).await?;

    let mut registry = Registry::with_builtins();
    registry.register("text.word_count", word_count);

    let worker = Worker::build(broker, registry, WorkerConfig::default()).await?;
    worker
        .run(jobstream_core::shutdown::token_on_signal())
        .await?;
    Ok(())
}
