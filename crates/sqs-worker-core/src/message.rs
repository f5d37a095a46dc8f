//! The message a handler sees, whatever the runner.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::json::decode_error;
use crate::visibility::Lease;

/// One SQS message: owned, immutable, and cheap to clone (one reference count).
///
/// Runners build it (from an `aws_sdk_sqs` message or a Lambda SQS record);
/// tests build it with [`Message::builder`].
#[derive(Clone)]
pub struct Message {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    receipt_handle: String,
    body: String,
    attributes: SystemAttributes,
    message_attributes: HashMap<String, MessageAttribute>,
    source: Option<String>,
    lease: Lease,
}

impl std::fmt::Debug for Message {
    /// Never prints the body or the receipt handle: they may hold personal data
    /// or act as a capability on the queue.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.inner.id)
            .field("body_len", &self.inner.body.len())
            .field("receive_count", &self.receive_count())
            .field("group_id", &self.group_id())
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

impl Message {
    /// Starts a message with its id and body (for tests and runners).
    #[inline]
    pub fn builder(id: impl Into<String>, body: impl Into<String>) -> MessageBuilder {
        MessageBuilder {
            id: id.into(),
            body: body.into(),
            receipt_handle: String::new(),
            attributes: SystemAttributes::default(),
            message_attributes: HashMap::new(),
            source: None,
            lease: Lease::unbacked(),
        }
    }

    /// The SQS message id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The receipt handle of this delivery (empty when the runner has none).
    pub fn receipt_handle(&self) -> &str {
        &self.inner.receipt_handle
    }

    /// The body as text (SQS bodies are always text).
    pub fn body(&self) -> &str {
        &self.inner.body
    }

    /// Deserializes the body as JSON.
    ///
    /// On failure the error is [permanent](crate::Action::Permanent) and names
    /// the message id and what serde found wrong, never the body itself.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.inner.body).map_err(|e| decode_error::<T>(self.id(), &e))
    }

    /// The typed system attributes.
    pub fn attributes(&self) -> &SystemAttributes {
        &self.inner.attributes
    }

    /// `ApproximateReceiveCount`: 1 on first delivery (1 when unknown).
    pub fn receive_count(&self) -> u32 {
        self.inner.attributes.approximate_receive_count.unwrap_or(1)
    }

    /// `SentTimestamp`.
    pub fn sent_at(&self) -> Option<SystemTime> {
        self.inner.attributes.sent_timestamp.map(millis_to_time)
    }

    /// `ApproximateFirstReceiveTimestamp`.
    pub fn first_received_at(&self) -> Option<SystemTime> {
        self.inner
            .attributes
            .approximate_first_receive_timestamp
            .map(millis_to_time)
    }

    /// How long ago the message was sent (now − `SentTimestamp`), if known.
    pub fn age(&self) -> Option<Duration> {
        self.sent_at()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
    }

    /// `MessageGroupId` (FIFO queues, and fair queues).
    pub fn group_id(&self) -> Option<&str> {
        self.inner.attributes.message_group_id.as_deref()
    }

    /// `MessageDeduplicationId` (FIFO queues).
    pub fn deduplication_id(&self) -> Option<&str> {
        self.inner.attributes.message_deduplication_id.as_deref()
    }

    /// `SequenceNumber` (FIFO queues).
    pub fn sequence_number(&self) -> Option<&str> {
        self.inner.attributes.sequence_number.as_deref()
    }

    /// `AWSTraceHeader`: the producer's X-Ray trace header, if any.
    pub fn trace_header(&self) -> Option<&str> {
        self.inner.attributes.aws_trace_header.as_deref()
    }

    /// All message attributes.
    pub fn message_attributes(&self) -> &HashMap<String, MessageAttribute> {
        &self.inner.message_attributes
    }

    /// One message attribute by name.
    pub fn message_attribute(&self, name: &str) -> Option<&MessageAttribute> {
        self.inner.message_attributes.get(name)
    }

    /// The source queue: its URL (poller) or ARN (Lambda), when known.
    pub fn source(&self) -> Option<&str> {
        self.inner.source.as_deref()
    }

    /// The visibility lease of this delivery: time left, and extension.
    pub fn lease(&self) -> &Lease {
        &self.inner.lease
    }

    /// When the message becomes visible again (poller) or the invocation ends
    /// (Lambda), if the runner knows.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.lease.deadline()
    }

    /// Time left before [`deadline`](Self::deadline).
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Asks for more time: the message stays invisible for `timeout` from now.
    ///
    /// Fails with [`VisibilityError::Unsupported`](crate::VisibilityError::Unsupported)
    /// when the runner cannot change visibility (e.g. Lambda without an SQS client).
    pub async fn extend_visibility(
        &self,
        timeout: Duration,
    ) -> Result<(), crate::visibility::VisibilityError> {
        self.inner.lease.extend(self, timeout).await
    }
}

fn millis_to_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Builds a [`Message`].
#[derive(Debug)]
#[must_use]
pub struct MessageBuilder {
    id: String,
    body: String,
    receipt_handle: String,
    attributes: SystemAttributes,
    message_attributes: HashMap<String, MessageAttribute>,
    source: Option<String>,
    lease: Lease,
}

impl MessageBuilder {
    /// The receipt handle.
    #[inline]
    pub fn receipt_handle(mut self, handle: impl Into<String>) -> Self {
        self.receipt_handle = handle.into();
        self
    }

    /// Replaces the system attributes.
    #[inline]
    pub fn attributes(mut self, attributes: SystemAttributes) -> Self {
        self.attributes = attributes;
        self
    }

    /// Sets one system attribute by its SQS name (e.g. `"ApproximateReceiveCount"`).
    #[inline]
    pub fn system_attribute(mut self, name: &str, value: impl Into<String>) -> Self {
        self.attributes.set(name, value.into());
        self
    }

    /// `ApproximateReceiveCount`.
    #[inline]
    pub fn receive_count(mut self, n: u32) -> Self {
        self.attributes.approximate_receive_count = Some(n);
        self
    }

    /// `MessageGroupId`.
    #[inline]
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.attributes.message_group_id = Some(group.into());
        self
    }

    /// `MessageDeduplicationId`.
    #[inline]
    pub fn deduplication_id(mut self, id: impl Into<String>) -> Self {
        self.attributes.message_deduplication_id = Some(id.into());
        self
    }

    /// Adds a message attribute.
    #[inline]
    pub fn message_attribute(mut self, name: impl Into<String>, value: MessageAttribute) -> Self {
        self.message_attributes.insert(name.into(), value);
        self
    }

    /// Replaces all message attributes.
    #[inline]
    pub fn message_attributes(mut self, attrs: HashMap<String, MessageAttribute>) -> Self {
        self.message_attributes = attrs;
        self
    }

    /// The source queue URL or ARN.
    #[inline]
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The visibility lease (runners set this).
    #[inline]
    pub fn lease(mut self, lease: Lease) -> Self {
        self.lease = lease;
        self
    }

    /// The message.
    #[inline]
    pub fn build(self) -> Message {
        Message {
            inner: Arc::new(Inner {
                id: self.id,
                receipt_handle: self.receipt_handle,
                body: self.body,
                attributes: self.attributes,
                message_attributes: self.message_attributes,
                source: self.source,
                lease: self.lease,
            }),
        }
    }
}

/// The SQS system attributes, typed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SystemAttributes {
    /// `ApproximateReceiveCount`.
    pub approximate_receive_count: Option<u32>,
    /// `SentTimestamp`, milliseconds since the Unix epoch.
    pub sent_timestamp: Option<u64>,
    /// `ApproximateFirstReceiveTimestamp`, milliseconds since the Unix epoch.
    pub approximate_first_receive_timestamp: Option<u64>,
    /// `MessageGroupId`.
    pub message_group_id: Option<String>,
    /// `MessageDeduplicationId`.
    pub message_deduplication_id: Option<String>,
    /// `SequenceNumber`.
    pub sequence_number: Option<String>,
    /// `AWSTraceHeader`.
    pub aws_trace_header: Option<String>,
    /// `SenderId`.
    pub sender_id: Option<String>,
    /// `DeadLetterQueueSourceArn`.
    pub dead_letter_queue_source_arn: Option<String>,
}

impl SystemAttributes {
    /// Sets an attribute from its SQS name and text value. Unknown names are
    /// ignored; a number that does not parse leaves the field unset.
    pub fn set(&mut self, name: &str, value: String) {
        match name {
            "ApproximateReceiveCount" => self.approximate_receive_count = parse_decimal(&value),
            "SentTimestamp" => self.sent_timestamp = parse_decimal(&value),
            "ApproximateFirstReceiveTimestamp" => {
                self.approximate_first_receive_timestamp = parse_decimal(&value)
            }
            "MessageGroupId" => self.message_group_id = Some(value),
            "MessageDeduplicationId" => self.message_deduplication_id = Some(value),
            "SequenceNumber" => self.sequence_number = Some(value),
            "AWSTraceHeader" => self.aws_trace_header = Some(value),
            "SenderId" => self.sender_id = Some(value),
            "DeadLetterQueueSourceArn" => self.dead_letter_queue_source_arn = Some(value),
            _ => {}
        }
    }

    /// Builds the attributes from `(name, value)` pairs.
    pub fn from_pairs<I, K>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, String)>,
        K: AsRef<str>,
    {
        let mut attrs = Self::default();
        for (k, v) in pairs {
            attrs.set(k.as_ref(), v);
        }
        attrs
    }
}

/// `s.parse::<T>().ok()` for an unsigned integer type, faster for the short
/// decimal numbers SQS sends (no per-digit overflow check below 20 digits).
pub(crate) fn parse_decimal<T: TryFrom<u64> + std::str::FromStr>(s: &str) -> Option<T> {
    let digits = s.strip_prefix('+').unwrap_or(s).as_bytes();
    if digits.is_empty() || digits.len() > 19 {
        return s.parse().ok();
    }
    let mut n = 0u64;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + u64::from(d);
    }
    T::try_from(n).ok()
}

/// A message attribute: its SQS data type (e.g. `"String"`, `"Number.int"`,
/// `"Binary.gzip"`) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAttribute {
    /// The full data type, custom suffix included.
    pub data_type: String,
    /// The value.
    pub value: AttributeValue,
}

/// The value of a message attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// A `String` (or unknown text) attribute.
    String(String),
    /// A `Number` attribute, kept as SQS sends it (decimal text).
    Number(String),
    /// A `Binary` attribute (decoded bytes).
    Binary(Vec<u8>),
}

impl MessageAttribute {
    /// A `String` attribute.
    pub fn string(value: impl Into<String>) -> Self {
        Self {
            data_type: "String".into(),
            value: AttributeValue::String(value.into()),
        }
    }

    /// A `Number` attribute.
    pub fn number(value: impl ToString) -> Self {
        Self {
            data_type: "Number".into(),
            value: AttributeValue::Number(value.to_string()),
        }
    }

    /// A `Binary` attribute.
    pub fn binary(value: impl Into<Vec<u8>>) -> Self {
        Self {
            data_type: "Binary".into(),
            value: AttributeValue::Binary(value.into()),
        }
    }

    /// Builds an attribute from the parts SQS and Lambda deliver. The data
    /// type's prefix picks the variant; an unknown type keeps whichever value is
    /// present (text first), so nothing is lost. `None` when there is no value.
    pub fn from_parts(
        data_type: String,
        string_value: Option<String>,
        binary_value: Option<Vec<u8>>,
    ) -> Option<Self> {
        let value = if data_type.starts_with("Binary") {
            AttributeValue::Binary(binary_value?)
        } else if data_type.starts_with("Number") {
            AttributeValue::Number(string_value?)
        } else {
            match (string_value, binary_value) {
                (Some(s), _) => AttributeValue::String(s),
                (None, Some(b)) => AttributeValue::Binary(b),
                (None, None) => return None,
            }
        };
        Some(Self { data_type, value })
    }

    /// The value as text, for `String` and `Number` attributes.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            AttributeValue::String(s) | AttributeValue::Number(s) => Some(s),
            AttributeValue::Binary(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_attributes_and_cheap_clone() {
        let m = Message::builder("m-1", r#"{"a":1}"#)
            .system_attribute("ApproximateReceiveCount", "3")
            .system_attribute("SentTimestamp", "1700000000000")
            .system_attribute("MessageGroupId", "g")
            .system_attribute("Unknown", "x")
            .message_attribute("n", MessageAttribute::number(5))
            .build();
        let c = m.clone();
        assert!(Arc::ptr_eq(&m.inner, &c.inner));
        assert_eq!(m.receive_count(), 3);
        assert_eq!(m.group_id(), Some("g"));
        assert_eq!(
            m.sent_at(),
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_000))
        );
        assert_eq!(m.message_attribute("n").and_then(|a| a.as_str()), Some("5"));
        let dbg = format!("{m:?}");
        assert!(
            !dbg.contains("\"a\""),
            "Debug must not print the body: {dbg}"
        );
    }

    #[test]
    fn decimal_parsing_matches_std() {
        for s in [
            "",
            "+",
            "-1",
            "0",
            "+7",
            "4294967295",
            "4294967296",
            "1545082649183",
            "18446744073709551615",
            "18446744073709551616",
            "00000000000000000000001",
            "1a",
            " 1",
            "++1",
            "٣",
        ] {
            assert_eq!(parse_decimal::<u32>(s), s.parse::<u32>().ok(), "{s:?}");
            assert_eq!(parse_decimal::<u64>(s), s.parse::<u64>().ok(), "{s:?}");
        }
    }

    #[test]
    fn attribute_types_from_parts() {
        let a = MessageAttribute::from_parts("Number.int".into(), Some("7".into()), None);
        assert_eq!(a.map(|a| a.value), Some(AttributeValue::Number("7".into())));
        let b = MessageAttribute::from_parts("Binary.gz".into(), None, Some(vec![1, 2]));
        assert_eq!(b.map(|a| a.value), Some(AttributeValue::Binary(vec![1, 2])));
        let unknown = MessageAttribute::from_parts("Weird".into(), Some("s".into()), None);
        assert_eq!(unknown.map(|a| a.data_type), Some("Weird".to_string()));
        assert!(MessageAttribute::from_parts("Binary".into(), Some("x".into()), None).is_none());
    }
}
