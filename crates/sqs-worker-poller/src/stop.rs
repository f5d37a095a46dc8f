//! The stop signal every stage watches: a `watch` channel that turns true
//! once (shutdown signal, idle exit, or a receive error that ends the run).

use tokio::sync::watch;

/// Resolves once `stop` is true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
