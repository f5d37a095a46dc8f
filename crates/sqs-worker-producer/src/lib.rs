//! The sending side of [sqs-worker]: a typed Amazon SQS producer, and
//! payloads beyond SQS's limit through S3, compatible with the Amazon SQS
//! Extended Client (feature `large-payloads`).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use sqs_worker_producer::{Outgoing, Sender};
//!
//! #[derive(serde::Serialize)]
//! struct Order { order_id: u64 }
//!
//! let sender = Sender::from_env().await?; // SQS_QUEUE_URL or SQS_QUEUE_NAME
//! sender.send(&Order { order_id: 1 }).await?;
//! sender
//!     .send_message(Outgoing::json(&Order { order_id: 2 })?.delay(Duration::from_secs(60)))
//!     .await?;
//!
//! // Many at once: 10 per request and at most 1 MiB per request, one result each.
//! let orders = (3..1000).map(|id| Outgoing::json(&Order { order_id: id }));
//! for result in sender.send_batch(orders.collect::<Result<Vec<_>, _>>()?).await {
//!     result?;
//! }
//!
//! // One by one from many tasks, coalesced into batch requests.
//! let coalescer = sender.coalescing(Duration::from_millis(10));
//! let accepted = coalescer.enqueue(Outgoing::json(&Order { order_id: 1000 })?).await;
//! accepted.await?; // SQS accepted it
//! coalescer.close().await;
//! # Ok(()) }
//! ```
//!
//! - FIFO queues: every message needs a group id ([`SendError::MissingGroupId`]
//!   otherwise); deduplication ids are the caller's, derived per message from
//!   a caller key and the body, or left to the queue when it has content-based
//!   deduplication (read once from the queue's attributes).
//! - A group id on a standard queue is sent: it labels the tenant of a fair
//!   queue.
//! - Delays up to 900 s; beyond, [`SendError::DelayTooLong`] (use Amazon
//!   EventBridge Scheduler).
//! - The current trace context goes out as a W3C `traceparent` message
//!   attribute and X-Ray's `AWSTraceHeader` ([`set_trace_hook`]).
//!
//! [sqs-worker]: https://docs.rs/sqs-worker
#![cfg_attr(docsrs, feature(doc_cfg))]

mod batch;

mod coalesce;
mod error;
mod outgoing;
#[cfg(feature = "large-payloads")]
#[cfg_attr(docsrs, doc(cfg(feature = "large-payloads")))]
pub mod payload;
mod sender;
mod trace;

pub use self::batch::{MAX_BATCH_ENTRIES, MAX_REQUEST_SIZE, Sent};
pub use self::coalesce::{Coalescer, Pending};
pub use self::error::{SendError, SetupError};
pub use self::outgoing::{MAX_DELAY, Outgoing};
pub use self::sender::Sender;
pub use self::trace::{TraceContext, TraceHook, set_trace_hook};
