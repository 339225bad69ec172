//! `jobstream api`: the HTTP API on its own.

use jobstream_api::App;

use crate::cli::ApiArgs;
use crate::system::{self, ApiParts};

/// How long after the start of a shutdown the API is ended regardless (open SSE
/// streams, a request that hangs).
const EXIT_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the API until Ctrl-C / SIGTERM.
pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let verifier = system::verifier(&args.auth)?;
    let broker = system::connect_broker(&args.nats, "jobstream-api").await?;
    let db = system::connect_db_migrated(&args.db.url()).await?;
    let parts = ApiParts {
        nats: &args.nats,
        files: &args.files,
        catalogue: &args.catalogue,
        readiness: &args.readiness,
        open_registration: args.open_registration,
        console_secret: args.console_secret.as_ref(),
    };
    let state = system::api_state(broker, db, verifier, parts).await?;
    let exporter = state.metrics.clone();
    let app = App::build(args.listen.addr(), state).await?;
    let shutdown = jobstream_core::shutdown::token_on_signal();
    system::serve_metrics(&args.metrics, exporter, &shutdown).await?;
    // The server drains on its own; this is the backstop.
    jobstream_core::shutdown::exit_at_the_latest(&shutdown, EXIT_WITHIN, "api");
    app.run_until_stopped(shutdown).await?;
    Ok(())
}
