//! `jobstream api`: the HTTP API on its own.

use std::sync::Arc;

use jobstream_api::users::Users;
use jobstream_api::{App, AppState};

use crate::cli::ApiArgs;
use crate::system;

/// Serves the API until Ctrl-C / SIGTERM.
pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let verifier = system::verifier(&args.auth)?;
    let broker = system::connect_broker(&args.nats.nats_url, &args.nats, "jobstream-api").await?;
    let db = system::connect_db_migrated(&args.db.database_url).await?;
    let kinds = system::catalogue(&args.catalogue)?;
    let files = system::files_state(&broker, &args.files, &args.nats).await?;
    let state = AppState {
        live: jobstream_api::live::EventHub::start(broker.clone()).await?,
        replay: Default::default(),
        readiness: args.readiness.readiness(),
        admission: Default::default(),
        broker,
        db,
        verifier: Arc::new(verifier),
        users: Arc::new(Users::new(args.open_registration)),
        kinds,
        files,
    };
    let app = App::build((args.host, args.port).into(), state).await?;
    app.run_until_stopped(jobstream_core::shutdown::token_on_signal())
        .await?;
    Ok(())
}
