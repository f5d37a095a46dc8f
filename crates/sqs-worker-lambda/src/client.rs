//! Settle with an SQS client (feature `sqs-client`): permanent failures to
//! the dead-letter queue, retry delays as visibility changes, and visibility
//! extension for handlers.
//!
//! Lambda's event source mapping deletes what the function does not report
//! and leaves reported records invisible until the queue's visibility timeout
//! ends. With a client the adapter does better for failed records:
//! - a permanent failure is sent to the configured dead-letter queue (body,
//!   message attributes, trace header, and the error as attributes) and, once
//!   sent, is *not* reported, so Lambda deletes it; if the send fails it is
//!   reported like any failure;
//! - every reported record gets its retry delay from the retry policy as a
//!   `ChangeMessageVisibilityBatch` (per queue, 10 per call, every failed
//!   entry looked at, transient ones retried once), so it comes back after
//!   seconds growing with its receive count instead of after the whole
//!   visibility timeout; records that never ran come back at once. A failed
//!   call is logged and the record is still reported.
//!
//! All of it ends before the invocation deadline: whatever is unfinished by
//! then is reported failed (a record may then reach the DLQ twice, never
//! zero times).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::sqs::SqsBatchResponse;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageAttributeValue,
    MessageSystemAttributeNameForSends, MessageSystemAttributeValue,
};
use futures_util::stream::{self, StreamExt};
use sqs_worker_core::runner::observe::names;
use sqs_worker_core::runner::{BoxFuture, Failure, VisibilityControl};
use sqs_worker_core::{AttributeValue, BoxError, MAX_VISIBILITY_TIMEOUT, Message, VisibilityError};

use crate::record::queue_url_from_arn;

/// Message attributes the adapter adds to a message it dead-letters (as many
/// as fit in SQS's limit of 10 after the original ones, in this order).
pub mod dead_letter_attributes {
    /// The error chain, `outer: inner` (String, at most 2 KiB).
    pub const ERROR: &str = "SqsWorker.Error";
    /// The failure kind, `permanent` (String).
    pub const FAILURE_KIND: &str = "SqsWorker.FailureKind";
    /// The source queue's ARN (String).
    pub const SOURCE_ARN: &str = "SqsWorker.SourceArn";
    /// The original message id (String).
    pub const MESSAGE_ID: &str = "SqsWorker.MessageId";
    /// The original `ApproximateReceiveCount` (Number).
    pub const RECEIVE_COUNT: &str = "SqsWorker.ReceiveCount";
    /// When it was dead-lettered, milliseconds since the Unix epoch (Number).
    pub const FAILED_AT: &str = "SqsWorker.FailedAt";
}

/// SQS's limit on message attributes per message.
const MAX_ATTRIBUTES: usize = 10;
/// The longest error text put in [`dead_letter_attributes::ERROR`].
const MAX_ERROR_LEN: usize = 2048;
/// Settling stops this long before the invocation deadline, so the response
/// still goes out in time.
const SETTLE_GUARD: Duration = Duration::from_millis(100);
/// The limit on settling when the invocation has no deadline (a local
/// emulator, or `Context::default()`).
const SETTLE_LIMIT_WITHOUT_DEADLINE: Duration = Duration::from_secs(10);
/// SQS calls in flight at once while settling (a standard queue's batch can
/// hold up to 10,000 records).
const CALLS_IN_FLIGHT: usize = 16;

/// The SQS side of the adapter.
pub(crate) struct SqsSettler {
    client: aws_sdk_sqs::Client,
    dead_letter_queue: Option<String>,
    backoff: bool,
    visibility: Arc<SqsVisibility>,
}

impl std::fmt::Debug for SqsSettler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsSettler")
            .field("dead_letter_queue", &self.dead_letter_queue)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl SqsSettler {
    pub(crate) fn new(
        client: aws_sdk_sqs::Client,
        dead_letter_queue: Option<String>,
        backoff: bool,
    ) -> Self {
        Self {
            visibility: Arc::new(SqsVisibility {
                client: client.clone(),
            }),
            client,
            dead_letter_queue,
            backoff,
        }
    }

    pub(crate) fn visibility(&self) -> Arc<dyn VisibilityControl> {
        self.visibility.clone()
    }

    /// Dead-letters and delays `failed`, then reports in `response` every
    /// record that must come back.
    pub(crate) async fn settle(
        &self,
        failed: Vec<(Message, Failure)>,
        invocation: Option<Instant>,
        response: &mut SqsBatchResponse,
    ) {
        if failed.is_empty() {
            return;
        }
        let work = self.settle_all(&failed);
        let at = match invocation {
            Some(d) => d.checked_sub(SETTLE_GUARD).unwrap_or(d),
            None => Instant::now() + SETTLE_LIMIT_WITHOUT_DEADLINE,
        };
        let handled = match tokio::time::timeout_at(at.into(), work).await {
            Ok(handled) => handled,
            Err(_) => {
                tracing::warn!(
                    records = failed.len(),
                    "dead-letter / visibility calls unfinished at the invocation deadline: \
                     reporting every failed record"
                );
                vec![false; failed.len()]
            }
        };
        for ((m, _), handled) in failed.iter().zip(handled) {
            if !handled {
                response.add_failure(m.id());
            }
        }
    }

    /// Returns, per record, whether it is handled (dead-lettered).
    async fn settle_all(&self, failed: &[(Message, Failure)]) -> Vec<bool> {
        let mut handled = vec![false; failed.len()];
        if let Some(dlq) = &self.dead_letter_queue {
            // Plain loops, not iterator adapters: their closures would make
            // this future not `Send` (higher-ranked lifetimes).
            let mut sends = Vec::new();
            for (i, (m, f)) in failed.iter().enumerate() {
                if f.is_permanent() {
                    sends.push(async move { (i, self.dead_letter(dlq, m, f).await) });
                }
            }
            let mut results = Vec::with_capacity(sends.len());
            let mut in_flight = stream::iter(sends).buffer_unordered(CALLS_IN_FLIGHT);
            while let Some(r) = in_flight.next().await {
                results.push(r);
            }
            for (i, result) in results {
                let m = &failed[i].0;
                match result {
                    Ok(()) => {
                        handled[i] = true;
                        metrics::counter!(names::DEAD_LETTERED).increment(1);
                        tracing::info!(
                            messaging.message.id = m.id(),
                            "permanent failure sent to the dead-letter queue"
                        );
                    }
                    Err(e) => {
                        metrics::counter!(names::SETTLEMENT_FAILURES, "action" => "dead_letter")
                            .increment(1);
                        tracing::error!(
                            messaging.message.id = m.id(),
                            error = %e,
                            "sending a permanent failure to the dead-letter queue failed: \
                             reporting the record instead"
                        );
                    }
                }
            }
        }
        if self.backoff {
            self.delay(failed, &handled).await;
        }
        handled
    }

    async fn dead_letter(&self, dlq: &str, m: &Message, f: &Failure) -> Result<(), BoxError> {
        let mut attrs = HashMap::with_capacity(MAX_ATTRIBUTES);
        for (name, a) in m.message_attributes() {
            let v = MessageAttributeValue::builder().data_type(&a.data_type);
            let v = match &a.value {
                AttributeValue::String(s) | AttributeValue::Number(s) => v.string_value(s),
                AttributeValue::Binary(b) => v.binary_value(Blob::new(b.clone())),
            };
            attrs.insert(name.clone(), v.build()?);
        }
        let failed_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let extra = [
            (
                dead_letter_attributes::ERROR,
                "String",
                truncate(f.error.to_string(), MAX_ERROR_LEN),
            ),
            (
                dead_letter_attributes::FAILURE_KIND,
                "String",
                f.kind.as_str().to_owned(),
            ),
            (
                dead_letter_attributes::SOURCE_ARN,
                "String",
                m.source().unwrap_or_default().to_owned(),
            ),
            (
                dead_letter_attributes::MESSAGE_ID,
                "String",
                m.id().to_owned(),
            ),
            (
                dead_letter_attributes::RECEIVE_COUNT,
                "Number",
                m.receive_count().to_string(),
            ),
            (
                dead_letter_attributes::FAILED_AT,
                "Number",
                failed_at.to_string(),
            ),
        ];
        let room = MAX_ATTRIBUTES.saturating_sub(attrs.len());
        for (name, data_type, value) in extra.into_iter().filter(|e| !e.2.is_empty()).take(room) {
            let v = MessageAttributeValue::builder()
                .data_type(data_type)
                .string_value(value)
                .build()?;
            attrs.insert(name.to_owned(), v);
        }
        let mut req = self
            .client
            .send_message()
            .queue_url(dlq)
            .message_body(m.body())
            .set_message_attributes(Some(attrs));
        if dlq.ends_with(".fifo") {
            req = req
                .message_group_id(m.group_id().unwrap_or(m.id()))
                .message_deduplication_id(m.id());
        }
        if let Some(trace) = m.trace_header() {
            let v = MessageSystemAttributeValue::builder()
                .data_type("String")
                .string_value(trace)
                .build()?;
            req = req
                .message_system_attributes(MessageSystemAttributeNameForSends::AwsTraceHeader, v);
        }
        req.send()
            .await
            .map_err(|e| format!("SendMessage to {dlq}: {}", DisplayErrorContext(e)))?;
        Ok(())
    }

    /// Gives every record that is not `handled` its retry delay as a
    /// visibility change, batched per queue.
    async fn delay(&self, failed: &[(Message, Failure)], handled: &[bool]) {
        let mut by_queue: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, (m, _)) in failed.iter().enumerate() {
            if handled[i] || m.receipt_handle().is_empty() {
                continue;
            }
            let Some(arn) = m.source() else { continue };
            match by_queue.iter_mut().find(|(a, _)| *a == arn) {
                Some((_, v)) => v.push(i),
                None => by_queue.push((arn, vec![i])),
            }
        }
        let mut calls = Vec::new();
        for (arn, indices) in &by_queue {
            let Some(url) = queue_url_from_arn(arn) else {
                tracing::warn!(
                    source = arn,
                    "eventSourceARN is not an SQS queue ARN: retry delays not applied"
                );
                continue;
            };
            for chunk in indices.chunks(10) {
                calls.push(self.change_visibility_batch(url.clone(), failed, chunk));
            }
        }
        let mut in_flight = stream::iter(calls).buffer_unordered(CALLS_IN_FLIGHT);
        while in_flight.next().await.is_some() {}
    }

    async fn change_visibility_batch(
        &self,
        url: String,
        failed: &[(Message, Failure)],
        chunk: &[usize],
    ) {
        let entry = |i: usize| {
            let (m, f) = &failed[i];
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle())
                .visibility_timeout(visibility_seconds(f.retry_delay))
                .build()
        };
        let mut pending: Vec<usize> = chunk.to_vec();
        for attempt in 0..2 {
            let entries: Result<Vec<_>, _> = pending.iter().map(|&i| entry(i)).collect();
            let entries = match entries {
                Ok(e) => e,
                Err(e) => {
                    self.visibility_failed(pending.len(), &url, &e.to_string());
                    return;
                }
            };
            let out = match self
                .client
                .change_message_visibility_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => {
                    let e = DisplayErrorContext(e).to_string();
                    self.visibility_failed(pending.len(), &url, &e);
                    return;
                }
            };
            let mut retry = Vec::new();
            for fail in out.failed() {
                let Ok(i) = fail.id().parse::<usize>() else {
                    continue;
                };
                let id = failed.get(i).map_or("?", |(m, _)| m.id());
                if !fail.sender_fault() && attempt == 0 {
                    retry.push(i);
                    continue;
                }
                metrics::counter!(names::SETTLEMENT_FAILURES, "action" => "change_visibility")
                    .increment(1);
                tracing::warn!(
                    messaging.message.id = id,
                    code = fail.code(),
                    error = fail.message().unwrap_or_default(),
                    "retry delay not applied (ChangeMessageVisibilityBatch entry failed); \
                     the record is still reported"
                );
            }
            if retry.is_empty() {
                return;
            }
            pending = retry;
        }
    }

    fn visibility_failed(&self, records: usize, url: &str, error: &str) {
        metrics::counter!(names::SETTLEMENT_FAILURES, "action" => "change_visibility")
            .increment(records as u64);
        tracing::warn!(
            records,
            queue_url = url,
            error,
            "retry delays not applied (ChangeMessageVisibilityBatch failed); \
             the records are still reported"
        );
    }
}

/// A visibility timeout in whole seconds, rounded up (never earlier than
/// asked), at most 12 hours.
fn visibility_seconds(d: Duration) -> i32 {
    let d = d.min(MAX_VISIBILITY_TIMEOUT);
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// `ChangeMessageVisibility` for handlers that ask for more time.
struct SqsVisibility {
    client: aws_sdk_sqs::Client,
}

impl VisibilityControl for SqsVisibility {
    fn change_visibility<'a>(
        &'a self,
        message: &'a Message,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), VisibilityError>> {
        Box::pin(async move {
            let Some(url) = message.source().and_then(queue_url_from_arn) else {
                return Err(VisibilityError::Unsupported(
                    "the record's eventSourceARN is not an SQS queue ARN",
                ));
            };
            if message.receipt_handle().is_empty() {
                return Err(VisibilityError::Unsupported(
                    "the record has no receipt handle",
                ));
            }
            self.client
                .change_message_visibility()
                .queue_url(url)
                .receipt_handle(message.receipt_handle())
                .visibility_timeout(visibility_seconds(timeout))
                .send()
                .await
                .map_err(|e| VisibilityError::Failed {
                    message_id: message.id().to_owned(),
                    source: DisplayErrorContext(e).to_string().into(),
                })?;
            metrics::counter!(names::EXTENSIONS).increment(1);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up_and_cap() {
        assert_eq!(visibility_seconds(Duration::ZERO), 0);
        assert_eq!(visibility_seconds(Duration::from_millis(1)), 1);
        assert_eq!(visibility_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(visibility_seconds(Duration::from_secs(100_000)), 43_200);
    }

    #[test]
    fn truncates_on_a_char_boundary() {
        assert_eq!(truncate("héllo".into(), 2), "h");
        assert_eq!(truncate("abc".into(), 10), "abc");
    }
}
