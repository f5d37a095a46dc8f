//! Counts the SQS requests a client sends, by action, with an SDK
//! interceptor: one count per HTTP attempt (SDK retries included), the
//! operation name read from the config bag's `Metadata`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_sqs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;

/// The actions the benchmarks send; anything else is `Other`.
pub(crate) const ACTIONS: [&str; 10] = [
    "ReceiveMessage",
    "DeleteMessage",
    "DeleteMessageBatch",
    "ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch",
    "SendMessage",
    "SendMessageBatch",
    "GetQueueAttributes",
    "GetQueueUrl",
    "Other",
];

/// Request counts by action, shared by every clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counter {
    counts: Arc<[AtomicU64; ACTIONS.len()]>,
}

impl Counter {
    fn slot(name: &str) -> usize {
        ACTIONS
            .iter()
            .position(|a| *a == name)
            .unwrap_or(ACTIONS.len() - 1)
    }

    /// The counts so far, by action (zeros left out).
    pub(crate) fn snapshot(&self) -> Vec<(&'static str, u64)> {
        ACTIONS
            .iter()
            .zip(self.counts.iter())
            .map(|(a, c)| (*a, c.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Sets every count back to zero.
    pub(crate) fn reset(&self) {
        for c in self.counts.iter() {
            c.store(0, Relaxed);
        }
    }

    /// The total count.
    pub(crate) fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The count of one action.
    pub(crate) fn get(&self, action: &str) -> u64 {
        self.counts[Self::slot(action)].load(Relaxed)
    }
}

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "sqs-worker-bench request counter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let slot = cfg
            .load::<Metadata>()
            .map_or(ACTIONS.len() - 1, |m| Self::slot(m.name()));
        self.counts[slot].fetch_add(1, Relaxed);
        Ok(())
    }
}
