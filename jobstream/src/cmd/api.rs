//! `jobstream api`: the HTTP API on its own.

use std::sync::Arc;

use jobstream_api::{App, AppState, auth::Verifier};

use crate::cli::ApiArgs;
use crate::system;

/// Serves the API until Ctrl-C / SIGTERM.
pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let auth = system::auth_config(&args.auth)?;
    let broker = system::connect_broker(&args.nats.nats_url, &args.nats, "jobstream-api").await?;
    let db = system::connect_db_migrated(&args.db.database_url).await?;
    let state = AppState {
        live: jobstream_api::live::EventHub::start(broker.clone()).await?,
        replay: Default::default(),
        broker,
        db,
        verifier: Arc::new(Verifier::new(&auth)),
    };
    let app = App::build((args.host, args.port).into(), state).await?;
    app.run_until_stopped(jobstream_core::shutdown::token_on_signal())
        .await?;
    Ok(())
}
