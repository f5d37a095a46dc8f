//! The long-poll runner of [sqs-worker]: a consumer for ECS, EC2 or
//! anywhere, on `aws-sdk-sqs`. It drives the core engine and adds no
//! processing rules of its own; it receives, and it settles.
//!
//! ```no_run
//! use sqs_worker_core::{Error, Json};
//! use sqs_worker_poller::Poller;
//!
//! #[derive(serde::Deserialize)]
//! struct Order { order_id: u64 }
//!
//! async fn handle(Json(order): Json<Order>) -> Result<(), Error> {
//!     let _ = order.order_id;
//!     Ok(())
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Settings from SQS_QUEUE_URL, SQS_WORKER_*; runs until SIGTERM/SIGINT.
//! let summary = Poller::from_env(handle)?.build()?.run().await?;
//! println!("{summary}");
//! # Ok(()) }
//! ```
//!
//! The data path, one module per stage:
//! - `gather`, `ahead`: what a receive may ask for: free handler slots, and
//!   on a standard queue what is expected to start soon (received ahead,
//!   leased, started by the starter task as slots free); a lease per
//!   message bounds everything received and not yet settled;
//! - `receive`: receive loops long-poll for that many messages and hand
//!   those with a slot to the engine as one batch task; the in-flight limit
//!   and credentials failing after start-up are backed off, not fatal;
//! - `lease`: the one owner of in-flight messages; the heartbeat extends
//!   messages nearing their visibility deadline with
//!   `ChangeMessageVisibilityBatch`, up to each handler's start + the
//!   maximum processing time (a message not started yet is kept invisible);
//! - `fifo`: each batch task; a failed FIFO head and the rest of its group
//!   stay leased while the head is retried in the process (its followers
//!   are not received again), and an exhausted head goes to the dead-letter
//!   queue (the configured one, else the redrive policy's);
//! - `handoff`: each settled message leaves the table, frees its handler
//!   slot, and is queued for settlement with its lease, held until its SQS
//!   call is sent;
//! - `settle`: deletes and visibility changes (the failure's retry delay)
//!   coalesce into batches of up to 10; permanent failures go to the
//!   dead-letter queue when one is configured ([`dead_letter`]: the attributes
//!   it adds, the same as Lambda's); every per-entry failure is checked;
//! - `run`: start-up checks, receiving, and wind-down: stop receiving (the
//!   receive in flight finishes, within the wait time, and what it brings is
//!   released at once), let in-flight messages finish within the grace
//!   period, release the rest with visibility 0, flush.
//!
//! [sqs-worker]: https://docs.rs/sqs-worker

#![cfg_attr(docsrs, feature(doc_cfg))]

mod ahead;
mod check;
mod clients;
mod config;
mod env;
mod error;
mod fifo;
mod flow;
mod gather;
mod handoff;
mod inflight;
mod limits;
mod monitor;
mod protection;
mod receive;
mod redrive;
mod run;
mod settle;
mod stats;
mod stop;
mod tenant;

pub use self::ahead::DEFAULT_RECEIVE_AHEAD;
pub use self::config::{
    DEFAULT_CONCURRENCY, DEFAULT_GRACE_PERIOD, DEFAULT_MAX_PROCESSING_TIME, DEFAULT_WAIT_TIME,
    PollerBuilder, Queue,
};
pub use self::error::PollerError;
pub use self::protection::{DEFAULT_PROTECTION_EXPIRY, DEFAULT_PROTECTION_IDLE, ScaleInProtection};
pub use self::run::Poller;
pub use self::stats::RunSummary;
pub use sqs_worker_core::config::ConfigError;
pub use sqs_worker_sqs::dead_letter;

use sqs_worker_core::IntoHandler;

/// Runs `handler` as a long-poll consumer configured from the environment
/// ([`Poller::from_env`]: `SQS_QUEUE_URL`, `SQS_WORKER_*`) until
/// SIGTERM/SIGINT. The same shape as `sqs_worker_lambda::run`.
pub async fn run<A, H: IntoHandler<A>>(handler: H) -> Result<(), PollerError> {
    Poller::from_env(handler.into_handler())?
        .build()?
        .run()
        .await
        .map(drop)
}

/// The former name of [`run`].
#[deprecated(
    since = "0.2.0",
    note = "renamed `run`, the same name as the Lambda runner's"
)]
pub async fn run_from_env<A, H: IntoHandler<A>>(handler: H) -> Result<(), PollerError> {
    run(handler).await
}
