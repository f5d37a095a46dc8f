//! The dead-letter attributes the runners add to a message they dead-letter.
//!
//! This module MIRRORS `sqs_worker_sqs::dead_letter` (the settlement crate,
//! not merged yet): when it is, replace these constants with
//! `pub(crate) use sqs_worker_sqs::dead_letter::*;` so the schema has one home.
//! The whole schema is mirrored; the CLI reads only some of it.
#![allow(dead_code)]

/// Every attribute of the schema starts with this; redrive strips them all.
pub(crate) const PREFIX: &str = "SqsWorker.";
/// The failure kind (`permanent`, `panicked`, ...).
pub(crate) const ERROR_KIND: &str = "SqsWorker.ErrorKind";
/// The error text (truncated by the runner).
pub(crate) const ERROR: &str = "SqsWorker.Error";
/// The URL of the queue the message came from: where redrive sends it back.
pub(crate) const SOURCE_QUEUE_URL: &str = "SqsWorker.SourceQueueUrl";
/// The ARN of the queue the message came from.
pub(crate) const SOURCE_QUEUE_ARN: &str = "SqsWorker.SourceQueueArn";
/// The message id in the source queue.
pub(crate) const MESSAGE_ID: &str = "SqsWorker.MessageId";
/// `ApproximateReceiveCount` when the message was dead-lettered.
pub(crate) const RECEIVE_COUNT: &str = "SqsWorker.ReceiveCount";
/// When the message was dead-lettered, milliseconds since the Unix epoch.
pub(crate) const FAILED_AT: &str = "SqsWorker.FailedAt";

/// The source-queue URL attribute of the poller before the settlement crate
/// (`SqsWorker.SourceQueue`): read as a fallback so dead letters written by
/// older workers can still be redriven. Never written.
pub(crate) const LEGACY_SOURCE_QUEUE: &str = "SqsWorker.SourceQueue";
