//! The runner-neutral core of [sqs-worker]: [`Message`], [`Handler`],
//! [`Error`], the [`RetryPolicy`] and [`idempotency`], with no AWS SDK.
//!
//! The crate root is what handler authors use. Runners (the long-poll
//! consumer, the Lambda adapter, your own) only translate: SQS messages or a
//! Lambda event in, the engine's settled outcomes out, as deletes, visibility
//! changes or `batchItemFailures`; what they use is in [`runner`]. Everything
//! that decides what success means lives here.
//!
//! ```
//! use sqs_worker_core::runner::{Engine, Processor};
//! use sqs_worker_core::{Error, Json, Message};
//!
//! #[derive(serde::Deserialize)]
//! struct Order { order_id: u64 }
//!
//! async fn handle(Json(order): Json<Order>) -> Result<(), Error> {
//!     if order.order_id == 0 { return Err(Error::msg("no such order")); }
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let engine = Engine::new(handle);
//! let batch = vec![
//!     Message::builder("a", r#"{"order_id": 1}"#).build(),
//!     Message::builder("b", r#"{"order_id": 0}"#).build(),
//!     Message::builder("c", "not json").build(),
//! ];
//! let report = engine.run(batch, None).await;
//! assert_eq!(report.failed_ids(), ["b", "c"]);
//! # }
//! ```
//!
//! [sqs-worker]: https://docs.rs/sqs-worker

#![cfg_attr(docsrs, feature(doc_cfg))]

mod batch;
pub mod config;
mod engine;
mod error;
pub mod flow;
mod handler;
pub mod idempotency;
mod json;
mod message;
mod retry;
pub mod runner;
mod visibility;

pub use self::batch::{BatchHandler, BatchResults};
pub use self::engine::{EngineConfig, Execution};
pub use self::error::{Action, BoxError, Error, ResultExt};
pub use self::flow::RetryBudget;
pub use self::handler::{FnHandler, Handler, IntoHandler, handler_fn};
pub use self::json::{DecodeError, Json};
pub use self::message::{
    AttributeValue, Message, MessageAttribute, MessageAttributes, MessageBuilder, PayloadOrigin,
    SystemAttributes,
};
pub use self::retry::{ExponentialBackoff, FixedDelay, Jitter, RetryPolicy};
pub use self::visibility::{MAX_VISIBILITY_TIMEOUT, Visibility, VisibilityError};

// Envelopes (SNS, EventBridge, S3) as handler arguments, and the router.
mod envelope;
mod extract;
mod router;
pub use self::envelope::{EventBridge, S3Event, S3Record, Sns, SnsDelivery};
pub use self::extract::{AckReason, Extracted, FromMessage};
pub use self::router::{RouteError, Router, TypeSource};

/// The SQS limit on a message body: 1 MiB (since 2025).
pub const MAX_MESSAGE_SIZE: usize = 1024 * 1024;
