//! `jobstream projector`: folds the stream into SQL.

use jobstream_projector::Projector;

use crate::cli::ProjectorArgs;
use crate::system;

/// Folds events until Ctrl-C / SIGTERM.
pub async fn run(args: ProjectorArgs) -> anyhow::Result<()> {
    let broker =
        system::connect_broker(&args.nats.nats_url, &args.nats, "jobstream-projector").await?;
    let db = system::connect_db_migrated(&args.db.database_url).await?;
    let projector = Projector::build(broker, db, system::projector_config(&args.tuning)).await?;
    projector
        .run(jobstream_core::shutdown::token_on_signal())
        .await?;
    Ok(())
}
