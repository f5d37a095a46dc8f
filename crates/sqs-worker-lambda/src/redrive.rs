//! The queue's `maxReceiveCount` in Lambda (issue 16 §1): without
//! `SQS_WORKER_MAX_RECEIVE_COUNT`, the retry budget learns it on the
//! container's first invocation with its SQS client, from the redrive
//! policy of the queue the records came from (`GetQueueAttributes`, the
//! queue URL derived from the record's `eventSourceARN`). Read once per cold
//! start; when it cannot be read, one warning, and the budget keeps its
//! fallback policy (the plain exponential backoff).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use sqs_worker_core::flow::{RetryBudget, parse_max_receive_count};

use crate::record::queue_url_from_arn;

/// How long the cold start may spend reading the redrive policy.
const READ_LIMIT: Duration = Duration::from_secs(2);

/// A retry budget to tell the queue's `maxReceiveCount`, once.
#[derive(Debug)]
pub(crate) struct Redrive {
    budget: Arc<RetryBudget>,
    tried: AtomicBool,
}

impl Redrive {
    pub(crate) fn new(budget: Arc<RetryBudget>) -> Self {
        // A count from the environment wins: nothing to read.
        let known = budget.max_receive_count().is_some();
        Self {
            budget,
            tried: AtomicBool::new(known),
        }
    }

    /// On the first call only: reads the redrive policy of the queue `arn`
    /// names and tells the budget its `maxReceiveCount`.
    pub(crate) async fn learn(&self, client: &aws_sdk_sqs::Client, arn: Option<&str>) {
        if self.tried.load(Ordering::Relaxed) || self.tried.swap(true, Ordering::Relaxed) {
            return;
        }
        let fallback = "the retry budget keeps its fallback (exponential backoff from 1 s); set \
                        SQS_WORKER_MAX_RECEIVE_COUNT to the queue's maxReceiveCount";
        let Some(url) = arn.and_then(queue_url_from_arn) else {
            tracing::warn!(source = arn, "{fallback}: the record names no SQS queue");
            return;
        };
        let call = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send();
        let out = match tokio::time::timeout(READ_LIMIT, call).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                let error = DisplayErrorContext(e).to_string();
                tracing::warn!(queue = url, %error, "cannot read the redrive policy: {fallback}");
                return;
            }
            Err(_) => {
                tracing::warn!(
                    queue = url,
                    "reading the redrive policy timed out: {fallback}"
                );
                return;
            }
        };
        let policy = out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy));
        match policy.and_then(|p| parse_max_receive_count(p)) {
            Some(n) => {
                self.budget.set_max_receive_count(Some(n));
                tracing::info!(
                    queue = url,
                    max_receive_count = n,
                    retry_window_s = self.budget.window().as_secs_f64(),
                    "retry budget: read the queue's maxReceiveCount"
                );
                if !self.budget.fits() {
                    tracing::warn!(
                        max_receive_count = n,
                        "the retry window is too long for maxReceiveCount (a retry delay would \
                         pass SQS's 12-hour limit): failing messages reach the DLQ sooner"
                    );
                }
            }
            None => tracing::info!(
                queue = url,
                "the queue has no redrive policy: failed records are retried with the \
                 exponential backoff until their retention ends"
            ),
        }
    }
}
