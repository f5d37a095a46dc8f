//! What a failure means for the message: retry, retry after a delay, or permanent.

use std::fmt;
use std::time::Duration;

/// A boxed error, the common currency for sources and runner entry points.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What should happen to a message whose handler failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Retry with the retry policy's backoff (the default for `?` on any error).
    Retry,
    /// Retry after this delay, ignoring the retry policy.
    RetryAfter(Duration),
    /// It will never succeed: send it to the dead-letter queue if one is configured,
    /// else leave it to the queue's redrive policy.
    Permanent,
}

/// A handler's failure: an [`Action`] and the source error chain (kept for logs).
///
/// Any `std::error::Error + Send + Sync + 'static` converts into an `Error` with
/// [`Action::Retry`], so `?` works in handlers. Use [`Error::permanent`] or
/// [`Error::retry_after`] (or the [`ResultExt`] helpers) to say otherwise.
///
/// Like `anyhow::Error`, this type deliberately does not implement
/// `std::error::Error` itself (that would conflict with the blanket `From`);
/// [`Error::source_error`] and [`Error::chain`] give access to the chain.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    action: Action,
    source: BoxError,
}

/// A plain-text error used by [`Error::msg`].
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

impl Error {
    /// A retryable error from any source.
    pub fn retry(source: impl Into<BoxError>) -> Self {
        Self::with_action(Action::Retry, source)
    }

    /// A permanent error: retrying will not help.
    pub fn permanent(source: impl Into<BoxError>) -> Self {
        Self::with_action(Action::Permanent, source)
    }

    /// Retry after `delay` (capped by the runner at SQS's 12-hour visibility limit).
    pub fn retry_after(delay: Duration, source: impl Into<BoxError>) -> Self {
        Self::with_action(Action::RetryAfter(delay), source)
    }

    /// A retryable error with a plain message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self::retry(Message(message.to_string()))
    }

    /// An error with an explicit action.
    pub fn with_action(action: Action, source: impl Into<BoxError>) -> Self {
        Self {
            inner: Box::new(Inner {
                action,
                source: source.into(),
            }),
        }
    }

    /// The same error with another action.
    #[must_use]
    pub fn into_action(mut self, action: Action) -> Self {
        self.inner.action = action;
        self
    }

    /// What should happen to the message.
    pub fn action(&self) -> Action {
        self.inner.action
    }

    /// Whether retrying is pointless.
    pub fn is_permanent(&self) -> bool {
        self.inner.action == Action::Permanent
    }

    /// The underlying error.
    pub fn source_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.inner.source
    }

    /// The error and its sources, outermost first.
    pub fn chain(&self) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
        let first: &(dyn std::error::Error + 'static) = &*self.inner.source;
        std::iter::successors(Some(first), |e| e.source())
    }

    /// Attempts to downcast the source error to a concrete type.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.inner.source.downcast_ref::<E>()
    }

    /// The source error, boxed.
    pub fn into_source(self) -> BoxError {
        self.inner.source
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("action", &self.inner.action)
            .field("source", &self.inner.source)
            .finish()
    }
}

/// `Display` shows the whole chain, `outer: inner: innermost`, so one log line
/// carries the cause.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for e in self.chain() {
            if !first {
                f.write_str(": ")?;
            }
            first = false;
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl<E> From<E> for Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(e: E) -> Self {
        Self::retry(e)
    }
}

impl From<Error> for BoxError {
    fn from(e: Error) -> Self {
        e.into_source()
    }
}

/// Turns any `Result` into one whose error says what to do with the message.
///
/// ```
/// use sqs_worker_core::{Error, ResultExt};
/// fn parse(s: &str) -> Result<u64, Error> {
///     s.parse::<u64>().permanent() // a bad number will never parse
/// }
/// assert!(parse("x").unwrap_err().is_permanent());
/// ```
pub trait ResultExt<T> {
    /// Fail permanently on error.
    fn permanent(self) -> Result<T, Error>;
    /// On error, retry after `delay`.
    fn retry_after(self, delay: Duration) -> Result<T, Error>;
}

impl<T, E: Into<BoxError>> ResultExt<T> for Result<T, E> {
    fn permanent(self) -> Result<T, Error> {
        self.map_err(Error::permanent)
    }
    fn retry_after(self, delay: Duration) -> Result<T, Error> {
        self.map_err(|e| Error::retry_after(delay, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn question_mark_retries_and_keeps_the_chain() {
        fn f() -> Result<(), Error> {
            Err(Outer(std::io::Error::other("disk full")))?;
            Ok(())
        }
        let e = f().unwrap_err();
        assert_eq!(e.action(), Action::Retry);
        assert_eq!(e.to_string(), "outer: disk full");
        assert_eq!(e.chain().count(), 2);
        assert!(e.downcast_ref::<Outer>().is_some());
    }

    #[test]
    fn permanent_and_retry_after() {
        let e: Result<(), _> = Err(std::io::Error::other("bad")).permanent();
        assert!(e.unwrap_err().is_permanent());
        let e = Error::retry_after(Duration::from_secs(3), "later");
        assert_eq!(e.action(), Action::RetryAfter(Duration::from_secs(3)));
        assert_eq!(Error::msg("plain").to_string(), "plain");
    }
}
