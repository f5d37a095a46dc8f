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
/// it derefs to the source error, and [`Error::chain`] walks the chain.
/// [`Error::context`] (and [`ResultExt::context`]) add a line of context and
/// keep the action.
///
/// Converted into a [`BoxError`], it keeps its action:
/// [`Error::from_boxed`] gives it back (a permanent failure stays permanent).
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    action: Action,
    source: BoxError,
    /// Marked by [`Error::downstream`]: a dependency is down.
    downstream: bool,
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

/// A line of context over a cause: shows as `context: cause` in the chain.
#[derive(Debug)]
struct Context {
    context: String,
    source: BoxError,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)
    }
}

impl std::error::Error for Context {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// An [`Error`] as a [`BoxError`]: the source error unchanged (same
/// `Display`, same sources) plus the action, which `Error::from` recovers.
#[derive(Debug)]
struct Carried {
    action: Action,
    source: BoxError,
    downstream: bool,
}

impl fmt::Display for Carried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl std::error::Error for Carried {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

/// `source` without its [`Carried`] wrapper, and the action it carried.
fn uncarry(source: BoxError) -> (Option<(Action, bool)>, BoxError) {
    match source.downcast::<Carried>() {
        Ok(c) => (Some((c.action, c.downstream)), c.source),
        Err(source) => (None, source),
    }
}

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

    /// A retryable error that says "the dependency is down" (a database or
    /// API this handler needs is unreachable, not this message's fault): one
    /// such failure opens a configured circuit breaker at once, without
    /// waiting for its failure threshold. Without a breaker it is a plain
    /// [`Error::retry`]. The mark survives [`context`](Self::context) and
    /// the round trip through [`BoxError`].
    pub fn downstream(source: impl Into<BoxError>) -> Self {
        let mut e = Self::retry(source);
        e.inner.downstream = true;
        e
    }

    /// Whether [`Error::downstream`] marked it.
    pub fn is_downstream(&self) -> bool {
        self.inner.downstream
    }

    /// A retryable error with a plain message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self::retry(Message(message.to_string()))
    }

    /// A boxed error back as an `Error`: with the action it carries if it was
    /// an [`Error`] (see `impl From<Error> for BoxError`), else
    /// [`Action::Retry`]. (A `From<BoxError>` impl is impossible next to the
    /// blanket `From<E: std::error::Error>`.)
    pub fn from_boxed(source: BoxError) -> Self {
        let (carried, source) = uncarry(source);
        let (action, downstream) = carried.unwrap_or((Action::Retry, false));
        Self {
            inner: Box::new(Inner {
                action,
                source,
                downstream,
            }),
        }
    }

    /// An error with an explicit action (which replaces any action `source`
    /// carried as a converted `Error`).
    pub fn with_action(action: Action, source: impl Into<BoxError>) -> Self {
        let (_, source) = uncarry(source.into());
        Self {
            inner: Box::new(Inner {
                action,
                source,
                downstream: false,
            }),
        }
    }

    /// The same error under a line of context, keeping its action: shows as
    /// `context: cause`.
    ///
    /// ```
    /// use sqs_worker_core::Error;
    /// let e = Error::permanent("no such customer").context("charging order 7");
    /// assert_eq!(e.to_string(), "charging order 7: no such customer");
    /// assert!(e.is_permanent());
    /// ```
    #[must_use]
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        let cause = std::mem::replace(&mut self.inner.source, Box::new(Message(String::new())));
        self.inner.source = Box::new(Context {
            context: context.to_string(),
            source: cause,
        });
        self
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

    /// The underlying error (also reachable through `Deref`).
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

    /// The source error, boxed, without the action (use `BoxError::from` to
    /// keep it).
    pub fn into_source(self) -> BoxError {
        self.inner.source
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("action", &self.inner.action)
            .field("downstream", &self.inner.downstream)
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

impl std::ops::Deref for Error {
    type Target = dyn std::error::Error + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        &*self.inner.source
    }
}

impl AsRef<dyn std::error::Error + Send + Sync> for Error {
    fn as_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.inner.source
    }
}

impl AsRef<dyn std::error::Error> for Error {
    fn as_ref(&self) -> &(dyn std::error::Error + 'static) {
        &*self.inner.source
    }
}

/// Keeps the action: [`Error::from_boxed`] gives it back.
impl From<Error> for BoxError {
    fn from(e: Error) -> Self {
        let Inner {
            action,
            source,
            downstream,
        } = *e.inner;
        Box::new(Carried {
            action,
            source,
            downstream,
        })
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
    /// On error, add a line of context ([`Error::context`]); the action stays
    /// (an [`Error`]'s own, else [`Action::Retry`]).
    fn context<C: fmt::Display>(self, context: C) -> Result<T, Error>;
    /// [`context`](Self::context), built only on error.
    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T, Error>;
}

impl<T, E: Into<BoxError>> ResultExt<T> for Result<T, E> {
    fn permanent(self) -> Result<T, Error> {
        self.map_err(Error::permanent)
    }
    fn retry_after(self, delay: Duration) -> Result<T, Error> {
        self.map_err(|e| Error::retry_after(delay, e))
    }
    fn context<C: fmt::Display>(self, context: C) -> Result<T, Error> {
        self.map_err(|e| Error::from_boxed(e.into()).context(context))
    }
    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T, Error> {
        self.map_err(|e| Error::from_boxed(e.into()).context(f()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn downstream_marks_survive_context_and_boxing() {
        let e = Error::downstream(std::io::Error::other("connection refused"));
        assert!(e.is_downstream());
        assert_eq!(e.action(), Action::Retry);
        let e = e.context("charging order 7");
        assert!(e.is_downstream());
        let boxed: BoxError = e.into();
        let back = Error::from_boxed(boxed);
        assert!(back.is_downstream());
        assert_eq!(back.to_string(), "charging order 7: connection refused");
        assert!(!Error::msg("x").is_downstream());
        assert!(!Error::permanent("x").is_downstream());
    }

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

    #[test]
    fn context_keeps_the_action_and_shows_in_the_chain() {
        let e = Error::permanent(Outer(std::io::Error::other("disk full"))).context("saving");
        assert!(e.is_permanent());
        assert_eq!(e.to_string(), "saving: outer: disk full");
        assert_eq!(e.chain().count(), 3);
        let r: Result<(), Error> = Err(Error::retry_after(Duration::from_secs(5), "busy"));
        let e = r.context("calling the API").unwrap_err();
        assert_eq!(e.action(), Action::RetryAfter(Duration::from_secs(5)));
        assert_eq!(e.to_string(), "calling the API: busy");
        let r: Result<(), std::io::Error> = Err(std::io::Error::other("reset"));
        let e = r.with_context(|| format!("order {}", 7)).unwrap_err();
        assert_eq!(
            (e.action(), e.to_string()),
            (Action::Retry, "order 7: reset".into())
        );
    }

    #[test]
    fn derefs_to_the_source_error() {
        let e = Error::permanent(Outer(std::io::Error::other("disk full")));
        assert_eq!(e.source().map(|s| s.to_string()), Some("disk full".into()));
        assert!(e.is::<Outer>());
        let r: &(dyn std::error::Error + Send + Sync) = e.as_ref();
        assert_eq!(r.to_string(), "outer");
    }

    #[test]
    fn box_error_round_trip_keeps_the_action() {
        for action in [
            Action::Retry,
            Action::RetryAfter(Duration::from_secs(30)),
            Action::Permanent,
        ] {
            let e = Error::with_action(action, Outer(std::io::Error::other("disk full")));
            let boxed: BoxError = e.into();
            // The box reads as the source error: same text, same causes.
            assert_eq!(boxed.to_string(), "outer");
            assert_eq!(
                boxed.source().map(|s| s.to_string()),
                Some("disk full".into())
            );
            let back = Error::from_boxed(boxed);
            assert_eq!(back.action(), action, "{action:?}");
            assert_eq!(back.to_string(), "outer: disk full");
            assert!(back.downcast_ref::<Outer>().is_some(), "unwrapped again");
        }
        // Through `?` in a function returning BoxError, and back.
        fn inner() -> Result<(), BoxError> {
            Err(Error::permanent("bad input"))?;
            Ok(())
        }
        let r: Result<(), Error> = inner().map_err(Error::from_boxed);
        assert!(r.unwrap_err().is_permanent());
        // A box that never was an `Error` retries.
        let plain: BoxError = "plain".into();
        assert_eq!(Error::from_boxed(plain).action(), Action::Retry);
    }
}
