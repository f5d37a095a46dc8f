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
//! async fn main() -> Result<(), sqs_worker::RunError> {
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

pub mod telemetry;

mod run;
pub use self::run::RunError;
#[cfg(any(feature = "poller", feature = "lambda"))]
pub use self::run::run;
