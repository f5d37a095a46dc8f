//! Long-poll SQS runner for sqs-worker (work in progress).

use sqs_worker_core::{BoxError, IntoHandler};

/// Runs `handler` as a long-poll consumer configured from the environment
/// (`SQS_QUEUE_URL`, …) until SIGTERM/SIGINT.
pub async fn run_from_env<A, H: IntoHandler<A>>(handler: H) -> Result<(), BoxError> {
    let _ = handler.into_handler();
    Err("the poller is not built yet".into())
}
