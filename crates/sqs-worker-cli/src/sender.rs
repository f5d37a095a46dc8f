//! A small batched sender: `SendMessageBatch` with at most 10 entries and at
//! most 1 MiB per request, FIFO group and deduplication ids passed through.
//!
//! TO SWAP: this stands in for the producer crate's batching, FIFO-aware
//! `Sender` (`crates/sqs-worker-producer`, not merged yet). [`send_all`] is
//! the one entry point `send` and `dlq redrive` use; point it at the producer
//! when it lands.

use std::collections::HashMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};

/// Most entries per `SendMessageBatch`.
const MAX_ENTRIES: usize = 10;
/// Most bytes per `SendMessageBatch` request (bodies plus attributes).
const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// A message to send.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outgoing {
    pub(crate) body: String,
    pub(crate) attributes: HashMap<String, MessageAttributeValue>,
    pub(crate) group_id: Option<String>,
    pub(crate) dedup_id: Option<String>,
}

impl Outgoing {
    /// The size SQS counts: body plus attribute names, types and values.
    fn size(&self) -> usize {
        self.body.len()
            + self
                .attributes
                .iter()
                .map(|(k, v)| {
                    k.len()
                        + v.data_type().len()
                        + v.string_value().map_or(0, str::len)
                        + v.binary_value().map_or(0, |b| b.as_ref().len())
                })
                .sum::<usize>()
    }
}

/// The index ranges of `items` that go together in one request.
pub(crate) fn batches(items: &[Outgoing]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, m) in items.iter().enumerate() {
        let size = m.size();
        if i > start && (i - start == MAX_ENTRIES || bytes + size > MAX_REQUEST_BYTES) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < items.len() {
        out.push(start..items.len());
    }
    out
}

/// Sends `items` to `url` in batches; `progress` is called with the number of
/// entries each request settled. Returns one result per item, in order: `Err`
/// holds the reason that item was not sent.
pub(crate) async fn send_all(
    client: &Client,
    url: &str,
    items: &[Outgoing],
    progress: &mut dyn FnMut(usize),
) -> Vec<Result<(), String>> {
    let mut results: Vec<Result<(), String>> = vec![Ok(()); items.len()];
    for range in batches(items) {
        let mut entries = Vec::with_capacity(range.len());
        for i in range.clone() {
            let m = &items[i];
            let built = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(&m.body)
                .set_message_attributes((!m.attributes.is_empty()).then(|| m.attributes.clone()))
                .set_message_group_id(m.group_id.clone())
                .set_message_deduplication_id(m.dedup_id.clone())
                .build();
            match built {
                Ok(e) => entries.push(e),
                Err(e) => results[i] = Err(e.to_string()),
            }
        }
        match client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => {
                for f in out.failed() {
                    if let Ok(i) = f.id().parse::<usize>()
                        && let Some(r) = results.get_mut(i)
                    {
                        *r = Err(format!(
                            "{}: {}",
                            f.code(),
                            f.message().unwrap_or("no message")
                        ));
                    }
                }
            }
            Err(e) => {
                let why = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
                for r in &mut results[range.clone()] {
                    if r.is_ok() {
                        *r = Err(why.clone());
                    }
                }
            }
        }
        progress(range.len());
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(len: usize) -> Outgoing {
        Outgoing {
            body: "x".repeat(len),
            ..Outgoing::default()
        }
    }

    #[test]
    fn batches_hold_at_most_ten_and_one_mebibyte() {
        let small: Vec<_> = (0..25).map(|_| msg(10)).collect();
        assert_eq!(batches(&small), vec![0..10, 10..20, 20..25]);
        let big: Vec<_> = (0..5).map(|_| msg(400 * 1024)).collect();
        assert_eq!(batches(&big), vec![0..2, 2..4, 4..5]);
        assert!(batches(&[]).is_empty());
    }
}
