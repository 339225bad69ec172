//! Structured logs: one subscriber per process, JSON or pretty, filtered by `RUST_LOG`;
//! with `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are also exported over OTLP/HTTP.

use std::sync::OnceLock;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId as OtelTraceId, TraceState,
    TracerProvider as _,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    EnvFilter, fmt::MakeWriter, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

use crate::trace::TraceParent;

/// Where spans go (OTLP/HTTP, protobuf; `/v1/traces` is appended). Unset: no exporter.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The process's span exporter, when [`OTLP_ENDPOINT_ENV`] is set.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

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
/// With [`OTLP_ENDPOINT_ENV`] set, the spans that pass the filter are exported too (batched
/// on a background thread; `OTEL_BSP_*` and `OTEL_EXPORTER_OTLP_*` variables apply), and
/// [`shutdown`] flushes them at exit.
///
/// Calling it twice is harmless (the second call is ignored), so tests may call it freely.
pub fn init<W>(default_filter: &str, format: LogFormat, sink: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let (provider, otlp_error) = match otlp_provider() {
        Ok(p) => (p, None),
        Err(e) => (None, Some(e)),
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("jobstream")));
    // Colour codes only for a person at a terminal: not in files, pipes or log collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(sink)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let installed = match format {
        LogFormat::Json => registry
            .with(fmt.json().flatten_event(true).with_current_span(true))
            .try_init(),
        LogFormat::Pretty => registry.with(fmt.compact()).try_init(),
    };
    match (installed, provider) {
        (Ok(()), Some(p)) => {
            let _ = PROVIDER.set(p);
        }
        // A subscriber was already installed: this exporter would never see a span.
        (Err(_), Some(p)) => {
            let _ = p.shutdown();
        }
        (_, None) => {}
    }
    if let Some(e) = otlp_error {
        tracing::warn!(error = %e, "OTLP span export is off: the exporter could not be built");
    }
}

/// The OTLP exporter's provider, `None` without [`OTLP_ENDPOINT_ENV`].
fn otlp_provider() -> Result<Option<SdkTracerProvider>, opentelemetry_otlp::ExporterBuildError> {
    if std::env::var(OTLP_ENDPOINT_ENV).map_or(true, |v| v.trim().is_empty()) {
        return Ok(None);
    }
    // The endpoint and its options are read from the OTEL_EXPORTER_OTLP_* variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    // `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` name the service; else `jobstream`.
    let detected = opentelemetry_sdk::Resource::builder().build();
    let unnamed = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_none_or(|v| v.as_str().starts_with("unknown_service"));
    let resource = if unnamed {
        opentelemetry_sdk::Resource::builder()
            .with_service_name("jobstream")
            .build()
    } else {
        detected
    };
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}

/// Whether spans are exported (so a span made only for the export is worth making).
pub fn exporting() -> bool {
    PROVIDER.get().is_some()
}

/// Puts `span` in the job's trace for the export: its OpenTelemetry parent becomes the
/// remote span of `parent` (the job's `traceparent`). Call it before the span is first
/// entered; without an exporter it does nothing.
pub fn join_trace(span: &tracing::Span, parent: &TraceParent) {
    if !exporting() {
        return;
    }
    let remote = SpanContext::new(
        OtelTraceId::from_bytes(parent.trace_id_bytes()),
        SpanId::from_bytes(parent.span_id_bytes()),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    // Refused only for a span already started or disabled by the filter: it keeps its own trace.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// Flushes and stops the span exporter (at process exit); a no-op without one.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.shutdown()
    {
        eprintln!("OTLP span export: shutdown: {e}");
    }
}
