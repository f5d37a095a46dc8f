//! Test helpers for business code: SQS events and messages without AWS, a
//! context with a real deadline, and assertions on the batch response.
//!
//! ```
//! use sqs_worker_core::{Error, Json};
//! use sqs_worker_lambda::testing::{assert_failed_ids, event, fifo_record, record, run_event};
//!
//! #[derive(serde::Deserialize)]
//! struct Order { order_id: u64 }
//!
//! async fn handle(Json(order): Json<Order>) -> Result<(), Error> {
//!     if order.order_id == 0 { return Err(Error::msg("no such order")); }
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let ev = event([
//!     record("m1", r#"{"order_id": 1}"#).string_attribute("tenant", "acme"),
//!     record("m2", r#"{"order_id": 0}"#).receive_count(3),
//! ]);
//! let resp = run_event(handle, ev).await.unwrap();
//! assert_failed_ids(&resp, ["m2"]);
//!
//! // FIFO: m2 fails, so m3 (same group) does not run; group B is unaffected.
//! let ev = event([
//!     fifo_record("m1", "A", r#"{"order_id": 1}"#),
//!     fifo_record("m2", "A", r#"{"order_id": 0}"#),
//!     fifo_record("m3", "A", r#"{"order_id": 3}"#),
//!     fifo_record("m4", "B", r#"{"order_id": 4}"#),
//! ]);
//! assert_failed_ids(&run_event(handle, ev).await.unwrap(), ["m2", "m3"]);
//! # }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage, SqsMessageAttribute};
use lambda_runtime::Context;
use sqs_worker_core::runner::{Engine, Processor};
use sqs_worker_core::{IntoHandler, Message, Visibility};

use crate::record::{EventError, SQS_EVENT_SOURCE, message_from_record};
use crate::service::LambdaService;

/// The queue ARN of [`record`]s.
pub const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:my-queue";
/// The queue ARN of [`fifo_record`]s.
pub const FIFO_QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:my-queue.fifo";
/// The time limit [`run_event`] gives an invocation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A standard-queue record as Lambda delivers it: `eventSource` `aws:sqs`,
/// the [`QUEUE_ARN`], a receipt handle, receive count 1 and the timestamps
/// of now.
pub fn record(id: impl Into<String>, body: impl Into<String>) -> RecordBuilder {
    let id = id.into();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
        .to_string();
    let mut r = SqsMessage::default();
    r.receipt_handle = Some(format!("AQEB-{id}-receipt"));
    r.md5_of_body = None;
    r.body = Some(body.into());
    for (k, v) in [
        ("ApproximateReceiveCount", "1".to_owned()),
        ("SentTimestamp", now.clone()),
        ("SenderId", "AIDAIENQZJOLO23YVJ4VO".to_owned()),
        ("ApproximateFirstReceiveTimestamp", now),
    ] {
        r.attributes.insert(k.to_owned(), v);
    }
    r.message_id = Some(id);
    r.event_source = Some(SQS_EVENT_SOURCE.to_owned());
    r.event_source_arn = Some(QUEUE_ARN.to_owned());
    r.aws_region = Some("us-east-1".to_owned());
    RecordBuilder { record: r }
}

/// A FIFO-queue record: like [`record`] on the [`FIFO_QUEUE_ARN`], with its
/// `MessageGroupId`, the id as `MessageDeduplicationId`, and an increasing
/// `SequenceNumber`.
pub fn fifo_record(
    id: impl Into<String>,
    group: impl Into<String>,
    body: impl Into<String>,
) -> RecordBuilder {
    static SEQUENCE: AtomicU64 = AtomicU64::new(1);
    let id = id.into();
    // 20 digits, like SQS's.
    let sequence = format!("18849496{:012}", SEQUENCE.fetch_add(1, Ordering::Relaxed));
    record(id.clone(), body)
        .queue_arn(FIFO_QUEUE_ARN)
        .group_id(group)
        .deduplication_id(id)
        .system_attribute("SequenceNumber", sequence)
}

/// Builds an SQS record ([`SqsMessage`]); start with [`record`] or
/// [`fifo_record`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RecordBuilder {
    record: SqsMessage,
}

impl RecordBuilder {
    /// Sets a system attribute by its SQS name (`ApproximateReceiveCount`,
    /// `AWSTraceHeader`, …).
    pub fn system_attribute(mut self, name: &str, value: impl Into<String>) -> Self {
        self.record.attributes.insert(name.to_owned(), value.into());
        self
    }

    /// `ApproximateReceiveCount`.
    pub fn receive_count(self, n: u32) -> Self {
        self.system_attribute("ApproximateReceiveCount", n.to_string())
    }

    /// `MessageGroupId`.
    pub fn group_id(self, group: impl Into<String>) -> Self {
        self.system_attribute("MessageGroupId", group)
    }

    /// `MessageDeduplicationId`.
    pub fn deduplication_id(self, id: impl Into<String>) -> Self {
        self.system_attribute("MessageDeduplicationId", id)
    }

    /// `AWSTraceHeader`.
    pub fn trace_header(self, header: impl Into<String>) -> Self {
        self.system_attribute("AWSTraceHeader", header)
    }

    /// A message attribute with any data type (`"String.custom"`, …) and a
    /// text value.
    pub fn attribute(
        mut self,
        name: impl Into<String>,
        data_type: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        let mut a = SqsMessageAttribute::default();
        a.data_type = Some(data_type.into());
        a.string_value = Some(value.into());
        self.record.message_attributes.insert(name.into(), a);
        self
    }

    /// A `String` message attribute.
    pub fn string_attribute(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attribute(name, "String", value)
    }

    /// A `Number` message attribute.
    pub fn number_attribute(self, name: impl Into<String>, value: impl ToString) -> Self {
        self.attribute(name, "Number", value.to_string())
    }

    /// A `Binary` message attribute.
    pub fn binary_attribute(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        let mut a = SqsMessageAttribute::default();
        a.data_type = Some("Binary".to_owned());
        let mut data = Base64Data::default();
        *data = value.into();
        a.binary_value = Some(data);
        self.record.message_attributes.insert(name.into(), a);
        self
    }

    /// The queue ARN (`eventSourceARN`).
    pub fn queue_arn(mut self, arn: impl Into<String>) -> Self {
        self.record.event_source_arn = Some(arn.into());
        self
    }

    /// The receipt handle.
    pub fn receipt_handle(mut self, handle: impl Into<String>) -> Self {
        self.record.receipt_handle = Some(handle.into());
        self
    }

    /// The record.
    pub fn build(self) -> SqsMessage {
        self.record
    }

    /// The [`Message`] the adapter makes of this record (no deadline), for
    /// unit tests of a handler.
    pub fn message(self) -> Message {
        // The builders always set the event source and the id.
        message_from_record(self.record, Visibility::unbacked())
            .unwrap_or_else(|e| panic!("not a valid SQS record: {e}"))
    }
}

impl From<RecordBuilder> for SqsMessage {
    fn from(b: RecordBuilder) -> Self {
        b.build()
    }
}

/// An SQS event of `records` ([`RecordBuilder`]s or [`SqsMessage`]s).
pub fn event<R: Into<SqsMessage>>(records: impl IntoIterator<Item = R>) -> SqsEvent {
    let mut e = SqsEvent::default();
    e.records = records.into_iter().map(Into::into).collect();
    e
}

/// A Lambda [`Context`] whose invocation ends `timeout` from now, with a
/// request id and function ARN (`Context::default()` has no deadline).
pub fn context(timeout: Duration) -> Context {
    static N: AtomicU64 = AtomicU64::new(0);
    let deadline = SystemTime::now() + timeout;
    let mut c = Context::default();
    c.deadline = deadline
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    c.request_id = format!("test-request-{}", N.fetch_add(1, Ordering::Relaxed));
    c.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test".to_owned();
    c
}

/// Runs `handler` (default engine settings) on `event` through the
/// [`LambdaService`], as one invocation with [`DEFAULT_TIMEOUT`].
pub async fn run_event<A, H: IntoHandler<A>>(
    handler: H,
    event: SqsEvent,
) -> Result<SqsBatchResponse, EventError> {
    invoke(
        &LambdaService::new(Engine::new(handler)),
        event,
        DEFAULT_TIMEOUT,
    )
    .await
}

/// Runs `event` through `service` as one invocation that ends `timeout` from
/// now.
pub async fn invoke<P: Processor>(
    service: &LambdaService<P>,
    event: SqsEvent,
    timeout: Duration,
) -> Result<SqsBatchResponse, EventError> {
    service.handle(event, &context(timeout)).await
}

/// The ids in `batchItemFailures`, in response order.
pub fn failed_ids(response: &SqsBatchResponse) -> Vec<&str> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect()
}

/// Asserts that `batchItemFailures` lists exactly `expected`, in any order.
#[track_caller]
pub fn assert_failed_ids<I, S>(response: &SqsBatchResponse, expected: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut got = failed_ids(response);
    got.sort_unstable();
    let expected: Vec<S> = expected.into_iter().collect();
    let mut want: Vec<&str> = expected.iter().map(AsRef::as_ref).collect();
    want.sort_unstable();
    assert!(
        got == want,
        "batchItemFailures: expected {want:?}, got {got:?} (order ignored)"
    );
}

/// Asserts that every record succeeded (`batchItemFailures` is empty).
#[track_caller]
pub fn assert_all_succeeded(response: &SqsBatchResponse) {
    assert_failed_ids(response, [] as [&str; 0]);
}
