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

/// What a message holds. Runners fill it in one go
/// ([`Message::from_parts`]); everyone else uses [`Message::builder`].
/// Construct it with [`MessageParts::new`] and set fields, or with a struct
/// literal ending in `..MessageParts::new(id, body)`: fields may be added.
pub struct MessageParts {
    /// The SQS message id.
    pub id: String,
    /// The receipt handle of this delivery (empty when there is none).
    pub receipt_handle: String,
    /// The body.
    pub body: String,
    /// The typed system attributes.
    pub attributes: SystemAttributes,
    /// The message attributes.
    pub message_attributes: MessageAttributes,
    /// The source queue URL (poller) or ARN (Lambda).
    pub source: Option<Source>,
    /// The visibility lease.
    pub lease: Lease,
}

impl MessageParts {
    /// Parts with an id and a body, everything else empty.
    pub fn new(id: String, body: String) -> Self {
        Self {
            id,
            receipt_handle: String::new(),
            body,
            attributes: SystemAttributes::default(),
            message_attributes: MessageAttributes::new(),
            source: None,
            lease: Lease::unbacked(),
        }
    }
}

impl std::fmt::Debug for MessageParts {
    /// Like [`Message`]'s: never the body or the receipt handle.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageParts")
            .field("id", &self.id)
            .field("body_len", &self.body.len())
            .field("attributes", &self.attributes)
            .field("message_attributes", &self.message_attributes.len())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

type Inner = MessageParts;

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
    /// Starts a message with its id and body (for tests and tools).
    #[inline]
    pub fn builder(id: impl Into<String>, body: impl Into<String>) -> MessageBuilder {
        MessageBuilder {
            parts: MessageParts::new(id.into(), body.into()),
        }
    }

    /// A message from all its parts at once: what runners use, since it moves
    /// the parts into the message's one allocation without a builder chain.
    #[inline]
    pub fn from_parts(parts: MessageParts) -> Self {
        Self {
            inner: Arc::new(parts),
        }
    }

    /// This message's identity: equal for its clones, different from every
    /// other live message (each delivery is its own `Message`, so two
    /// deliveries of one SQS message differ). Runners key in-flight tables by
    /// it instead of hashing the receipt handle. Only meaningful while the
    /// message is alive: keep a clone next to the key.
    #[inline]
    pub fn key(&self) -> MessageKey {
        MessageKey(Arc::as_ptr(&self.inner) as usize)
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
    pub fn message_attributes(&self) -> &MessageAttributes {
        &self.inner.message_attributes
    }

    /// One message attribute by name.
    pub fn message_attribute(&self, name: &str) -> Option<&MessageAttribute> {
        self.inner.message_attributes.get(name)
    }

    /// The source queue: its URL (poller) or ARN (Lambda), when known.
    pub fn source(&self) -> Option<&str> {
        self.inner.source.as_ref().map(Source::as_str)
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
    parts: MessageParts,
}

impl MessageBuilder {
    /// The receipt handle.
    #[inline]
    pub fn receipt_handle(mut self, handle: impl Into<String>) -> Self {
        self.parts.receipt_handle = handle.into();
        self
    }

    /// Replaces the system attributes.
    #[inline]
    pub fn attributes(mut self, attributes: SystemAttributes) -> Self {
        self.parts.attributes = attributes;
        self
    }

    /// Sets one system attribute by its SQS name (e.g. `"ApproximateReceiveCount"`).
    #[inline]
    pub fn system_attribute(mut self, name: &str, value: impl Into<String>) -> Self {
        self.parts.attributes.set(name, value.into());
        self
    }

    /// `ApproximateReceiveCount`.
    #[inline]
    pub fn receive_count(mut self, n: u32) -> Self {
        self.parts.attributes.approximate_receive_count = Some(n);
        self
    }

    /// `MessageGroupId`.
    #[inline]
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.parts.attributes.message_group_id = Some(group.into());
        self
    }

    /// `MessageDeduplicationId`.
    #[inline]
    pub fn deduplication_id(mut self, id: impl Into<String>) -> Self {
        self.parts.attributes.message_deduplication_id = Some(id.into());
        self
    }

    /// Adds a message attribute (replacing one of the same name).
    #[inline]
    pub fn message_attribute(mut self, name: impl Into<String>, value: MessageAttribute) -> Self {
        self.parts.message_attributes.insert(name, value);
        self
    }

    /// Replaces all message attributes (a [`MessageAttributes`] or a
    /// `HashMap<String, MessageAttribute>`).
    #[inline]
    pub fn message_attributes(mut self, attrs: impl Into<MessageAttributes>) -> Self {
        self.parts.message_attributes = attrs.into();
        self
    }

    /// The source queue URL or ARN.
    #[inline]
    pub fn source(mut self, source: impl Into<Source>) -> Self {
        self.parts.source = Some(source.into());
        self
    }

    /// The visibility lease (runners set this).
    #[inline]
    pub fn lease(mut self, lease: Lease) -> Self {
        self.parts.lease = lease;
        self
    }

    /// The message.
    #[inline]
    pub fn build(self) -> Message {
        Message::from_parts(self.parts)
    }
}

/// A [`Message`]'s identity ([`Message::key`]). It hashes cheaply: use
/// [`MessageKeyHasher`] as the map's hasher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageKey(usize);

/// A [`Hasher`](std::hash::Hasher) for [`MessageKey`]s: one multiply (the
/// keys are addresses, unique already, and need no protection against
/// crafted collisions).
#[derive(Debug, Default, Clone, Copy)]
pub struct MessageKeyHasher(u64);

impl std::hash::Hasher for MessageKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `MessageKey`; correct for anything else.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        // A folded 128-bit multiply spreads the address over every bit (the
        // low bits of aligned addresses are always zero).
        let m = u128::from(self.0 ^ n) * 0x9E37_79B9_7F4A_7C15;
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

/// A message's source queue (URL or ARN): its own string, or one shared by
/// every message from the queue (the poller's queue URL), which costs a
/// reference count instead of a copy per message.
#[derive(Clone, PartialEq, Eq)]
pub struct Source(SourceRepr);

#[derive(Clone, PartialEq, Eq)]
enum SourceRepr {
    Owned(String),
    Shared(Arc<str>),
}

impl Source {
    /// The URL or ARN.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            SourceRepr::Owned(s) => s,
            SourceRepr::Shared(s) => s,
        }
    }
}

impl std::ops::Deref for Source {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Source {
    fn from(s: String) -> Self {
        Self(SourceRepr::Owned(s))
    }
}

impl From<&str> for Source {
    fn from(s: &str) -> Self {
        Self(SourceRepr::Owned(s.to_owned()))
    }
}

impl From<Arc<str>> for Source {
    fn from(s: Arc<str>) -> Self {
        Self(SourceRepr::Shared(s))
    }
}

impl From<&Arc<str>> for Source {
    fn from(s: &Arc<str>) -> Self {
        Self(SourceRepr::Shared(s.clone()))
    }
}

/// The message attributes of a message, by name.
///
/// SQS allows at most 10 per message, so they are kept as a short list in
/// arrival order and found by comparing names: cheaper to build, drop and
/// search than a hash map at that size. Names are unique
/// ([`insert`](Self::insert) replaces). Equality ignores order.
#[derive(Clone, Default)]
pub struct MessageAttributes {
    entries: Vec<(String, MessageAttribute)>,
}

impl MessageAttributes {
    /// No attributes.
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// No attributes, with room for `n`.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
        }
    }

    /// The attribute called `name`.
    pub fn get(&self, name: &str) -> Option<&MessageAttribute> {
        self.entries.iter().find(|(k, _)| k == name).map(|(_, a)| a)
    }

    /// Whether there is an attribute called `name`.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` to `value`, returning the value it replaces.
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        value: MessageAttribute,
    ) -> Option<MessageAttribute> {
        let name = name.into();
        match self.entries.iter_mut().find(|(k, _)| *k == name) {
            Some((_, old)) => Some(std::mem::replace(old, value)),
            None => {
                self.entries.push((name, value));
                None
            }
        }
    }

    /// Removes the attribute called `name`.
    pub fn remove(&mut self, name: &str) -> Option<MessageAttribute> {
        let i = self.entries.iter().position(|(k, _)| k == name)?;
        Some(self.entries.remove(i).1)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Names and attributes, in arrival order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&String, &MessageAttribute)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The names, in arrival order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &String> {
        self.entries.iter().map(|(k, _)| k)
    }
}

impl std::fmt::Debug for MessageAttributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl PartialEq for MessageAttributes {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl Eq for MessageAttributes {}

impl<'a> IntoIterator for &'a MessageAttributes {
    type Item = (&'a String, &'a MessageAttribute);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, MessageAttribute)>,
        fn(&'a (String, MessageAttribute)) -> (&'a String, &'a MessageAttribute),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl IntoIterator for MessageAttributes {
    type Item = (String, MessageAttribute);
    type IntoIter = std::vec::IntoIter<(String, MessageAttribute)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<K: Into<String>> FromIterator<(K, MessageAttribute)> for MessageAttributes {
    fn from_iter<I: IntoIterator<Item = (K, MessageAttribute)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut out = Self::with_capacity(iter.size_hint().0);
        out.extend(iter);
        out
    }
}

impl<K: Into<String>> Extend<(K, MessageAttribute)> for MessageAttributes {
    fn extend<I: IntoIterator<Item = (K, MessageAttribute)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<S> From<HashMap<String, MessageAttribute, S>> for MessageAttributes {
    fn from(map: HashMap<String, MessageAttribute, S>) -> Self {
        // Keys of a map are unique already.
        Self {
            entries: map.into_iter().collect(),
        }
    }
}

impl From<MessageAttributes> for HashMap<String, MessageAttribute> {
    fn from(attrs: MessageAttributes) -> Self {
        attrs.entries.into_iter().collect()
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
/// decimal numbers SQS sends: eight digits at a time, and no per-digit
/// overflow check below 20 digits.
pub(crate) fn parse_decimal<T: TryFrom<u64> + std::str::FromStr>(s: &str) -> Option<T> {
    let mut digits = s.strip_prefix('+').unwrap_or(s).as_bytes();
    if digits.is_empty() || digits.len() > 19 {
        return s.parse().ok();
    }
    let mut n = 0u64;
    while let Some((chunk, rest)) = digits.split_first_chunk::<8>() {
        n = n * 100_000_000 + eight_digits(u64::from_le_bytes(*chunk))?;
        digits = rest;
    }
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + u64::from(d);
    }
    T::try_from(n).ok()
}

/// The value of eight ASCII digits read as a little-endian `u64` (first digit
/// in the lowest byte), or `None` if any byte is not a digit.
#[inline]
fn eight_digits(chunk: u64) -> Option<u64> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // Every byte 0x30..=0x3F, and still 0x3_ after adding 6 (so ≤ 0x39);
    // adding 6 to bytes ≤ 0x3F never carries into the next byte.
    let high = 0xF0 * ONES;
    if chunk & high != 0x30 * ONES || (chunk + 6 * ONES) & high != 0x30 * ONES {
        return None;
    }
    let v = chunk - 0x30 * ONES;
    // Pairs, then quads, then all eight: each step multiplies the more
    // significant half and adds the other.
    let v = (v * 10 + (v >> 8)) & 0x00FF_00FF_00FF_00FF;
    let v = (v * 100 + (v >> 16)) & 0x0000_FFFF_0000_FFFF;
    Some((v * 10_000 + (v >> 32)) & 0xFFFF_FFFF)
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
            "12345678",
            "1234567890123",
            "9999999999999999999",
            "1234567/",
            "1234567:",
            "12345678a",
            "0000000012345678",
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
    fn message_attributes_by_name() {
        let mut a = MessageAttributes::new();
        assert!(a.insert("x", MessageAttribute::string("1")).is_none());
        a.insert("y", MessageAttribute::number(2));
        let old = a.insert("x", MessageAttribute::string("3"));
        assert_eq!(old, Some(MessageAttribute::string("1")), "insert replaces");
        assert_eq!(a.len(), 2);
        assert_eq!(a.get("x").and_then(|v| v.as_str()), Some("3"));
        assert!(a.get("z").is_none() && a.contains_key("y"));
        assert_eq!(a.keys().collect::<Vec<_>>(), ["x", "y"], "arrival order");

        // Equal whatever the order; a HashMap converts both ways.
        let b: MessageAttributes = [
            ("y", MessageAttribute::number(2)),
            ("x", MessageAttribute::string("3")),
        ]
        .into_iter()
        .collect();
        assert_eq!(a, b);
        let map: HashMap<String, MessageAttribute> = b.clone().into();
        assert_eq!(MessageAttributes::from(map), a);
        assert_ne!(a, MessageAttributes::new());
        assert_eq!(a.clone().remove("y"), Some(MessageAttribute::number(2)));
        assert_eq!(
            format!("{a:?}"),
            r#"{"x": MessageAttribute { data_type: "String", value: String("3") }, "y": MessageAttribute { data_type: "Number", value: Number("2") }}"#
        );
    }

    #[test]
    fn shared_and_owned_sources_read_alike() {
        let url: Arc<str> = "https://sqs.eu-west-1.amazonaws.com/1/q".into();
        let shared = Message::builder("a", "").source(&url).build();
        let owned = Message::builder("b", "").source(url.to_string()).build();
        assert_eq!(shared.source(), Some(&*url));
        assert_eq!(shared.source(), owned.source());
        assert_eq!(Arc::strong_count(&url), 2, "shared, not copied");
    }

    #[test]
    fn parts_debug_hides_body_and_handle() {
        let mut p = MessageParts::new("m-1".into(), "secret body".into());
        p.receipt_handle = "AQEB-handle".into();
        let dbg = format!("{p:?}");
        assert!(dbg.contains("m-1") && !dbg.contains("secret") && !dbg.contains("AQEB"));
        let m = Message::from_parts(p);
        assert_eq!(
            (m.body(), m.receipt_handle()),
            ("secret body", "AQEB-handle")
        );
    }

    #[test]
    fn decimal_parsing_checks_every_byte_of_a_chunk() {
        // Each position of 8- and 13-digit numbers, set to every ASCII byte.
        for base in ["12345678", "1700000000123"] {
            for pos in 0..base.len() {
                for b in 0u8..0x80 {
                    let mut bytes = base.as_bytes().to_vec();
                    bytes[pos] = b;
                    let s = String::from_utf8(bytes).unwrap();
                    assert_eq!(parse_decimal::<u64>(&s), s.parse::<u64>().ok(), "{s:?}");
                }
            }
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
