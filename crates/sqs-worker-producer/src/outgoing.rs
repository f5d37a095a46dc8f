//! A message to send, with its per-message options.

use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqs_worker_core::{AttributeValue, MessageAttribute, MessageAttributes};

use crate::error::SendError;

/// SQS's longest `DelaySeconds`: 15 minutes.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// One message to send: a body and its options (delay, message attributes,
/// FIFO group and deduplication id).
///
/// ```
/// use std::time::Duration;
/// use sqs_worker_producer::Outgoing;
///
/// let msg = Outgoing::new(r#"{"order_id":1}"#)
///     .delay(Duration::from_secs(30))
///     .string_attribute("tenant", "acme");
/// # let _ = msg;
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Outgoing {
    pub(crate) body: String,
    pub(crate) attributes: MessageAttributes,
    pub(crate) delay: Option<Duration>,
    pub(crate) group_id: Option<String>,
    pub(crate) dedup: Option<Dedup>,
}

#[derive(Debug, Clone)]
pub(crate) enum Dedup {
    /// The caller's id, as is.
    Id(String),
    /// SHA-256 of the caller's key and the body.
    Key(String),
}

impl Outgoing {
    /// A message with this body (text; SQS bodies are Unicode).
    pub fn new(body: impl Into<String>) -> Self {
        Self {
            body: body.into(),
            ..Self::default()
        }
    }

    /// A message whose body is `value` as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, SendError> {
        serde_json::to_string(value)
            .map(Self::new)
            .map_err(|source| SendError::Serialize { index: 0, source })
    }

    /// Delivers the message after `delay` (at most 900 s; standard queues).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Adds a message attribute (replacing one of the same name).
    pub fn attribute(mut self, name: impl Into<String>, value: MessageAttribute) -> Self {
        self.attributes.insert(name, value);
        self
    }

    /// Adds a `String` message attribute.
    pub fn string_attribute(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attribute(name, MessageAttribute::string(value))
    }

    /// Replaces all message attributes.
    pub fn attributes(mut self, attributes: impl Into<MessageAttributes>) -> Self {
        self.attributes = attributes.into();
        self
    }

    /// `MessageGroupId`: required on FIFO queues (order within the group); on
    /// a standard queue, the tenant of a fair queue. Sent in both cases.
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.group_id = Some(group.into());
        self
    }

    /// `MessageDeduplicationId` (FIFO queues), used as given.
    pub fn deduplication_id(mut self, id: impl Into<String>) -> Self {
        self.dedup = Some(Dedup::Id(id.into()));
        self
    }

    /// Derives the deduplication id (FIFO queues) from `key` and the body
    /// (SHA-256): two sends with the same key and body within SQS's 5-minute
    /// window are one message; different keys never collide.
    pub fn deduplication_key(mut self, key: impl Into<String>) -> Self {
        self.dedup = Some(Dedup::Key(key.into()));
        self
    }

    /// The body.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// The size SQS counts against its limits: the body plus each
    /// attribute's name, data type and value.
    pub fn size(&self) -> usize {
        self.body.len() + attributes_size(&self.attributes)
    }
}

impl From<String> for Outgoing {
    fn from(body: String) -> Self {
        Self::new(body)
    }
}

impl From<&str> for Outgoing {
    fn from(body: &str) -> Self {
        Self::new(body)
    }
}

/// The size SQS counts for message attributes.
pub(crate) fn attributes_size(attributes: &MessageAttributes) -> usize {
    attributes
        .iter()
        .map(|(name, a)| {
            let value = match &a.value {
                AttributeValue::String(s) | AttributeValue::Number(s) => s.len(),
                AttributeValue::Binary(b) => b.len(),
            };
            name.len() + a.data_type.len() + value
        })
        .sum()
}

/// The deduplication id of a FIFO message: given, derived from a key, or
/// (without either and without content-based deduplication on the queue)
/// derived from the group and the body, exactly as content-based
/// deduplication would treat them.
pub(crate) fn deduplication_id(msg: &Outgoing, content_based: bool) -> Option<String> {
    match &msg.dedup {
        Some(Dedup::Id(id)) => Some(id.clone()),
        Some(Dedup::Key(key)) => Some(hash(&[key.as_bytes(), msg.body.as_bytes()])),
        None if content_based => None,
        None => {
            let group = msg.group_id.as_deref().unwrap_or("");
            Some(hash(&[group.as_bytes(), msg.body.as_bytes()]))
        }
    }
}

/// SHA-256 of length-prefixed parts, in hex (64 characters: SQS allows 128).
fn hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_dedup_ids_differ_per_message() {
        let a = Outgoing::new("x").group_id("g").deduplication_key("k1");
        let b = Outgoing::new("x").group_id("g").deduplication_key("k2");
        let c = Outgoing::new("y").group_id("g");
        let d = Outgoing::new("z").group_id("g");
        let ids: Vec<_> = [&a, &b, &c, &d]
            .iter()
            .map(|m| deduplication_id(m, false))
            .collect();
        for (i, x) in ids.iter().enumerate() {
            assert_eq!(x.as_ref().map(String::len), Some(64));
            for y in &ids[i + 1..] {
                assert_ne!(x, y);
            }
        }
        assert_eq!(deduplication_id(&c, true), None);
        let given = Outgoing::new("x").deduplication_id("mine");
        assert_eq!(deduplication_id(&given, true).as_deref(), Some("mine"));
    }

    #[test]
    fn size_counts_attributes() {
        let m = Outgoing::new("abc").string_attribute("k", "vv");
        assert_eq!(m.size(), 3 + 1 + "String".len() + 2);
    }
}
