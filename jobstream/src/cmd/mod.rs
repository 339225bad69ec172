//! One file per subcommand.

pub mod api;
pub mod bench;
pub mod bench_sse;
pub mod client;
pub mod dev;
pub mod migrate;
pub mod projector;
pub mod replay;
pub mod seed;
pub mod token;
pub mod verify;
pub mod worker;

use crate::cli::{Cli, Command};

/// Runs a long-lived role on a worker thread of the runtime. `main`'s own future is
/// polled by `block_on` on the main thread, so a loop awaited there (the worker's and
/// the projector's main loops) was woken across threads, a futex wake, at every message.
async fn on_worker_thread(
    role: impl Future<Output = anyhow::Result<()>> + Send + 'static,
) -> anyhow::Result<()> {
    match tokio::spawn(role).await {
        Ok(result) => result,
        Err(e) => Err(anyhow::anyhow!("stopped abnormally: {e}")),
    }
}

/// Runs the chosen subcommand.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev(a) => on_worker_thread(dev::run(*a)).await,
        Command::Api(a) => on_worker_thread(api::run(a)).await,
        Command::Worker(a) => on_worker_thread(worker::run(a)).await,
        Command::Projector(a) => on_worker_thread(projector::run(a)).await,
        Command::Migrate(a) => migrate::run(a).await,
        Command::Token(a) => token::run(&a),
        Command::Bench(a) => on_worker_thread(bench::run(a)).await,
        Command::Seed(a) => seed::run(a).await,
        Command::Replay(a) => replay::run(a).await,
        Command::Verify(a) => verify::run(a).await,
        Command::BenchSse(a) => bench_sse::run(a).await,
        Command::Jobs(a) => client::jobs(a).await,
        Command::Queues(a) => client::queues(a).await,
        Command::Workers(a) => client::workers(a).await,
    }
}
