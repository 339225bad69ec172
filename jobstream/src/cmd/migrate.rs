//! `jobstream migrate up|down|status|fresh`.

use anyhow::Context;
use migration::{Migrator, MigratorTrait};

use crate::cli::{MigrateAction, MigrateArgs};
use crate::system;

/// Applies the chosen migration action.
pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let url = &args.db.url();
    let db = jobstream_core::store::connect(url)
        .await
        .with_context(|| format!("connecting to {}", system::redact(url)))?;
    match args.action {
        MigrateAction::Up => Migrator::up(&db, None).await?,
        MigrateAction::Down => Migrator::down(&db, Some(1)).await?,
        MigrateAction::Fresh => Migrator::fresh(&db).await?,
        MigrateAction::Status => Migrator::status(&db).await?,
    }
    println!("migrate {:?}: done", args.action);
    Ok(())
}
