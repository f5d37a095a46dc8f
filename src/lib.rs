//! **sqs-worker**: Amazon SQS queue workers in Rust. Write one [`Handler`]
//! (a plain `async fn` works); run it unchanged as an AWS Lambda function
//! behind an SQS event source mapping or as a long-poll consumer on ECS, EC2
//! or anywhere.
//!
//! ```no_run
//! use sqs_worker::{Error, Json};
//!
//! #[derive(serde::Deserialize)]
//! struct Order { order_id: u64, customer: String, amount_cents: u64 }
//!
//! async fn handle(Json(order): Json<Order>) -> Result<(), Error> {
//!     let _ = (order.order_id, order.customer, order.amount_cents);
//!     Ok(()) // any `?` error is retried with backoff
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), sqs_worker::BoxError> {
//!     // Lambda if AWS_LAMBDA_RUNTIME_API is set, else a poller on SQS_QUEUE_URL.
//!     sqs_worker::run(handle).await
//! }
//! ```
//!
//! Features: `poller` and `lambda` (default) bring the two runners,
//! `dynamodb` the DynamoDB idempotency store, `full` all of them.

#[doc(inline)]
pub use sqs_worker_core::*;

/// The long-poll runner (feature `poller`).
#[cfg(feature = "poller")]
#[doc(inline)]
pub use sqs_worker_poller as poller;

/// The Lambda SQS event adapter (feature `lambda`).
#[cfg(feature = "lambda")]
#[doc(inline)]
pub use sqs_worker_lambda as lambda;

/// The DynamoDB idempotency store (feature `dynamodb`).
#[cfg(feature = "dynamodb")]
#[doc(inline)]
pub use sqs_worker_dynamodb as dynamodb;

/// The typed producer, and large payloads through S3 (features `producer`,
/// `large-payloads`).
#[cfg(feature = "producer")]
#[doc(inline)]
pub use sqs_worker_producer as producer;

pub mod telemetry;

/// Runs `handler` with the runner the environment asks for: the Lambda
/// adapter when `AWS_LAMBDA_RUNTIME_API` is set (feature `lambda`), otherwise
/// the long-poll consumer configured from `SQS_QUEUE_URL` and friends
/// (feature `poller`).
///
/// It first sets up logs and metrics with [`telemetry::init`] (leaving any
/// subscriber or recorder you installed alone); the poller also serves
/// `/metrics` and `/healthz` when `SQS_WORKER_METRICS_ADDR` is set.
///
/// Errors come back as a [`RunError`], whose `Debug` is the readable cause
/// chain: a `main` that returns it prints a sentence, not SDK internals.
#[cfg(any(feature = "poller", feature = "lambda"))]
pub async fn run<A, H: IntoHandler<A>>(handler: H) -> Result<(), BoxError> {
    run_inner(handler)
        .await
        .map_err(|e| Box::new(RunError(e)) as BoxError)
}

/// An error from [`run`]: `Display` is the error, `Debug` the error and its
/// causes, one per line (what `main` prints when it returns the error).
pub struct RunError(BoxError);

impl RunError {
    /// The underlying error.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::fmt::Debug for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        if source.is_some() {
            f.write_str("\n\nCaused by:")?;
        }
        while let Some(e) = source {
            write!(f, "\n    {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

#[cfg(any(feature = "poller", feature = "lambda"))]
async fn run_inner<A, H: IntoHandler<A>>(handler: H) -> Result<(), BoxError> {
    telemetry::init()?;
    #[cfg(feature = "lambda")]
    if telemetry::in_lambda() {
        return sqs_worker_lambda::run(handler).await;
    }
    #[cfg(feature = "poller")]
    {
        let _metrics = telemetry::serve_metrics_from_env().await?;
        sqs_worker_poller::run_from_env(handler).await
    }
    #[cfg(not(feature = "poller"))]
    {
        let _ = handler;
        Err(
            "AWS_LAMBDA_RUNTIME_API is not set and the `poller` feature is off: \
             this binary can only run inside AWS Lambda"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Inner;
    impl std::fmt::Display for Inner {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the queue does not exist")
        }
    }
    impl std::error::Error for Inner {}

    #[derive(Debug)]
    struct Outer(Inner);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("start-up failed")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn run_errors_debug_as_a_readable_chain() {
        let e: BoxError = Box::new(RunError(Box::new(Outer(Inner))));
        assert_eq!(
            format!("{e:?}"),
            "start-up failed\n\nCaused by:\n    the queue does not exist"
        );
        assert_eq!(e.to_string(), "start-up failed");
    }
}
