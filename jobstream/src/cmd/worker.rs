//! `jobstream worker`: runs jobs of its queues.

use jobstream_worker::Worker;

use crate::cli::WorkerArgs;
use crate::system;

/// How long after its grace period a stopping worker is ended regardless.
const EXIT_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs jobs until Ctrl-C / SIGTERM, then drains within the grace period.
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let config = system::worker_config(&args.tuning)?;
    let broker = system::connect_broker(&args.nats, &config.id).await?;
    let files = system::open_files(&broker, &args.files, &args.nats).await?;
    let registry = system::registry(system::kinds_config(
        &args.kinds,
        files,
        &args.data.data_dir,
    ))?;
    let grace = config.shutdown_grace;
    let slots = config.concurrency;
    let exporter = system::exporter(&broker);
    let worker = Worker::build(broker, registry, config).await?;
    let shutdown = jobstream_core::shutdown::token_on_signal();
    system::serve_metrics(&args.metrics, exporter, &shutdown).await?;
    jobstream_core::metrics::worker_slots(slots);
    // `Worker::run` keeps to the grace period itself; this is the backstop.
    jobstream_core::shutdown::exit_at_the_latest(&shutdown, grace + EXIT_MARGIN, "worker");
    worker.run(shutdown).await?;
    Ok(())
}
