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
//! `lambda-sqs-client` the Lambda adapter's SQS client (dead-letter queue,
//! backoff, visibility extension in Lambda), `dynamodb` the DynamoDB
//! idempotency store, `telemetry` (default) the log and metrics setup `run`
//! performs, `opentelemetry` the producer-trace link, `full` all of them.
//!
//! The root is the handler author's API. Writing a runner of your own (or
//! driving the engine directly)? The runner interface is
//! [`sqs_worker_core::runner`]: add the `sqs-worker-core` crate.

#![cfg_attr(docsrs, feature(doc_cfg))]

// The user API, by name: what handler authors use. Runner authors use
// `sqs_worker_core::runner` (the engine, settlement outcomes, spans, health).
#[doc(inline)]
pub use sqs_worker_core::{
    Action, AttributeValue, BatchHandler, BatchResults, BoxError, DecodeError, EngineConfig, Error,
    Execution, ExponentialBackoff, FixedDelay, FnHandler, Handler, IntoHandler, Jitter, Json,
    MAX_MESSAGE_SIZE, MAX_VISIBILITY_TIMEOUT, Message, MessageAttribute, MessageAttributes,
    MessageBuilder, PayloadOrigin, ResultExt, RetryPolicy, SystemAttributes, Visibility,
    VisibilityError, config, flow, handler_fn, idempotency,
};

// Envelopes (SNS, EventBridge, S3) as handler arguments, and the router.
#[doc(inline)]
pub use sqs_worker_core::{
    AckReason, EventBridge, Extracted, FromMessage, RouteError, Router, S3Event, S3Record, Sns,
    SnsDelivery, TypeSource,
};

/// The long-poll runner (feature `poller`).
#[cfg(feature = "poller")]
#[cfg_attr(docsrs, doc(cfg(feature = "poller")))]
#[doc(inline)]
pub use sqs_worker_poller as poller;

/// The Lambda SQS event adapter (feature `lambda`).
#[cfg(feature = "lambda")]
#[cfg_attr(docsrs, doc(cfg(feature = "lambda")))]
#[doc(inline)]
pub use sqs_worker_lambda as lambda;

/// The DynamoDB idempotency store (feature `dynamodb`).
#[cfg(feature = "dynamodb")]
#[cfg_attr(docsrs, doc(cfg(feature = "dynamodb")))]
#[doc(inline)]
pub use sqs_worker_dynamodb as dynamodb;

/// The typed producer, and large payloads through S3 (features `producer`,
/// `large-payloads`).
#[cfg(feature = "producer")]
#[cfg_attr(docsrs, doc(cfg(feature = "producer")))]
#[doc(inline)]
pub use sqs_worker_producer as producer;

#[cfg(feature = "telemetry")]
#[cfg_attr(docsrs, doc(cfg(feature = "telemetry")))]
pub mod telemetry;

/// Without the `telemetry` feature `run` sets up nothing: the application's
/// own subscriber and recorder (if any) stay in charge.
#[cfg(all(
    not(feature = "telemetry"),
    any(feature = "poller", feature = "lambda")
))]
mod telemetry {
    use sqs_worker_core::config::ConfigError;

    /// Nothing to set up.
    pub(crate) fn init() -> Result<(), ConfigError> {
        Ok(())
    }

    /// Whether this process runs inside AWS Lambda.
    #[cfg(feature = "lambda")]
    pub(crate) fn in_lambda() -> bool {
        std::env::var_os(sqs_worker_core::config::var::LAMBDA_RUNTIME_API).is_some()
    }

    /// No metrics endpoint without `telemetry`.
    #[cfg(feature = "poller")]
    pub(crate) async fn serve_metrics_from_env() -> Result<Option<()>, crate::BoxError> {
        Ok(None)
    }
}

mod run;
pub use self::run::RunError;
#[cfg(any(feature = "poller", feature = "lambda"))]
pub use self::run::run;

/// The README's Rust blocks, compiled (and run unless `no_run`) as doc tests
/// by `cargo test --all-features`: its snippets use every feature.
#[cfg(all(doctest, feature = "full"))]
#[doc = include_str!("../README.md")]
mod readme {}
