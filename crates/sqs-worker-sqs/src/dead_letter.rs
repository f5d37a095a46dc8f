//! The dead-letter send, and the one schema of what a dead-lettered message
//! carries, whichever runner sent it.
//!
//! A dead-lettered message is the original body, the original message
//! attributes, the original `AWSTraceHeader` (as a message system attribute,
//! which does not count toward the size limit), and the `SqsWorker.*`
//! attributes below.
//!
//! **What fits** (one rule): SQS allows 10 message attributes
//! and `MaximumMessageSize` bytes (body + attribute names + types + values).
//! The original attributes are always kept: a redriven message must be the
//! message its handler saw. Ours fill the free slots in this order:
//! [`SOURCE_QUEUE_URL`], [`ERROR_KIND`], [`ERROR`], [`MESSAGE_ID`],
//! [`RECEIVE_COUNT`], [`SOURCE_QUEUE_ARN`], [`FAILED_AT`]. When the result is
//! over the dead-letter queue's size limit, [`ERROR`] is dropped first, then
//! all of ours; the same steps are taken when SQS refuses a send as too
//! large (its limit was not known). A message too large even without ours
//! is not sent ([`SendError`]).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeNameForSends, MessageSystemAttributeValue,
};
use backon::{ExponentialBuilder, Retryable};
use sqs_worker_core::runner::FailureKind;
use sqs_worker_core::runner::observe::names;
use sqs_worker_core::{AttributeValue, Message};

use crate::classify::{Class, classify, describe, too_large};

/// Every attribute of the schema starts with this (redrive strips them all).
pub const PREFIX: &str = "SqsWorker.";
/// The failure kind, `permanent` (String).
pub const ERROR_KIND: &str = "SqsWorker.ErrorKind";
/// The error chain, `outer: inner`, at most [`MAX_ERROR_LEN`] bytes (String).
pub const ERROR: &str = "SqsWorker.Error";
/// The URL of the queue the message came from (String).
pub const SOURCE_QUEUE_URL: &str = "SqsWorker.SourceQueueUrl";
/// The ARN of the queue the message came from (String).
pub const SOURCE_QUEUE_ARN: &str = "SqsWorker.SourceQueueArn";
/// The message id in the source queue (String).
pub const MESSAGE_ID: &str = "SqsWorker.MessageId";
/// The source message's `ApproximateReceiveCount` when it failed (Number).
pub const RECEIVE_COUNT: &str = "SqsWorker.ReceiveCount";
/// When it was dead-lettered, milliseconds since the Unix epoch (Number).
pub const FAILED_AT: &str = "SqsWorker.FailedAt";

/// The longest error text put in [`ERROR`], in bytes (cut on a character
/// boundary, `…` appended).
pub const MAX_ERROR_LEN: usize = 1024;
/// SQS's limit on message attributes per message.
pub const MAX_ATTRIBUTES: usize = 10;
/// The size limit assumed when the dead-letter queue's `MaximumMessageSize`
/// is not known (SQS's largest, 1 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1024 * 1024;

/// A dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterQueue {
    /// Its URL.
    pub url: String,
    /// Its `MaximumMessageSize` in bytes ([`DEFAULT_MAX_MESSAGE_SIZE`] when not known).
    pub max_message_size: usize,
}

impl DeadLetterQueue {
    /// A dead-letter queue whose size limit is not known.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

/// The queue a dead-lettered message came from.
#[derive(Debug, Clone, Copy)]
pub struct SourceQueue<'a> {
    /// Its URL.
    pub url: &'a str,
    /// Its ARN (empty when not known).
    pub arn: &'a str,
}

/// What was left out of a dead-lettered message to make it fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trim {
    /// Nothing.
    Nothing,
    /// The error text ([`ERROR`]).
    ErrorText,
    /// Every `SqsWorker.*` attribute.
    Ours,
}

impl Trim {
    fn next(self) -> Option<Self> {
        match self {
            Self::Nothing => Some(Self::ErrorText),
            Self::ErrorText => Some(Self::Ours),
            Self::Ours => None,
        }
    }
}

/// A dead-letter send that failed for good.
#[derive(Debug)]
pub struct SendError {
    /// The dead-letter queue's URL.
    pub queue: String,
    /// Why, in one sentence (SQS's code and message, or the size).
    pub reason: String,
    /// The SDK error's class, when SQS answered.
    pub class: Option<Class>,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SendMessage to {} failed: {}", self.queue, self.reason)
    }
}

impl std::error::Error for SendError {}

/// What a dead-letter send did.
#[derive(Debug)]
pub struct Sent {
    /// `Ok(trim)`: sent, with `trim` left out; `Err`: failed for good.
    pub result: Result<Trim, SendError>,
    /// SDK calls that failed on the way (each retried when transient, or
    /// trimmed and sent again when too large).
    pub sdk_errors: u64,
}

/// Our attributes for `message`, in the order they fill free slots.
fn ours(
    message: &Message,
    kind: FailureKind,
    error: &str,
    source: SourceQueue<'_>,
) -> Vec<(&'static str, &'static str, String)> {
    let failed_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    vec![
        (SOURCE_QUEUE_URL, "String", source.url.to_owned()),
        (ERROR_KIND, "String", kind.as_str().to_owned()),
        (ERROR, "String", truncate(error)),
        (MESSAGE_ID, "String", message.id().to_owned()),
        (RECEIVE_COUNT, "Number", message.receive_count().to_string()),
        (SOURCE_QUEUE_ARN, "String", source.arn.to_owned()),
        (FAILED_AT, "Number", failed_at.to_string()),
    ]
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_ERROR_LEN {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The message attributes to send with `trim` applied: the originals, then
/// `ours` in order while there is room (empty values skipped).
fn attributes(
    message: &Message,
    ours: &[(&'static str, &'static str, String)],
    trim: Trim,
) -> HashMap<String, MessageAttributeValue> {
    let mut out = HashMap::with_capacity(MAX_ATTRIBUTES);
    for (name, a) in message.message_attributes() {
        let b = MessageAttributeValue::builder().data_type(&a.data_type);
        let b = match &a.value {
            AttributeValue::String(s) | AttributeValue::Number(s) => b.string_value(s),
            AttributeValue::Binary(v) => b.binary_value(Blob::new(v.clone())),
        };
        // The data type is set: building cannot fail.
        if let Ok(v) = b.build() {
            out.insert(name.clone(), v);
        }
    }
    for (name, data_type, value) in ours {
        let dropped = match trim {
            Trim::Nothing => false,
            Trim::ErrorText => *name == ERROR,
            Trim::Ours => true,
        };
        if dropped || value.is_empty() || out.len() >= MAX_ATTRIBUTES {
            continue;
        }
        let v = MessageAttributeValue::builder()
            .data_type(*data_type)
            .string_value(value)
            .build();
        if let Ok(v) = v {
            out.insert((*name).to_owned(), v);
        }
    }
    out
}

/// The size SQS counts: body + attribute names, data types and values.
fn size(body: &str, attributes: &HashMap<String, MessageAttributeValue>) -> usize {
    body.len()
        + attributes
            .iter()
            .map(|(name, v)| {
                name.len()
                    + v.data_type().len()
                    + v.string_value().map_or(0, str::len)
                    + v.binary_value().map_or(0, |b| b.as_ref().len())
            })
            .sum::<usize>()
}

/// The least trimming that fits `limit`, with the attributes it leaves.
fn fitting(
    message: &Message,
    ours: &[(&'static str, &'static str, String)],
    from: Trim,
    limit: usize,
) -> Option<(Trim, HashMap<String, MessageAttributeValue>)> {
    let mut trim = from;
    loop {
        let attrs = attributes(message, ours, trim);
        if size(message.body(), &attrs) <= limit {
            return Some((trim, attrs));
        }
        trim = trim.next()?;
    }
}

/// Sends `message` to `dlq` with the schema's attributes, retrying transient
/// failures on `retry` and trimming what it adds when the message is too
/// large. Counts and logs the outcome (`sqs_worker_messages_dead_lettered_total`,
/// or `sqs_worker_settlement_failures_total{action="dead_letter"}` with an
/// error log naming the queue and the reason); the caller deletes the
/// message or gives it its retry delay.
pub async fn send(
    client: &aws_sdk_sqs::Client,
    dlq: &DeadLetterQueue,
    source: SourceQueue<'_>,
    message: &Message,
    kind: FailureKind,
    error: &str,
    retry: ExponentialBuilder,
) -> Sent {
    let ours = ours(message, kind, error, source);
    let mut sdk_errors = 0;
    let mut from = Trim::Nothing;
    let result = loop {
        let Some((trim, attrs)) = fitting(message, &ours, from, dlq.max_message_size) else {
            break Err(SendError {
                queue: dlq.url.clone(),
                reason: format!(
                    "the message ({} bytes with its own attributes) is larger than the \
                     dead-letter queue's MaximumMessageSize ({} bytes)",
                    size(message.body(), &attributes(message, &ours, Trim::Ours)),
                    dlq.max_message_size
                ),
                class: None,
            });
        };
        let sent = (|| request(client, &dlq.url, message, attrs.clone()).send())
            .retry(retry)
            .when(|e| classify(e).is_transient())
            .notify(|e, d| {
                sdk_errors += 1;
                tracing::warn!(error = %describe(e), retry_in = ?d, "SendMessage to the dead-letter queue failed; retrying");
            })
            .await;
        match sent {
            Ok(_) => break Ok(trim),
            Err(e) => {
                sdk_errors += 1;
                match trim.next() {
                    Some(next) if too_large(&e) => {
                        tracing::warn!(
                            messaging.message.id = message.id(),
                            dead_letter_queue = %dlq.url,
                            error = %describe(&e),
                            "the dead-letter queue refused the message; sending it again with fewer SqsWorker attributes"
                        );
                        from = next;
                    }
                    _ => {
                        break Err(SendError {
                            queue: dlq.url.clone(),
                            reason: describe(&e).to_string(),
                            class: Some(classify(&e)),
                        });
                    }
                }
            }
        }
    };
    report(message, kind, &result);
    Sent { result, sdk_errors }
}

fn request(
    client: &aws_sdk_sqs::Client,
    dlq: &str,
    message: &Message,
    attributes: HashMap<String, MessageAttributeValue>,
) -> aws_sdk_sqs::operation::send_message::builders::SendMessageFluentBuilder {
    let mut req = client
        .send_message()
        .queue_url(dlq)
        .message_body(message.body())
        .set_message_attributes(Some(attributes));
    if dlq.ends_with(".fifo") {
        // A message from a standard queue has no group: its own id keeps it
        // from blocking the others.
        req = req
            .message_group_id(message.group_id().unwrap_or(message.id()))
            .message_deduplication_id(message.id());
    }
    if let Some(trace) = message.trace_header() {
        let v = MessageSystemAttributeValue::builder()
            .data_type("String")
            .string_value(trace)
            .build();
        if let Ok(v) = v {
            req = req
                .message_system_attributes(MessageSystemAttributeNameForSends::AwsTraceHeader, v);
        }
    }
    req
}

fn report(message: &Message, kind: FailureKind, result: &Result<Trim, SendError>) {
    match result {
        Ok(trim) => {
            metrics::counter!(names::DEAD_LETTERED).increment(1);
            tracing::info!(
                messaging.message.id = message.id(),
                kind = kind.as_str(),
                trimmed = ?trim,
                "message sent to the dead-letter queue"
            );
        }
        Err(e) => {
            metrics::counter!(names::SETTLEMENT_FAILURES, "action" => "dead_letter").increment(1);
            tracing::error!(
                messaging.message.id = message.id(),
                dead_letter_queue = %e.queue,
                reason = %e.reason,
                "sending a message to the dead-letter queue failed for good; it gets its retry delay"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use sqs_worker_core::MessageAttribute;

    use super::*;

    const SOURCE: SourceQueue<'static> = SourceQueue {
        url: "http://sqs/123456789012/orders",
        arn: "arn:aws:sqs:eu-west-1:123456789012:orders",
    };

    fn with_attributes(n: usize, body: &str) -> Message {
        let mut b = Message::builder("m-1", body).receive_count(3);
        for i in 0..n {
            b = b.message_attribute(format!("a{i}"), MessageAttribute::string("x"));
        }
        b.build()
    }

    fn plan(
        m: &Message,
        error: &str,
        limit: usize,
    ) -> Option<(Trim, HashMap<String, MessageAttributeValue>)> {
        let ours = ours(m, FailureKind::Permanent, error, SOURCE);
        fitting(m, &ours, Trim::Nothing, limit)
    }

    #[test]
    fn all_of_ours_without_original_attributes() {
        let m = with_attributes(0, "body");
        let (trim, a) = plan(&m, "card declined", DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        assert_eq!(trim, Trim::Nothing);
        assert_eq!(a.len(), 7);
        assert_eq!(a[SOURCE_QUEUE_URL].string_value(), Some(SOURCE.url));
        assert_eq!(a[SOURCE_QUEUE_ARN].string_value(), Some(SOURCE.arn));
        assert_eq!(a[ERROR_KIND].string_value(), Some("permanent"));
        assert_eq!(a[ERROR].string_value(), Some("card declined"));
        assert_eq!(a[MESSAGE_ID].string_value(), Some("m-1"));
        assert_eq!(a[RECEIVE_COUNT].data_type(), "Number");
        assert_eq!(a[RECEIVE_COUNT].string_value(), Some("3"));
        assert_eq!(a[FAILED_AT].data_type(), "Number");
    }

    #[test]
    fn originals_always_kept_and_ours_fill_free_slots_in_order() {
        let m = with_attributes(6, "body");
        let (_, a) = plan(&m, "e", DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        assert_eq!(a.len(), MAX_ATTRIBUTES);
        for i in 0..6 {
            assert!(a.contains_key(&format!("a{i}")));
        }
        for name in [SOURCE_QUEUE_URL, ERROR_KIND, ERROR, MESSAGE_ID] {
            assert!(a.contains_key(name), "{name}");
        }
        for name in [RECEIVE_COUNT, SOURCE_QUEUE_ARN, FAILED_AT] {
            assert!(!a.contains_key(name), "{name}");
        }
        // Nine originals: only the source queue URL, what a redrive tool needs first.
        let (_, a) = plan(&with_attributes(9, "b"), "e", DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        assert_eq!(a.len(), MAX_ATTRIBUTES);
        assert!(a.contains_key(SOURCE_QUEUE_URL));
        // Ten: none of ours, every original.
        let (_, a) = plan(&with_attributes(10, "b"), "e", DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        assert_eq!(a.len(), MAX_ATTRIBUTES);
        assert!(a.keys().all(|k| !k.starts_with("SqsWorker.")));
    }

    #[test]
    fn error_text_is_cut_at_the_limit_on_a_char_boundary() {
        let m = with_attributes(0, "b");
        let long = "é".repeat(2000);
        let (_, a) = plan(&m, &long, DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        let text = a[ERROR].string_value().unwrap();
        assert!(
            text.len() <= MAX_ERROR_LEN + '…'.len_utf8(),
            "{}",
            text.len()
        );
        assert!(text.ends_with('…'));
    }

    #[test]
    fn size_drops_the_error_text_then_all_of_ours() {
        let body = "x".repeat(900);
        let m = Message::builder("m-1", body.as_str())
            .message_attribute("tenant", MessageAttribute::string("acme"))
            .build();
        let error = "e".repeat(500);
        let all = size(
            &body,
            &attributes(
                &m,
                &ours(&m, FailureKind::Permanent, &error, SOURCE),
                Trim::Nothing,
            ),
        );
        assert!(all > 1024);
        // Room for everything but the error text.
        let (trim, a) = plan(&m, &error, 1300).unwrap();
        assert_eq!(trim, Trim::ErrorText);
        assert!(!a.contains_key(ERROR));
        assert!(a.contains_key(SOURCE_QUEUE_URL));
        assert!(size(&body, &a) <= 1300);
        // Room for the body and the originals only.
        let (trim, a) = plan(&m, &error, 1000).unwrap();
        assert_eq!(trim, Trim::Ours);
        assert_eq!(a.len(), 1);
        assert!(a.contains_key("tenant"));
        // Not even that.
        assert!(plan(&m, &error, 800).is_none());
    }

    #[test]
    fn size_counts_names_types_and_values() {
        let m = Message::builder("m", "abc")
            .message_attribute("n", MessageAttribute::string("vv"))
            .build();
        let a = attributes(&m, &[], Trim::Nothing);
        assert_eq!(size("abc", &a), 3 + 1 + "String".len() + 2);
    }
}
