//! Handler arguments taken from a message: the one trait [`Json`](crate::Json),
//! [`Sns`](crate::Sns), [`EventBridge`](crate::EventBridge) and
//! [`S3Event`](crate::S3Event) implement, and the async fn shapes that take them.

use std::future::Future;
use std::marker::PhantomData;

use crate::error::Error;
use crate::handler::{FnHandler, Handler, IntoHandler};
use crate::message::Message;
use crate::runner::observe::names;

/// A handler argument built from a message, as axum's `FromRequest`.
///
/// Synchronous on purpose: extracting is parsing the body (and attributes)
/// that are already in memory. An error is the message's failure (a bad
/// envelope is [permanent](crate::Action::Permanent)); the handler does not
/// run. [`Extracted::Acknowledge`] deletes the message as a success without
/// running the handler (S3's `s3:TestEvent`).
///
/// ```
/// use sqs_worker_core::{Error, Extracted, FromMessage, Message};
/// /// The tenant from a message attribute, or a permanent failure.
/// struct Tenant(String);
/// impl FromMessage for Tenant {
///     fn from_message(msg: &Message) -> Result<Extracted<Self>, Error> {
///         match msg.message_attribute("tenant").and_then(|a| a.as_str()) {
///             Some(t) => Ok(Extracted::Value(Tenant(t.to_owned()))),
///             None => Err(Error::permanent(format!("message {}: no tenant", msg.id()))),
///         }
///     }
/// }
/// async fn handle(Tenant(t): Tenant) -> Result<(), Error> { let _ = t; Ok(()) }
/// let _ = sqs_worker_core::handler_fn(handle);
/// ```
pub trait FromMessage: Sized + Send + 'static {
    /// Extracts the argument from `msg`.
    fn from_message(msg: &Message) -> Result<Extracted<Self>, Error>;
}

/// What an extractor found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extracted<T> {
    /// The argument: run the handler with it.
    Value(T),
    /// Nothing to handle: delete the message as a success without running the
    /// handler, counted in
    /// [`ACKNOWLEDGED`](crate::runner::observe::names::ACKNOWLEDGED) with this reason.
    Acknowledge(AckReason),
}

/// Why a message was acknowledged (deleted as a success) without running a
/// handler: the `reason` label of
/// [`ACKNOWLEDGED`](crate::runner::observe::names::ACKNOWLEDGED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AckReason {
    /// S3's `s3:TestEvent`, sent once when a bucket notification is configured.
    S3TestEvent,
    /// A [`Router`](crate::Router) set to acknowledge messages it has no
    /// route for.
    Unrouted,
}

impl AckReason {
    /// The metric label: `s3_test_event`, `unrouted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S3TestEvent => "s3_test_event",
            Self::Unrouted => "unrouted",
        }
    }
}

/// Counts a message acknowledged without a handler (and logs it: at INFO for
/// a test event, which is rare, at DEBUG for unrouted messages, which may not be).
pub(crate) fn acknowledge(msg: &Message, reason: AckReason) {
    metrics::counter!(names::ACKNOWLEDGED, "reason" => reason.as_str()).increment(1);
    match reason {
        AckReason::S3TestEvent => tracing::info!(
            messaging.message.id = msg.id(),
            reason = reason.as_str(),
            "acknowledged without running a handler"
        ),
        AckReason::Unrouted => tracing::debug!(
            messaging.message.id = msg.id(),
            reason = reason.as_str(),
            "acknowledged without running a handler"
        ),
    }
}

/// Marker: `Fn(X)` for an extractor `X`.
#[doc(hidden)]
#[derive(Debug)]
pub struct ExtractArg<X>(PhantomData<fn() -> X>);
/// Marker: `Fn(X, Message)` for an extractor `X`.
#[doc(hidden)]
#[derive(Debug)]
pub struct ExtractMessageArgs<X>(PhantomData<fn() -> X>);

/// Runs `f` on what `msg` yields; `None` when the extractor acknowledged it.
#[inline]
fn extract_then<X: FromMessage, R>(
    msg: &Message,
    f: impl FnOnce(X) -> R,
) -> Result<Option<R>, Error> {
    match X::from_message(msg)? {
        Extracted::Value(x) => Ok(Some(f(x))),
        Extracted::Acknowledge(reason) => {
            acknowledge(msg, reason);
            Ok(None)
        }
    }
}

async fn finish<Fut, E>(fut: Result<Option<Fut>, Error>) -> Result<(), Error>
where
    Fut: Future<Output = Result<(), E>>,
    E: Into<Error>,
{
    match fut {
        Ok(Some(fut)) => fut.await.map_err(Into::into),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    }
}

impl<F, Fut, E, X> Handler for FnHandler<F, (ExtractArg<X>, E)>
where
    F: Fn(X) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<Error> + 'static,
    X: FromMessage,
{
    fn handle(&self, msg: Message) -> impl Future<Output = Result<(), Error>> + Send {
        finish(extract_then(&msg, |x| (self.f)(x)))
    }
}

impl<F, Fut, E, X> IntoHandler<(ExtractArg<X>, E)> for F
where
    F: Fn(X) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<Error> + 'static,
    X: FromMessage,
{
    type Handler = FnHandler<F, (ExtractArg<X>, E)>;
    fn into_handler(self) -> Self::Handler {
        FnHandler::new(self)
    }
}

impl<F, Fut, E, X> Handler for FnHandler<F, (ExtractMessageArgs<X>, E)>
where
    F: Fn(X, Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<Error> + 'static,
    X: FromMessage,
{
    fn handle(&self, msg: Message) -> impl Future<Output = Result<(), Error>> + Send {
        let fut = match X::from_message(&msg) {
            Ok(Extracted::Value(x)) => Ok(Some((self.f)(x, msg))),
            Ok(Extracted::Acknowledge(reason)) => {
                acknowledge(&msg, reason);
                Ok(None)
            }
            Err(e) => Err(e),
        };
        finish(fut)
    }
}

impl<F, Fut, E, X> IntoHandler<(ExtractMessageArgs<X>, E)> for F
where
    F: Fn(X, Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<Error> + 'static,
    X: FromMessage,
{
    type Handler = FnHandler<F, (ExtractMessageArgs<X>, E)>;
    fn into_handler(self) -> Self::Handler {
        FnHandler::new(self)
    }
}
