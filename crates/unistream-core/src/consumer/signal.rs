//! Graceful stop on a signal: SIGTERM (what systemd, Kubernetes, ECS and
//! `docker stop` send) or SIGINT (Ctrl-C).

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Cancels `token` on SIGTERM or SIGINT (Ctrl-C), for a graceful stop of
/// `run`: records in hand are finished or checkpointed and leases released.
/// A second signal exits the process at once (status 130), for an operator
/// who does not want to wait. Needs a tokio runtime.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let token = unistream_core::CancellationToken::new();
/// unistream_core::consumer::cancel_on_signals(token.clone());
/// // consumer.with_shutdown(token) … consumer.run().await
/// # }
/// ```
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let name = next_signal().await;
        info!(
            signal = name,
            "stopping gracefully: records in hand are finished or checkpointed (a second signal exits at once)"
        );
        token.cancel();
        let name = next_signal().await;
        warn!(signal = name, "second signal: exiting at once");
        std::process::exit(130);
    });
}

/// Waits for SIGTERM or SIGINT; returns its name.
#[cfg(unix)]
async fn next_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        },
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

/// Waits for Ctrl-C.
#[cfg(not(unix))]
async fn next_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}
