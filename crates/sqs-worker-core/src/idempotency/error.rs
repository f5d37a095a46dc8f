//! Why an idempotent handler did not run its message.

use std::time::Duration;

/// The errors [`Idempotent`](super::Idempotent) reports for a message, inside
/// the [`Error`](crate::Error) whose action says what happens next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdempotencyError {
    /// Another worker holds the key's in-progress claim: the message is
    /// retried after about `remaining`, never run twice at once.
    #[error(
        "message {message_id}: idempotency key {key:?} is in progress elsewhere (claim expires in {remaining:?}); retrying later"
    )]
    InProgress {
        /// The message.
        message_id: String,
        /// The key.
        key: String,
        /// The time left on the other worker's claim.
        remaining: Duration,
    },
    /// The key was seen before with a different payload. Permanent: the
    /// producer reused a key for different content.
    #[error(
        "message {message_id}: idempotency key {key:?} was already used with a different payload (stored hash {stored}, this message {actual})"
    )]
    PayloadMismatch {
        /// The message.
        message_id: String,
        /// The key.
        key: String,
        /// The hash stored with the key.
        stored: String,
        /// This message's hash.
        actual: String,
    },
    /// The key function gave no key and the layer is set to
    /// [`MissingKey::Fail`](super::MissingKey::Fail). Permanent.
    #[error("message {message_id}: the idempotency key function gave no key")]
    MissingKey {
        /// The message.
        message_id: String,
    },
    /// The store failed; the message is retried.
    #[error("message {message_id}: idempotency store unavailable")]
    Store {
        /// The message.
        message_id: String,
        /// The cause.
        #[source]
        source: super::StoreError,
    },
}

/// [`set_result`](super::set_result) was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetResultError {
    /// Not called from inside a handler run by [`Idempotent`](super::Idempotent)
    /// (or from a task the handler spawned).
    #[error("set_result called outside a handler wrapped by Idempotent")]
    NotInIdempotentHandler,
    /// The result is larger than [`MAX_RESULT_SIZE`](super::MAX_RESULT_SIZE).
    #[error("idempotency result of {0} bytes is larger than the {max} byte limit", max = super::MAX_RESULT_SIZE)]
    TooLarge(usize),
}
