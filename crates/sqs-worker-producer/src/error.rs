//! What can go wrong when sending, per message.

use sqs_worker_core::BoxError;

/// Why a message was not sent (or not accepted by SQS). Errors name the
/// queue and, for per-message problems, the message's position in the
/// batch; never its body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// A FIFO queue needs a `MessageGroupId` on every message.
    #[error("message {index} to FIFO queue {queue} has no group id (set `.group_id(..)`)")]
    MissingGroupId {
        /// The queue URL.
        queue: String,
        /// The message's position in the call (0 for `send`).
        index: usize,
    },
    /// `DelaySeconds` is at most 900 s (15 minutes).
    #[error(
        "message {index}: a delay of {seconds} s is over SQS's 900 s maximum; \
         schedule later deliveries with Amazon EventBridge Scheduler"
    )]
    DelayTooLong {
        /// The message's position in the call.
        index: usize,
        /// The requested delay, in whole seconds.
        seconds: u64,
    },
    /// FIFO queues take a delay per queue only, not per message.
    #[error("message {index} to FIFO queue {queue}: FIFO queues have no per-message delay")]
    DelayOnFifo {
        /// The queue URL.
        queue: String,
        /// The message's position in the call.
        index: usize,
    },
    /// The message (body and attributes) is over the queue's limit and no
    /// large-payload store is configured.
    #[error(
        "message {index} is {size} bytes with its attributes, over the {limit}-byte limit \
         (offload large payloads to S3: feature `large-payloads`)"
    )]
    TooLarge {
        /// The message's position in the call.
        index: usize,
        /// Body plus attributes, in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// More than SQS's 10 message attributes.
    #[error("message {index} has {count} message attributes; SQS allows 10")]
    TooManyAttributes {
        /// The message's position in the call.
        index: usize,
        /// How many it has.
        count: usize,
    },
    /// The value could not be serialized to JSON.
    #[error("message {index} could not be serialized to JSON")]
    Serialize {
        /// The message's position in the call.
        index: usize,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// SQS rejected this entry (a per-entry `Failed` result that is not
    /// transient, or a transient one that kept failing).
    #[error("queue {queue} rejected message {index}: {code}: {message}")]
    Rejected {
        /// The queue URL.
        queue: String,
        /// The message's position in the call.
        index: usize,
        /// SQS's error code.
        code: String,
        /// SQS's error message.
        message: String,
    },
    /// The request failed as a whole (after retries, when transient).
    #[error("sending to queue {queue} failed")]
    Request {
        /// The queue URL.
        queue: String,
        /// The SDK error.
        #[source]
        source: BoxError,
    },
    /// Storing the payload in S3 failed (feature `large-payloads`).
    #[error("message {index}: storing its payload in s3://{bucket}/{key} failed")]
    Offload {
        /// The message's position in the call.
        index: usize,
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The SDK error.
        #[source]
        source: BoxError,
    },
    /// The coalescing sender stopped before this message was sent.
    #[error("the coalescing sender for queue {queue} stopped before the message was sent")]
    Closed {
        /// The queue URL.
        queue: String,
    },
}

/// Why a [`Sender`](crate::Sender) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// Neither `SQS_QUEUE_URL` nor `SQS_QUEUE_NAME` is set.
    #[error("set SQS_QUEUE_URL (or SQS_QUEUE_NAME) to the queue to send to")]
    NoQueue,
    /// An environment variable is set but not Unicode.
    #[error("environment variable {name} is not valid Unicode")]
    BadVariable {
        /// The variable.
        name: &'static str,
    },
    /// A variable is set that this build cannot honour: it lacks the
    /// feature.
    #[error("environment variable {name} is set, but this build lacks feature `{feature}`")]
    NeedsFeature {
        /// The variable.
        name: &'static str,
        /// The crate feature it needs.
        feature: &'static str,
    },
    /// `GetQueueUrl` or `GetQueueAttributes` failed.
    #[error("cannot look up queue {queue}")]
    Lookup {
        /// The queue name or URL.
        queue: String,
        /// The SDK error.
        #[source]
        source: BoxError,
    },
}
