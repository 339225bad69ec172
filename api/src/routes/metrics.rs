//! `GET /metrics`: the process's Prometheus text, and the same endpoint served alone
//! for the worker and projector roles (`--metrics-addr`).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use jobstream_core::metrics::Exporter;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics` on the API port.
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/metrics",
        get(|State(state): State<AppState>| render(state.metrics.clone())),
    )
}

async fn render(exporter: Exporter) -> impl IntoResponse {
    ([(CONTENT_TYPE, TEXT_FORMAT)], exporter.render().await)
}

/// The endpoint of a role without an API (worker, projector), bound to its address.
pub struct MetricsServer {
    listener: TcpListener,
    exporter: Exporter,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, exporter: Exporter) -> std::io::Result<Self> {
        Ok(MetricsServer {
            listener: TcpListener::bind(addr).await?,
            exporter,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `GET /metrics` until `shutdown` is cancelled.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        tracing::info!(addr = %self.local_addr()?, "metrics listening");
        let exporter = self.exporter;
        let app = Router::new().route("/metrics", get(move || render(exporter.clone())));
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}
