//! The AWS Lambda SQS event adapter of [sqs-worker]: the same handler as the
//! long-poll consumer, behind an SQS event source mapping with
//! `FunctionResponseTypes: [ReportBatchItemFailures]`.
//!
//! ```no_run
//! use sqs_worker_core::{Error, Json};
//!
//! #[derive(serde::Deserialize)]
//! struct Order { order_id: u64 }
//!
//! async fn handle(Json(order): Json<Order>) -> Result<(), Error> {
//!     let _ = order.order_id;
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), sqs_worker_core::BoxError> {
//!     sqs_worker_lambda::run(handle).await
//! }
//! ```
//!
//! The data path: the `SqsEvent`'s records become [`Message`]s (every system
//! attribute and message attribute, typed; strings moved, not copied), the
//! engine runs them with the invocation deadline minus a safety margin, and
//! the answer is an `SqsBatchResponse` whose `batchItemFailures` lists every
//! failed and unstarted record (see [`LambdaService`] for the exact rules).
//! [`run`] deserializes the invocation straight into what the messages keep
//! ([`SqsPayload::from_json`], from the payload's raw JSON, without the
//! runtime's path tracking); what that saves is measured in `BENCHMARKS.md`.
//!
//! ## With an SQS client (feature `sqs-client`)
//!
//! Lambda's event source mapping deletes what the function does not report
//! and leaves reported records invisible until the queue's visibility timeout
//! ends. With an SQS client ([`LambdaRunner::sqs_client`], or the default
//! one [`LambdaRunner::run`] loads) the adapter does better:
//! - a permanent failure is sent to the dead-letter queue
//!   (`SQS_WORKER_DLQ_URL`) with its body, message attributes, trace header
//!   and the error as attributes ([`dead_letter`], the poller's schema), and once sent is
//!   not reported, so Lambda deletes it; if the send fails it is reported;
//! - every reported record gets its retry delay from the retry policy as a
//!   `ChangeMessageVisibilityBatch` (per queue, 10 per call, every failed
//!   entry looked at, transient ones retried once), so it comes back after
//!   seconds growing with its receive count instead of after the whole
//!   visibility timeout; records that never ran come back at once; a failed
//!   call is logged and the record is still reported;
//! - handlers can extend their message's visibility
//!   ([`Message::extend_visibility`]).
//!
//! The queue URL comes from the record's `eventSourceARN`
//! ([`queue_url_from_arn`]). All of it ends before the invocation deadline:
//! whatever is unfinished then is reported (a record may reach the DLQ twice,
//! never zero times). Without a client, permanent failures are reported and
//! the queue's redrive policy applies.
//!
//! [`testing`] has builders for events, records and messages and assertions
//! on the response, for unit tests of handlers without AWS.
//!
//! [sqs-worker]: https://docs.rs/sqs-worker
//! [`Message`]: sqs_worker_core::Message
//! [`Message::extend_visibility`]: sqs_worker_core::Message::extend_visibility

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "sqs-client")]
mod client;
mod env;
mod flow;
mod pace;
mod payload;
mod record;
#[cfg(feature = "sqs-client")]
mod redrive;
mod runner;
mod service;
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use self::payload::SqsPayload;
pub use self::record::{EventError, SQS_EVENT_SOURCE, message_from_record, queue_url_from_arn};
pub use self::runner::{LambdaRunner, MAX_SAFETY_MARGIN, engine_config_from_env};
pub use self::service::{DEFAULT_SAFETY_MARGIN, LambdaService};
pub use sqs_worker_core::config::ConfigError;
#[cfg(feature = "sqs-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqs-client")))]
pub use sqs_worker_sqs::dead_letter;

pub use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
pub use lambda_runtime::{Context, LambdaEvent};

use sqs_worker_core::{BoxError, IntoHandler};

/// Runs `handler` as a Lambda function behind an SQS event source mapping,
/// configured from the environment ([`LambdaRunner::from_env`]:
/// `SQS_WORKER_CONCURRENCY`, `SQS_WORKER_SAFETY_MARGIN_SECONDS`, and with the
/// `sqs-client` feature `SQS_WORKER_DLQ_URL` and `SQS_WORKER_BACKOFF`), with
/// [`Execution::Inline`](sqs_worker_core::Execution::Inline). The same shape
/// as `sqs_worker_poller::run`.
///
/// Installs the Lambda runtime's default `tracing` subscriber when none is
/// set. Returns an error naming the variable when the configuration is
/// invalid, before the first invocation.
pub async fn run<A, H: IntoHandler<A>>(handler: H) -> Result<(), BoxError> {
    runner::init_logs();
    LambdaRunner::from_env(handler)?.run().await
}
