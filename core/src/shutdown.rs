//! One shutdown signal for every process: Ctrl-C or SIGTERM cancels a token; a
//! second one ends the process at once, and [`exit_at_the_latest`] bounds how long
//! a graceful shutdown may take.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Waits for Ctrl-C or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// A token cancelled when the process receives Ctrl-C or SIGTERM. A second signal
/// exits at once (status 130), for an operator who will not wait for the grace period.
pub fn token_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        signal().await;
        tracing::info!("shutdown requested (a second Ctrl-C or SIGTERM stops at once)");
        t.cancel();
        signal().await;
        tracing::warn!("second shutdown request: exiting now");
        std::process::exit(130);
    });
    token
}

/// Ends the process (status 1, logged) if it is still running `bound` after `token`
/// is cancelled: the last resort of a graceful shutdown stuck on something outside
/// the process, such as a NATS server or database stopped at the same moment. The
/// timer runs on its own thread, so a stuck runtime cannot hold it up.
pub fn exit_at_the_latest(token: &CancellationToken, bound: Duration, process: &'static str) {
    let token = token.clone();
    tokio::spawn(async move {
        token.cancelled().await;
        std::thread::spawn(move || {
            std::thread::sleep(bound);
            tracing::error!(
                process,
                bound_ms = bound.as_millis() as u64,
                "graceful shutdown did not finish in time: exiting"
            );
            std::process::exit(1);
        });
    });
}
