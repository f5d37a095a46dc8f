//! One `SendMessageBatch` request: entries grouped by 10 and by the 1 MiB
//! request size, every per-entry result checked, transient failures retried.

use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use backon::{BackoffBuilder, ExponentialBuilder};

use crate::error::SendError;
use sqs_worker_sqs::classify::{classify, transient_entry};

/// SQS's limit on a whole batch request: the sum of its messages' sizes.
pub const MAX_REQUEST_SIZE: usize = 1024 * 1024;
/// SQS's limit on entries per batch request.
pub const MAX_BATCH_ENTRIES: usize = 10;

/// The ids of a request's entries: their positions in it.
const ENTRY_IDS: [&str; MAX_BATCH_ENTRIES] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// What SQS answered for a sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The message id SQS assigned.
    pub message_id: String,
    /// The sequence number (FIFO queues).
    pub sequence_number: Option<String>,
}

/// One entry's answer: sent, or (code, message, sender fault).
type EntryResult = Result<Sent, (String, String, bool)>;

/// A validated entry (its id is set per request) and its size.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) index: usize,
    pub(crate) size: usize,
    pub(crate) entry: SendMessageBatchRequestEntry,
}

/// Splits entries, in order, into requests of at most 10 entries and at
/// most 1 MiB in total.
pub(crate) fn chunk(prepared: Vec<Prepared>) -> Vec<Vec<Prepared>> {
    let mut chunks: Vec<Vec<Prepared>> = Vec::new();
    let mut bytes = 0;
    for p in prepared {
        let full = chunks
            .last()
            .is_none_or(|c| c.len() == MAX_BATCH_ENTRIES || bytes + p.size > MAX_REQUEST_SIZE);
        if full {
            chunks.push(Vec::with_capacity(MAX_BATCH_ENTRIES));
            bytes = 0;
        }
        bytes += p.size;
        if let Some(c) = chunks.last_mut() {
            c.push(p);
        }
    }
    chunks
}

/// The retry schedule of one request: `attempts` tries in all.
pub(crate) fn backoff(attempts: usize) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(attempts.saturating_sub(1))
        .with_jitter()
        .build()
}

/// Sends one chunk until every entry has a final result.
pub(crate) async fn send_chunk(
    client: &aws_sdk_sqs::Client,
    queue: &str,
    attempts: usize,
    chunk: Vec<Prepared>,
) -> Vec<(usize, Result<Sent, SendError>)> {
    let mut done = Vec::with_capacity(chunk.len());
    let mut pending = chunk;
    let mut delays = backoff(attempts);
    loop {
        let entries: Vec<_> = pending
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut e = p.entry.clone();
                e.id = ENTRY_IDS[i].to_owned();
                e
            })
            .collect();
        let result = client
            .send_message_batch()
            .queue_url(queue)
            .set_entries(Some(entries))
            .send()
            .await;
        let retry_delay = delays.next();
        let out = match result {
            Ok(out) => out,
            Err(e) if classify_transient(&e) && retry_delay.is_some() => {
                tracing::warn!(queue, error = %DisplayErrorContext(&e), "SendMessageBatch failed; retrying");
                sleep(retry_delay).await;
                continue;
            }
            Err(e) => {
                let text = DisplayErrorContext(&e).to_string();
                done.extend(pending.iter().map(|p| {
                    let source = text.clone().into();
                    let queue = queue.to_owned();
                    (p.index, Err(SendError::Request { queue, source }))
                }));
                return done;
            }
        };
        let results = entry_results(&out, pending.len());
        let mut again = Vec::new();
        for (p, r) in pending.into_iter().zip(results) {
            let (code, message, retry) = match r {
                Some(Ok(sent)) => {
                    done.push((p.index, Ok(sent)));
                    continue;
                }
                Some(Err((code, message, fault))) => {
                    let retry = transient_entry(&code, fault);
                    (code, message, retry)
                }
                // Neither successful nor failed: never counted as sent.
                None => (
                    "NoResult".to_owned(),
                    "SQS gave no result for it".to_owned(),
                    true,
                ),
            };
            if retry && retry_delay.is_some() {
                again.push(p);
            } else {
                let queue = queue.to_owned();
                let index = p.index;
                done.push((
                    index,
                    Err(SendError::Rejected {
                        queue,
                        index,
                        code,
                        message,
                    }),
                ));
            }
        }
        if again.is_empty() {
            return done;
        }
        tracing::warn!(
            queue,
            entries = again.len(),
            "SendMessageBatch entries failed; retrying"
        );
        pending = again;
        sleep(retry_delay).await;
    }
}

/// Each pending entry's answer from a `SendMessageBatch` response, by the
/// entry's index (its id in the request); `None` where SQS said nothing.
fn entry_results(
    out: &aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput,
    n: usize,
) -> Vec<Option<EntryResult>> {
    let mut results: Vec<Option<EntryResult>> = vec![None; n];
    for s in out.successful() {
        if let Some(slot) = s
            .id()
            .parse::<usize>()
            .ok()
            .and_then(|i| results.get_mut(i))
        {
            *slot = Some(Ok(Sent {
                message_id: s.message_id().to_owned(),
                sequence_number: s.sequence_number().map(str::to_owned),
            }));
        }
    }
    for f in out.failed() {
        if let Some(slot) = f
            .id()
            .parse::<usize>()
            .ok()
            .and_then(|i| results.get_mut(i))
        {
            let message = f.message().unwrap_or_default().to_owned();
            *slot = Some(Err((f.code().to_owned(), message, f.sender_fault())));
        }
    }
    results
}

async fn sleep(d: Option<Duration>) {
    if let Some(d) = d {
        tokio::time::sleep(d).await;
    }
}

/// Throttling, 5xx, timeouts, connection failures, `OverLimit`: back off and
/// retry (the runners' classification, `sqs_worker_sqs::classify`).
fn classify_transient<E>(e: &aws_sdk_sqs::error::SdkError<E>) -> bool
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    classify(e).is_transient()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(index: usize, size: usize) -> Prepared {
        Prepared {
            index,
            size,
            entry: SendMessageBatchRequestEntry::builder()
                .id("x")
                .message_body("b")
                .build()
                .expect("id and body set"),
        }
    }

    #[test]
    fn chunks_by_count_and_bytes() {
        let sizes = [600_000, 500_000, 10, 10, 1_048_576, 1];
        let chunks = chunk(
            sizes
                .iter()
                .enumerate()
                .map(|(i, s)| prepared(i, *s))
                .collect(),
        );
        let shape: Vec<Vec<usize>> = chunks
            .iter()
            .map(|c| c.iter().map(|p| p.index).collect())
            .collect();
        assert_eq!(shape, vec![vec![0], vec![1, 2, 3], vec![4], vec![5]]);
        let many = chunk((0..25).map(|i| prepared(i, 1)).collect());
        assert_eq!(many.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
        for c in chunks.iter().chain(&many) {
            assert!(c.iter().map(|p| p.size).sum::<usize>() <= MAX_REQUEST_SIZE);
        }
    }
}
