//! Settle with an SQS client (feature `sqs-client`): permanent failures to
//! the dead-letter queue, retry delays as visibility changes, and visibility
//! extension for handlers.
//!
//! Lambda's event source mapping deletes what the function does not report
//! and leaves reported records invisible until the queue's visibility timeout
//! ends. With a client the adapter does better for failed records:
//! - a permanent failure is sent to the configured dead-letter queue (the
//!   schema of `sqs_worker_sqs::dead_letter`, the same as the poller's) and,
//!   once sent, is *not* reported, so Lambda deletes it; if the send fails
//!   for good it is reported like any failure, with its retry delay;
//! - every reported record gets its retry delay from the retry policy as a
//!   `ChangeMessageVisibilityBatch` (per queue, 10 per call, every failed
//!   entry looked at, transient ones retried once), so it comes back after
//!   seconds growing with its receive count instead of after the whole
//!   visibility timeout; records that never ran come back at once. A failed
//!   call is logged and the record is still reported.
//!
//! The SQS calls themselves live in `sqs_worker_sqs`; this module keeps what
//! is Lambda's own: one settlement per invocation, the deadline guard, and
//! the `batchItemFailures` report.
//!
//! All of it ends before the invocation deadline: whatever is unfinished by
//! then is reported failed (a record may then reach the DLQ twice, never
//! zero times).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsBatchResponse;
use aws_sdk_sqs::error::DisplayErrorContext;
use backon::ExponentialBuilder;
use futures_util::stream::{self, StreamExt};
use sqs_worker_core::runner::observe::names;
use sqs_worker_core::runner::{BoxFuture, Failure, VisibilityControl};
use sqs_worker_core::{Message, VisibilityError};
use sqs_worker_sqs::dead_letter::{self, DeadLetterQueue, SourceQueue};
use sqs_worker_sqs::{BatchCall, visibility_seconds};

use crate::record::queue_url_from_arn;

/// Settling stops this long before the invocation deadline, so the response
/// still goes out in time.
const SETTLE_GUARD: Duration = Duration::from_millis(100);
/// The limit on settling when the invocation has no deadline (a local
/// emulator, or `Context::default()`).
const SETTLE_LIMIT_WITHOUT_DEADLINE: Duration = Duration::from_secs(10);
/// SQS calls in flight at once while settling (a standard queue's batch can
/// hold up to 10,000 records).
const CALLS_IN_FLIGHT: usize = 16;

/// The SQS client: the one given, or one from the default AWS configuration
/// (`aws_config::load_defaults`) built at its first use, so a cold start
/// whose records all succeed loads no SDK configuration, HTTP client or
/// credentials at all.
pub(crate) struct LazyClient(tokio::sync::OnceCell<aws_sdk_sqs::Client>);

impl LazyClient {
    /// The given client.
    pub(crate) fn ready(client: aws_sdk_sqs::Client) -> Self {
        Self(tokio::sync::OnceCell::new_with(Some(client)))
    }

    /// The default client, built at its first use.
    pub(crate) fn from_default_config() -> Self {
        Self(tokio::sync::OnceCell::new())
    }

    /// The client (built now if this is its first use).
    pub(crate) async fn get(&self) -> &aws_sdk_sqs::Client {
        self.0
            .get_or_init(|| async {
                let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                aws_sdk_sqs::Client::new(&config)
            })
            .await
    }
}

/// The SQS side of the adapter.
pub(crate) struct SqsSettler {
    client: Arc<LazyClient>,
    dead_letter_queue: Option<DeadLetterQueue>,
    backoff: bool,
    visibility: Arc<SqsVisibility>,
}

/// Retries within an invocation: one more attempt, 50 ms later.
fn retry_once() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_times(1)
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
        client: LazyClient,
        dead_letter_queue: Option<String>,
        backoff: bool,
    ) -> Self {
        let client = Arc::new(client);
        Self {
            visibility: Arc::new(SqsVisibility {
                client: client.clone(),
            }),
            client,
            dead_letter_queue: dead_letter_queue.map(DeadLetterQueue::new),
            backoff,
        }
    }

    pub(crate) fn client(&self) -> &LazyClient {
        &self.client
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
            for (i, sent) in results {
                handled[i] = sent;
            }
        }
        if self.backoff {
            self.delay(failed, &handled).await;
        }
        handled
    }

    /// Sends a permanent failure to the dead-letter queue; whether it was sent.
    async fn dead_letter(&self, dlq: &DeadLetterQueue, m: &Message, f: &Failure) -> bool {
        let arn = m.source().unwrap_or_default();
        let url = queue_url_from_arn(arn).unwrap_or_default();
        let source = SourceQueue { url: &url, arn };
        let error = f.error.to_string();
        let client = self.client.get().await;
        let sent = dead_letter::send(client, dlq, source, m, f.kind, &error, retry_once());
        sent.await.result.is_ok()
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
        let entries: Vec<(&str, i32)> = chunk
            .iter()
            .map(|&i| {
                let (m, f) = &failed[i];
                (
                    m.receipt_handle(),
                    visibility_seconds(f.retry_delay, Duration::ZERO),
                )
            })
            .collect();
        let call = BatchCall {
            client: self.client.get().await,
            queue_url: &url,
            retry: retry_once(),
            gate: None,
        };
        let result = call.change_visibility(&entries).await;
        for (&i, entry) in chunk.iter().zip(result.entries) {
            let Err(e) = entry else { continue };
            metrics::counter!(names::SETTLEMENT_FAILURES, "action" => "change_visibility")
                .increment(1);
            tracing::warn!(
                messaging.message.id = failed[i].0.id(),
                code = e.code,
                error = %e.detail,
                "retry delay not applied (ChangeMessageVisibilityBatch); the record is still reported"
            );
        }
    }
}

/// `ChangeMessageVisibility` for handlers that ask for more time.
struct SqsVisibility {
    client: Arc<LazyClient>,
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
                .get()
                .await
                .change_message_visibility()
                .queue_url(url)
                .receipt_handle(message.receipt_handle())
                .visibility_timeout(visibility_seconds(timeout, Duration::ZERO))
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
