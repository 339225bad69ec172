//! `jobstream projector`: folds the stream into SQL, and runs replays on request.

use std::sync::Arc;

use jobstream_projector::{Conductor, ProjectionGauges, Projector};

use crate::cli::ProjectorArgs;
use crate::system;

/// How long after the start of a shutdown the projector is ended regardless (a batch
/// that hangs on the database; a replay stops after its current batch).
const EXIT_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Folds events until Ctrl-C / SIGTERM.
pub async fn run(args: ProjectorArgs) -> anyhow::Result<()> {
    let broker = system::connect_broker(&args.nats, "jobstream-projector").await?;
    let db = system::connect_db_migrated(&args.db.url()).await?;
    let config = system::projector_config(&args.tuning);
    let gauges = ProjectionGauges::new(broker.clone(), db.clone(), &config.name);
    let exporter = system::exporter(&broker).with_source(Arc::new(gauges));
    let projector = Projector::build(broker, db.clone(), config).await?;
    let shutdown = jobstream_core::shutdown::token_on_signal();
    system::serve_metrics(&args.metrics, exporter, &shutdown).await?;
    // Workflow steps are enqueued beside the fold (see `jobstream_core::workflow`).
    Conductor::spawn_beside(&projector, db, shutdown.clone());
    // `run` stops after the batch in flight; this is the backstop.
    jobstream_core::shutdown::exit_at_the_latest(&shutdown, EXIT_WITHIN, "projector");
    projector.run(shutdown).await?;
    Ok(())
}
