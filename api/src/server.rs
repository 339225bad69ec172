//! The router and the server around it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::http::request_id::REQUEST_ID;
use crate::routes::{
    admin_replay, batch, events, files, health, job_actions, job_events, jobs, kinds, schedules,
};
use crate::state::AppState;

/// The whole API as a `Router`: pure, so tests can drive it with `oneshot`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(jobs::router())
        .merge(batch::router())
        .merge(schedules::router())
        .merge(crate::routes::users::router())
        .merge(kinds::router())
        .merge(files::router())
        .merge(job_actions::router())
        .merge(crate::routes::queues::router())
        .merge(crate::routes::workflows::router())
        .merge(events::router())
        .merge(job_events::router())
        .merge(admin_replay::router())
        .merge(crate::routes::admin_verify::router())
        .merge(crate::routes::admin_rejected::router())
        .merge(crate::openapi::router())
        .merge(crate::routes::metrics::router())
        .merge(crate::ui::router())
        .merge(crate::openapi::docs())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .with_state(state)
        // Outside the routes, so it sees each request's matched route (and 404s as `unmatched`).
        .layer(axum::middleware::from_fn(crate::http::metrics::track))
        // One body limit for every extractor; larger bodies are a 413 problem.
        .layer(axum::extract::DefaultBodyLimit::max(
            jobstream_core::limits::MAX_BODY_BYTES,
        ))
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    // The path only, never the query string: it may carry a single-use SSE ticket.
                    TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                        let request_id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id, sub = tracing::field::Empty, trace_id = tracing::field::Empty)
                    }),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                // Inside the request span and outside every other layer: whatever answers
                // an error (a route, an extractor, axum's 405, the timeout), it is problem+json.
                .layer(axum::middleware::from_fn(crate::error::problem_fallback))
                .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, Duration::from_secs(60))),
        )
}

/// The API bound to its listener, ready to serve.
pub struct App {
    listener: TcpListener,
    router: Router,
    live: crate::live::EventHub,
}

impl App {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn build(addr: SocketAddr, state: AppState) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(App {
            listener,
            live: state.live.clone(),
            router: app(state),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        tracing::info!(addr = %self.local_addr()?, "api listening");
        let live = self.live;
        // Without TCP_NODELAY (axum leaves it off) an SSE event written while the previous
        // one is unacknowledged waits for the client's delayed ACK: tens of ms per event.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set on an accepted connection");
            }
        });
        axum::serve(listener, self.router)
            .with_graceful_shutdown(async move {
                shutdown.cancelled().await;
                // End open SSE streams and waits, or draining would wait for them forever.
                live.close();
            })
            .await
    }
}
