//! `DeleteMessageBatch` and `ChangeMessageVisibilityBatch`, at most 10
//! entries per call, with every failed entry looked at: transient ones (and
//! the whole call when it failed transiently) are retried on the caller's
//! backoff, the rest come back as [`EntryFailure`]s for the runner to count
//! and report its own way.

use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
};
use backon::{BackoffBuilder, ExponentialBuilder};
use sqs_worker_core::MAX_VISIBILITY_TIMEOUT;
use tokio::sync::RwLock;

use crate::classify::{self, classify, describe, redact};

/// The code of an entry SQS did not mention in its answer (retried).
const UNANSWERED: &str = "unanswered";

/// The most entries SQS takes in one batch call.
pub const MAX_ENTRIES: usize = 10;

/// Whole seconds for a visibility timeout of `delay` on a message received
/// `since_receipt` ago: rounded up (never earlier than asked), and within
/// SQS's 12 hours from receipt (one second to spare).
pub fn visibility_seconds(delay: Duration, since_receipt: Duration) -> i32 {
    let room = MAX_VISIBILITY_TIMEOUT
        .saturating_sub(since_receipt)
        .saturating_sub(Duration::from_secs(1));
    let d = delay.min(room);
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// An entry that failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFailure {
    /// SQS's error code (`ReceiptHandleIsInvalid`, …), or `call_failed`,
    /// `retries_exhausted`, `invalid_entry` (more than 10), `unanswered`.
    pub code: String,
    /// What SQS said, receipt handles redacted.
    pub detail: String,
}

impl EntryFailure {
    fn new(code: &str, detail: &str) -> Self {
        Self {
            code: code.to_owned(),
            detail: redact(detail),
        }
    }
}

/// What a batch call did: one result per entry, in the order given.
#[derive(Debug, Default)]
pub struct BatchResult {
    /// `Ok` when SQS applied the entry.
    pub entries: Vec<Result<(), EntryFailure>>,
    /// Calls that failed as a whole (each retried when transient).
    pub sdk_errors: u64,
}

impl BatchResult {
    /// Entries SQS applied.
    pub fn succeeded(&self) -> usize {
        self.entries.iter().filter(|e| e.is_ok()).count()
    }
}

/// One attempt's answer: the entries that failed (by index), or the call's error.
enum Attempt {
    Answered {
        succeeded: Vec<usize>,
        failed: Vec<(usize, EntryFailure, bool)>,
    },
    CallFailed {
        transient: bool,
        detail: String,
    },
}

/// The settlement calls on one queue.
#[derive(Debug, Clone, Copy)]
pub struct BatchCall<'a> {
    /// The client.
    pub client: &'a aws_sdk_sqs::Client,
    /// The queue the receipt handles belong to.
    pub queue_url: &'a str,
    /// Waits between retries of transient failures (none left: the entries
    /// fail with `retries_exhausted`).
    pub retry: ExponentialBuilder,
    /// Held for reading during each call (not while waiting to retry): the
    /// poller's heartbeat takes it for writing, so a delete never overtakes
    /// an extension of the same message in flight.
    pub gate: Option<&'a RwLock<()>>,
}

impl BatchCall<'_> {
    /// Deletes up to 10 messages by receipt handle.
    pub async fn delete(&self, receipt_handles: &[&str]) -> BatchResult {
        let name = "DeleteMessageBatch";
        self.with_retries(
            name,
            receipt_handles.len(),
            |pending: Vec<usize>| async move {
                let mut entries = Vec::with_capacity(pending.len());
                for &i in &pending {
                    let e = DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt_handles[i])
                        .build();
                    // Both required fields are set: building cannot fail.
                    if let Ok(e) = e {
                        entries.push(e);
                    }
                }
                let out = self
                    .client
                    .delete_message_batch()
                    .queue_url(self.queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await;
                match out {
                    Ok(out) => answered(out.successful().iter().map(|s| s.id()), out.failed()),
                    Err(e) => call_failed(name, &e),
                }
            },
        )
        .await
    }

    /// Sets the visibility timeout (seconds) of up to 10 messages.
    pub async fn change_visibility(&self, entries: &[(&str, i32)]) -> BatchResult {
        let name = "ChangeMessageVisibilityBatch";
        self.with_retries(name, entries.len(), |pending: Vec<usize>| async move {
            let mut batch = Vec::with_capacity(pending.len());
            for &i in &pending {
                let (handle, seconds) = entries[i];
                let e = ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .visibility_timeout(seconds)
                    .build();
                // Both required fields are set: building cannot fail.
                if let Ok(e) = e {
                    batch.push(e);
                }
            }
            let out = self
                .client
                .change_message_visibility_batch()
                .queue_url(self.queue_url)
                .set_entries(Some(batch))
                .send()
                .await;
            match out {
                Ok(out) => answered(out.successful().iter().map(|s| s.id()), out.failed()),
                Err(e) => call_failed(name, &e),
            }
        })
        .await
    }

    /// Sends `attempt` for the pending entries until none is left to retry.
    async fn with_retries<F, Fut>(&self, name: &'static str, n: usize, attempt: F) -> BatchResult
    where
        F: Fn(Vec<usize>) -> Fut,
        Fut: Future<Output = Attempt>,
    {
        let mut result = BatchResult {
            entries: vec![Err(EntryFailure::new(UNANSWERED, "not sent")); n],
            sdk_errors: 0,
        };
        let mut backoff = self.retry.build();
        let mut pending: Vec<usize> = (0..n.min(MAX_ENTRIES)).collect();
        for i in MAX_ENTRIES..n {
            result.entries[i] = Err(EntryFailure::new("invalid_entry", "more than 10 entries"));
        }
        while !pending.is_empty() {
            for &i in &pending {
                result.entries[i] = Err(EntryFailure::new(UNANSWERED, "no answer for this entry"));
            }
            let answer = {
                let _gate = match self.gate {
                    Some(g) => Some(g.read().await),
                    None => None,
                };
                attempt(pending.clone()).await
            };
            let mut retry = Vec::new();
            match answer {
                Attempt::Answered { succeeded, failed } => {
                    for i in succeeded.into_iter().filter(|i| pending.contains(i)) {
                        result.entries[i] = Ok(());
                    }
                    for (i, failure, transient) in failed {
                        if !pending.contains(&i) {
                            continue;
                        }
                        if transient {
                            retry.push(i);
                        }
                        result.entries[i] = Err(failure);
                    }
                    // An entry SQS neither applied nor refused: ask again.
                    for &i in &pending {
                        if matches!(&result.entries[i], Err(f) if f.code == UNANSWERED) {
                            retry.push(i);
                        }
                    }
                }
                Attempt::CallFailed { transient, detail } => {
                    result.sdk_errors += 1;
                    tracing::warn!(error = %detail, messages = pending.len(), transient, "{name} failed");
                    for &i in &pending {
                        result.entries[i] = Err(EntryFailure::new("call_failed", &detail));
                    }
                    if transient {
                        retry = pending;
                    }
                }
            }
            if retry.is_empty() {
                break;
            }
            let Some(delay) = backoff.next() else {
                for &i in &retry {
                    let detail = match &result.entries[i] {
                        Err(f) => format!("gave up retrying: {}: {}", f.code, f.detail),
                        Ok(()) => continue,
                    };
                    result.entries[i] = Err(EntryFailure::new("retries_exhausted", &detail));
                }
                break;
            };
            tokio::time::sleep(delay).await;
            retry.sort_unstable();
            retry.dedup();
            pending = retry;
        }
        result
    }
}

fn answered<'a>(
    succeeded: impl Iterator<Item = &'a str>,
    failed: &[BatchResultErrorEntry],
) -> Attempt {
    Attempt::Answered {
        succeeded: succeeded.filter_map(|id| id.parse().ok()).collect(),
        failed: failed
            .iter()
            .filter_map(|f| {
                let i = f.id().parse().ok()?;
                let transient = classify::transient_entry(f.code(), f.sender_fault());
                Some((
                    i,
                    EntryFailure::new(f.code(), f.message().unwrap_or("")),
                    transient,
                ))
            })
            .collect(),
    }
}

fn call_failed<E>(name: &str, e: &aws_sdk_sqs::error::SdkError<E>) -> Attempt
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    Attempt::CallFailed {
        transient: classify(e).retryable_after_start(),
        detail: format!("{name}: {}", describe(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up_and_stay_within_twelve_hours_of_receipt() {
        let z = Duration::ZERO;
        assert_eq!(visibility_seconds(z, z), 0);
        assert_eq!(visibility_seconds(Duration::from_millis(1), z), 1);
        assert_eq!(visibility_seconds(Duration::from_millis(1500), z), 2);
        assert_eq!(visibility_seconds(Duration::from_secs(100_000), z), 43_199);
        let late = Duration::from_secs(12 * 3600 - 60);
        assert_eq!(visibility_seconds(Duration::from_secs(600), late), 59);
        assert_eq!(
            visibility_seconds(Duration::from_secs(600), MAX_VISIBILITY_TIMEOUT),
            0
        );
    }
}
