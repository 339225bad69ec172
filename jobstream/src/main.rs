//! `jobstream <command>`: see `jobstream --help`.

use clap::Parser;
use jobstream::cli::Cli;

/// mimalloc instead of glibc's malloc: the projector spent about a sixth of its CPU in
/// glibc's allocator (`_int_malloc`, `malloc_consolidate`, `unlink_chunk`), as sea-orm
/// and serde build and drop many small values per event.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    jobstream_core::telemetry::init(cli.default_log_filter(), cli.log_format(), std::io::stderr);
    let result = jobstream::cmd::run(cli).await;
    // The last batch of spans, if they are exported.
    jobstream_core::telemetry::shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, the whole cause chain, non-zero exit.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
