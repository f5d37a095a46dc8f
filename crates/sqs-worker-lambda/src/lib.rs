//! AWS Lambda SQS event adapter for sqs-worker (work in progress).

use sqs_worker_core::{BoxError, IntoHandler};

/// Runs `handler` as a Lambda function behind an SQS event source mapping,
/// configured from the environment.
pub async fn run<A, H: IntoHandler<A>>(handler: H) -> Result<(), BoxError> {
    let _ = handler.into_handler();
    Err("the Lambda adapter is not built yet".into())
}
