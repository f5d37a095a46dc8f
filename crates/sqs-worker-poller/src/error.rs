//! What can stop a poller: bad settings, or a queue it cannot use.

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use sqs_worker_core::BoxError;
use sqs_worker_sqs::{Class, classify, describe};

use sqs_worker_core::config::ConfigError;

/// Why a poller could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PollerError {
    /// The settings are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The queue does not exist (or is not visible to these credentials in this region).
    #[error(
        "queue {queue} does not exist (check the queue URL or name, the region and the endpoint)"
    )]
    QueueNotFound {
        /// The queue URL or name.
        queue: String,
        /// The SDK error.
        #[source]
        source: BoxError,
    },
    /// The credentials were refused or lack a permission on the queue.
    #[error(
        "access to queue {queue} was refused during {operation} (check the credentials and the IAM policy)"
    )]
    AccessDenied {
        /// The queue URL or name.
        queue: String,
        /// The SQS operation.
        operation: &'static str,
        /// The SDK error.
        #[source]
        source: BoxError,
    },
    /// The SQS client cannot sign requests (no region or no credentials).
    #[error("cannot call SQS for queue {queue}: {problem}")]
    Setup {
        /// The queue URL or name.
        queue: String,
        /// What is missing and how to provide it.
        problem: &'static str,
    },
    /// Another SQS error that retrying will not fix.
    #[error("{operation} on queue {queue} failed")]
    Sqs {
        /// The queue URL or name.
        queue: String,
        /// The SQS operation.
        operation: &'static str,
        /// The SDK error.
        #[source]
        source: BoxError,
    },
    /// The shutdown signal handler could not be installed.
    #[error("cannot listen for SIGTERM/SIGINT")]
    Signal(#[source] std::io::Error),
}

/// Turns a non-transient SDK error into the poller's error, naming the queue.
pub(crate) fn fatal<E>(e: &SdkError<E>, queue: &str, operation: &'static str) -> PollerError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let source: BoxError = Box::new(describe(e));
    let queue = queue.to_owned();
    match classify(e) {
        Class::NoQueue => PollerError::QueueNotFound { queue, source },
        Class::Setup(problem) => PollerError::Setup {
            queue,
            problem: problem.hint(),
        },
        Class::Denied => PollerError::AccessDenied {
            queue,
            operation,
            source,
        },
        _ => PollerError::Sqs {
            queue,
            operation,
            source,
        },
    }
}
