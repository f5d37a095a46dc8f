//! The queue's `maxReceiveCount` in Lambda (issue 16 §1): without
//! `SQS_WORKER_MAX_RECEIVE_COUNT`, the retry budget learns it with the SQS
//! client from the redrive policy of the queue the records came from
//! (`GetQueueAttributes`, the queue URL derived from the record's
//! `eventSourceARN`), once per container, at its first need: the first
//! invocation in which a handler failed (retry delays are all the count
//! changes), after which that invocation's retry delays are computed again
//! with it (`LambdaService::process`). A cold start whose records all succeed
//! makes no SQS call. When it cannot be read, one warning, and the budget
//! keeps its fallback policy (the plain exponential backoff).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use sqs_worker_core::Message;
use sqs_worker_core::RetryPolicy;
use sqs_worker_core::flow::{RetryBudget, parse_max_receive_count};
use sqs_worker_core::runner::{Failure, FailureKind};

use crate::client::LazyClient;
use crate::record::queue_url_from_arn;

/// How long an invocation may spend reading the redrive policy.
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

    /// Whether the count is still to be read.
    pub(crate) fn pending(&self) -> bool {
        !self.tried.load(Ordering::Relaxed)
    }

    /// The budget it tells.
    pub(crate) fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// On the first call only: reads the redrive policy of the queue `arn`
    /// names and tells the budget its `maxReceiveCount`. Whether it learned
    /// the count in this call.
    pub(crate) async fn learn(&self, client: &LazyClient, arn: Option<&str>) -> bool {
        if self.tried.load(Ordering::Relaxed) || self.tried.swap(true, Ordering::Relaxed) {
            return false;
        }
        let fallback = "the retry budget keeps its fallback (exponential backoff from 1 s); set \
                        SQS_WORKER_MAX_RECEIVE_COUNT to the queue's maxReceiveCount";
        let Some(url) = arn.and_then(queue_url_from_arn) else {
            tracing::warn!(source = arn, "{fallback}: the record names no SQS queue");
            return false;
        };
        let call = client
            .get()
            .await
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send();
        let out = match tokio::time::timeout(READ_LIMIT, call).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                let error = DisplayErrorContext(e).to_string();
                tracing::warn!(queue = url, %error, "cannot read the redrive policy: {fallback}");
                return false;
            }
            Err(_) => {
                tracing::warn!(
                    queue = url,
                    "reading the redrive policy timed out: {fallback}"
                );
                return false;
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
                true
            }
            None => {
                tracing::info!(
                    queue = url,
                    "the queue has no redrive policy: failed records are retried with the \
                     exponential backoff until their retention ends"
                );
                false
            }
        }
    }
}

/// The retry delays of `failed`, given by the engine before the budget knew
/// the count, given again by the budget (the engine's retry policy) now that
/// it does: what the engine would have given with the count known. Failures
/// the engine gives no delay (not started, blocked behind their FIFO group)
/// keep theirs.
pub(crate) fn redelay(budget: &RetryBudget, failed: &mut [(Message, Failure)]) {
    for (m, f) in failed {
        if !matches!(f.kind, FailureKind::Unstarted | FailureKind::GroupBlocked) {
            f.retry_delay = budget.delay(m.receive_count(), &f.error);
        }
    }
}

#[cfg(test)]
mod tests {
    use sqs_worker_core::{Error, Jitter};

    use super::*;

    fn failure(kind: FailureKind, delay: Duration) -> Failure {
        Failure {
            kind,
            retry_delay: delay,
            error: Error::msg("x"),
        }
    }

    /// The delays of the invocation that learned the count are what the
    /// budget gives with it; not-started and blocked records keep 0.
    #[test]
    fn delays_given_before_the_count_was_known_are_given_again() {
        let budget = RetryBudget::new(Duration::from_secs(3000))
            .jitter(Jitter::None)
            .with_max_receive_count(4);
        let msg = Message::builder("m", "{}").build();
        let mut failed = vec![
            (
                msg.clone(),
                failure(FailureKind::Retry, Duration::from_secs(1)),
            ),
            (
                msg.clone(),
                failure(FailureKind::Permanent, Duration::from_secs(1)),
            ),
            (msg.clone(), failure(FailureKind::Unstarted, Duration::ZERO)),
            (
                msg.clone(),
                failure(FailureKind::GroupBlocked, Duration::ZERO),
            ),
        ];
        redelay(&budget, &mut failed);
        let want = budget.delay(msg.receive_count(), &Error::msg("x"));
        assert_ne!(want, Duration::from_secs(1));
        let got: Vec<Duration> = failed.iter().map(|(_, f)| f.retry_delay).collect();
        assert_eq!(got, [want, want, Duration::ZERO, Duration::ZERO]);
    }
}
