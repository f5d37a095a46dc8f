//! Building a [`Message`] field by field (tests and tools).

use std::sync::Arc;

use super::{
    Inner, Message, MessageAttribute, MessageAttributes, MessageParts, PayloadOrigin, Source,
    SystemAttributes,
};
use crate::visibility::Visibility;

/// Builds a [`Message`].
#[derive(Debug)]
#[must_use]
pub struct MessageBuilder {
    pub(super) parts: MessageParts,
    pub(super) payload: Option<Box<PayloadOrigin>>,
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

    /// `SequenceNumber` (FIFO queues only: a message with one
    /// [is from a FIFO queue](Message::is_fifo)).
    #[inline]
    pub fn sequence_number(mut self, sequence: impl Into<String>) -> Self {
        self.parts.attributes.sequence_number = Some(sequence.into());
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

    /// The visibility handle (runners set this).
    #[inline]
    pub fn visibility(mut self, visibility: Visibility) -> Self {
        self.parts.visibility = visibility;
        self
    }

    /// Where the body came from (an S3 object), for tests of handlers that
    /// read [`Message::payload_origin`].
    #[inline]
    pub fn payload_origin(mut self, origin: PayloadOrigin) -> Self {
        self.payload = Some(Box::new(origin));
        self
    }

    /// The message.
    #[inline]
    pub fn build(self) -> Message {
        Message {
            inner: Arc::new(Inner {
                parts: self.parts,
                payload: self.payload,
            }),
        }
    }
}
