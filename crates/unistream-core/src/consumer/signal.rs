//! Graceful stop on a signal.

use tokio_util::sync::CancellationToken;
use tracing::info;

/// Cancels `token` on Ctrl-C (SIGINT), for a graceful stop of `run`.
pub fn cancel_on_ctrl_c(token: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            info!("Ctrl-C: stopping after the record in hand");
            token.cancel();
        }
    });
}
