//! An interceptor that counts every HTTP attempt sent to SQS.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_sqs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sqs::error::BoxError;
use sqs_worker_core::runner::observe::names;

/// Counts every HTTP attempt a client sends (SDK retries included), in its
/// own counter and in the `sqs_worker_sqs_requests_total{action}` metric.
/// Add it with `aws_sdk_sqs::config::Builder::interceptor`.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter(Arc<AtomicU64>);

impl RequestCounter {
    /// Requests counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "SqsWorkerRequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        let action = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map_or("unknown", |m| action_label(m.name()));
        metrics::counter!(names::SQS_REQUESTS, "action" => action).increment(1);
        Ok(())
    }
}

/// A static label for the SQS actions the runners send.
fn action_label(name: &str) -> &'static str {
    match name {
        "ReceiveMessage" => "ReceiveMessage",
        "DeleteMessageBatch" => "DeleteMessageBatch",
        "DeleteMessage" => "DeleteMessage",
        "ChangeMessageVisibilityBatch" => "ChangeMessageVisibilityBatch",
        "ChangeMessageVisibility" => "ChangeMessageVisibility",
        "SendMessage" => "SendMessage",
        "SendMessageBatch" => "SendMessageBatch",
        "GetQueueAttributes" => "GetQueueAttributes",
        "GetQueueUrl" => "GetQueueUrl",
        _ => "other",
    }
}
