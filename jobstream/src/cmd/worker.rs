//! `jobstream worker`: runs jobs of its queues.

use jobstream_worker::Worker;

use crate::cli::WorkerArgs;
use crate::system;

/// Runs jobs until Ctrl-C / SIGTERM, then drains within the grace period.
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let config = system::worker_config(&args.tuning)?;
    let broker = system::connect_broker(&args.nats.nats_url, &args.nats, &config.id).await?;
    let files = system::open_files(&broker, &args.files, &args.nats).await?;
    let registry = system::registry(system::kinds_config(
        &args.kinds,
        files,
        std::path::Path::new("data"),
    ))?;
    let worker = Worker::build(broker, registry, config).await?;
    worker
        .run(jobstream_core::shutdown::token_on_signal())
        .await?;
    Ok(())
}
