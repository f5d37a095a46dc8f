//! The message a handler sees, whatever the runner.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::json::decode_error;
use crate::visibility::Visibility;

mod attributes;
mod builder;
mod key;
mod origin;
mod system;

pub use self::attributes::{AttributeValue, MessageAttribute, MessageAttributes};
pub use self::builder::MessageBuilder;
pub use self::key::{MessageKey, MessageKeyHasher};
pub use self::origin::PayloadOrigin;
pub use self::system::SystemAttributes;

/// One SQS message: owned, immutable, and cheap to clone (one reference count).
///
/// Runners build it (from an `aws_sdk_sqs` message or a Lambda SQS record);
/// tests build it with [`Message::builder`].
#[derive(Clone)]
pub struct Message {
    inner: Arc<Inner>,
}

/// What a message holds. Runners fill it in one go
/// ([`MessageParts::into_message`]); everyone else uses [`Message::builder`].
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
    /// The visibility handle.
    pub visibility: Visibility,
}

impl MessageParts {
    /// The message, from all its parts at once: what runners use, since it
    /// moves the parts into the message's one allocation without a builder
    /// chain.
    #[inline]
    pub fn into_message(self) -> Message {
        Message {
            inner: Arc::new(Inner {
                parts: self,
                payload: None,
            }),
        }
    }

    /// Parts with an id and a body, everything else empty.
    pub fn new(id: String, body: String) -> Self {
        Self {
            id,
            receipt_handle: String::new(),
            body,
            attributes: SystemAttributes::default(),
            message_attributes: MessageAttributes::new(),
            source: None,
            visibility: Visibility::unbacked(),
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

/// What a message's one allocation holds: its parts, and where its body came
/// from when that was S3 (`None`, one empty pointer, for every other message).
struct Inner {
    parts: MessageParts,
    payload: Option<Box<PayloadOrigin>>,
}

impl std::ops::Deref for Inner {
    type Target = MessageParts;
    #[inline]
    fn deref(&self) -> &MessageParts {
        &self.parts
    }
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
            .field("payload_origin", &self.inner.payload)
            .finish_non_exhaustive()
    }
}

impl Message {
    /// Starts a message with its id and body (for tests and tools).
    #[inline]
    pub fn builder(id: impl Into<String>, body: impl Into<String>) -> MessageBuilder {
        MessageBuilder {
            parts: MessageParts::new(id.into(), body.into()),
            payload: None,
        }
    }

    /// Where the body came from when it is not the SQS message's own: the S3
    /// object of an Amazon SQS Extended Client payload (bucket, key, size),
    /// set when the large-payload layer fetched it. `None` otherwise.
    pub fn payload_origin(&self) -> Option<&PayloadOrigin> {
        self.inner.payload.as_deref()
    }

    /// This delivery with another body read from `origin`: the same id,
    /// receipt handle, attributes, source and visibility, and the same
    /// identity ([`MessageKey`]), so the runner settles and extends it as the
    /// delivery it is. What the large-payload layer hands the handler.
    pub fn with_payload(&self, body: String, mut origin: PayloadOrigin) -> Message {
        let p = &self.inner.parts;
        origin.delivery = Some(self.delivery().clone());
        Message {
            inner: Arc::new(Inner {
                parts: MessageParts {
                    id: p.id.clone(),
                    receipt_handle: p.receipt_handle.clone(),
                    body,
                    attributes: p.attributes.clone(),
                    message_attributes: p.message_attributes.clone(),
                    source: p.source.clone(),
                    visibility: p.visibility.clone(),
                },
                payload: Some(Box::new(origin)),
            }),
        }
    }

    /// The delivery this message is (itself, or the one whose pointer body
    /// it replaced).
    #[inline]
    pub(crate) fn delivery(&self) -> &Message {
        match self.inner.payload.as_deref() {
            Some(PayloadOrigin {
                delivery: Some(d), ..
            }) => d,
            _ => self,
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
    ///
    /// On a FIFO queue it orders messages; on a standard queue it is only a
    /// tenant label ("fair queues") and orders nothing: see
    /// [`fifo_group_id`](Self::fifo_group_id).
    pub fn group_id(&self) -> Option<&str> {
        self.inner.attributes.message_group_id.as_deref()
    }

    /// Whether the message comes from a FIFO queue: it carries a
    /// `SequenceNumber` (only FIFO messages do), or its source queue URL or
    /// ARN ends in `.fifo` (the name of every FIFO queue does, and only
    /// theirs).
    pub fn is_fifo(&self) -> bool {
        self.inner.attributes.sequence_number.is_some()
            || self
                .inner
                .source
                .as_ref()
                .is_some_and(|s| s.ends_with(".fifo"))
    }

    /// The group id when it orders: `MessageGroupId` of a message from a
    /// [FIFO queue](Self::is_fifo); `None` on a standard (fair) queue, whose
    /// messages of one group may run in parallel and in any order.
    pub fn fifo_group_id(&self) -> Option<&str> {
        self.group_id().filter(|_| self.is_fifo())
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

    /// The visibility of this delivery: its deadline, time left, and extension.
    pub fn visibility(&self) -> &Visibility {
        &self.inner.visibility
    }

    /// When the message becomes visible again (poller) or the invocation ends
    /// (Lambda), if the runner knows.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.visibility.deadline()
    }

    /// Time left before [`deadline`](Self::deadline).
    pub fn time_left(&self) -> Option<Duration> {
        self.inner.visibility.time_left()
    }

    /// Asks for more time: the message stays invisible for `timeout` from now.
    ///
    /// Fails with [`VisibilityError::Unsupported`](crate::VisibilityError::Unsupported)
    /// when the runner cannot change visibility (e.g. Lambda without an SQS client).
    pub async fn extend_visibility(
        &self,
        timeout: Duration,
    ) -> Result<(), crate::visibility::VisibilityError> {
        self.inner.visibility.extend(self, timeout).await
    }
}

fn millis_to_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
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
    fn a_group_id_orders_only_on_fifo_queues() {
        let fair = Message::builder("a", "")
            .group_id("t1")
            .source("https://sqs.eu-west-1.amazonaws.com/1/q")
            .build();
        assert!(!fair.is_fifo());
        assert_eq!((fair.group_id(), fair.fifo_group_id()), (Some("t1"), None));
        let by_url = Message::builder("b", "")
            .group_id("g")
            .source("https://sqs.eu-west-1.amazonaws.com/1/q.fifo")
            .build();
        assert_eq!(by_url.fifo_group_id(), Some("g"));
        let by_arn = Message::builder("c", "")
            .group_id("g")
            .source("arn:aws:sqs:eu-west-1:1:q.fifo")
            .build();
        assert!(by_arn.is_fifo());
        let by_sequence = Message::builder("d", "")
            .group_id("g")
            .sequence_number("1")
            .build();
        assert_eq!(by_sequence.fifo_group_id(), Some("g"));
        assert!(!Message::builder("e", "").group_id("g").build().is_fifo());
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
    fn a_resolved_payload_keeps_the_delivery_and_says_where_it_came_from() {
        let delivery = Message::builder("m-1", "[\"pointer\"]")
            .receipt_handle("rh")
            .receive_count(2)
            .message_attribute("a", MessageAttribute::string("v"))
            .source("arn:q")
            .build();
        assert_eq!(delivery.payload_origin(), None);
        let resolved =
            delivery.with_payload("the payload".into(), PayloadOrigin::new("b", "k", 11));
        assert_eq!(resolved.body(), "the payload");
        assert_eq!(
            (
                resolved.id(),
                resolved.receipt_handle(),
                resolved.receive_count()
            ),
            ("m-1", "rh", 2)
        );
        assert_eq!(resolved.message_attributes(), delivery.message_attributes());
        assert_eq!(resolved.source(), Some("arn:q"));
        let origin = resolved.payload_origin().unwrap();
        assert_eq!((&*origin.bucket, &*origin.key, origin.size), ("b", "k", 11));
        assert_eq!(
            MessageKey::of(&resolved),
            MessageKey::of(&delivery),
            "one delivery"
        );
        let again = resolved.with_payload("x".into(), PayloadOrigin::new("b", "k2", 1));
        assert_eq!(MessageKey::of(&again), MessageKey::of(&delivery));
        let other = Message::builder("m-1", "").build();
        assert_ne!(MessageKey::of(&other), MessageKey::of(&delivery));
        assert!(format!("{resolved:?}").contains("\"k\""));
    }

    #[test]
    fn parts_debug_hides_body_and_handle() {
        let mut p = MessageParts::new("m-1".into(), "secret body".into());
        p.receipt_handle = "AQEB-handle".into();
        let dbg = format!("{p:?}");
        assert!(dbg.contains("m-1") && !dbg.contains("secret") && !dbg.contains("AQEB"));
        let m = p.into_message();
        assert_eq!(
            (m.body(), m.receipt_handle()),
            ("secret body", "AQEB-handle")
        );
    }
}
