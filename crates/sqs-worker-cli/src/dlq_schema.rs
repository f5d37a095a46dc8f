//! The dead-letter attributes the runners add to a message they dead-letter:
//! the one schema of `sqs_worker_sqs::dead_letter`, plus the one name the
//! poller wrote before it.

pub(crate) use sqs_worker_sqs::dead_letter::{
    ERROR, ERROR_KIND, FAILED_AT, PREFIX, SOURCE_QUEUE_ARN, SOURCE_QUEUE_URL,
};

/// The source-queue URL attribute of the poller before the settlement crate
/// (`SqsWorker.SourceQueue`): read as a fallback so dead letters written by
/// older workers can still be redriven. Never written.
pub(crate) const LEGACY_SOURCE_QUEUE: &str = "SqsWorker.SourceQueue";
