//! SQS settlement for both runners of [sqs-worker]: the poller and the
//! Lambda adapter apply the engine's outcomes through this crate, so what a
//! user sees in SQS (and in the dead-letter queue) is the same whichever
//! runner handled the message.
//!
//! - [`mod@classify`]: what an SDK error means ([`Class`]: retry it, back off
//!   longer, or stop), per-entry `Failed` codes, error text fit for logs;
//! - [`batch`]: one `DeleteMessageBatch` and one
//!   `ChangeMessageVisibilityBatch` call (at most 10 entries) with per-entry
//!   retry of transient failures, returning a result per entry;
//! - [`dead_letter`]: the dead-letter send and its attribute schema (one set
//!   of `SqsWorker.*` names, one rule for what fits);
//! - [`RequestCounter`]: an interceptor counting every HTTP attempt.
//!
//! Each runner keeps its own shape around these calls: the poller coalesces
//! settlements into batches on a flush interval, Lambda settles once per
//! invocation before its deadline. Counting and reporting stay with the
//! runner; this crate returns what happened.
//!
//! [sqs-worker]: https://docs.rs/sqs-worker

pub mod batch;
pub mod classify;
mod counter;
pub mod dead_letter;

pub use self::batch::{BatchCall, BatchResult, EntryFailure, visibility_seconds};
pub use self::classify::{Class, Described, SetupProblem, classify, describe, redact};
pub use self::counter::RequestCounter;
