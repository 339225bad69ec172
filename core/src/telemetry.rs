//! Structured logs: one subscriber per process, JSON or pretty, filtered by `RUST_LOG`.

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

/// A sink for tests: lines go through the test harness's captured output, shown
/// only for a failing test (plain stderr would bypass the capture).
pub fn test_writer() -> tracing_subscriber::fmt::TestWriter {
    tracing_subscriber::fmt::TestWriter::new()
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (development).
    Pretty,
    /// One JSON object per line (production, log shippers).
    Json,
}

/// Installs the global tracing subscriber; `default_filter` applies when `RUST_LOG` is unset.
///
/// Calling it twice is harmless (the second call is ignored), so tests may call it freely.
pub fn init<W>(default_filter: &str, format: LogFormat, sink: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
