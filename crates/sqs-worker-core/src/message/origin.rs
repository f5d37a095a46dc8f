//! Where a message's body came from when it was not in the SQS message
//! itself: an S3 object (Amazon SQS Extended Client payloads).

use super::Message;

/// The S3 object a message's body was read from ([`Message::payload_origin`]).
///
/// Set by the large-payload layer when it replaces an Extended Client pointer
/// with the object's text; `None` for every other message (and then it costs
/// the message nothing but an empty pointer).
#[derive(Clone)]
pub struct PayloadOrigin {
    /// The bucket.
    pub bucket: String,
    /// The object key.
    pub key: String,
    /// The payload's size in bytes.
    pub size: u64,
    /// The delivery whose body was the pointer: the resolved message keeps
    /// its identity ([`MessageKey`](super::MessageKey)), so the runner's
    /// in-flight table still finds it (e.g. for `extend_visibility`).
    pub(super) delivery: Option<Message>,
}

impl PayloadOrigin {
    /// The origin `s3://bucket/key` of a `size`-byte payload.
    pub fn new(bucket: impl Into<String>, key: impl Into<String>, size: u64) -> Self {
        Self {
            bucket: bucket.into(),
            key: key.into(),
            size,
            delivery: None,
        }
    }
}

impl PartialEq for PayloadOrigin {
    fn eq(&self, other: &Self) -> bool {
        (&self.bucket, &self.key, self.size) == (&other.bucket, &other.key, other.size)
    }
}

impl Eq for PayloadOrigin {}

impl std::fmt::Debug for PayloadOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadOrigin")
            .field("bucket", &self.bucket)
            .field("key", &self.key)
            .field("size", &self.size)
            .finish()
    }
}
