//! The one trait business code implements, and the ways a plain async fn
//! becomes one.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::error::Error;
use crate::message::Message;

/// Handles one message. `Ok` deletes it; `Err` says what to do instead.
///
/// Implement it for a type that holds state (clients, pools), or skip it and
/// pass an `async fn` anywhere an [`IntoHandler`] is taken:
/// `async fn(Message) -> Result<(), E>`, `async fn(Json<T>) -> Result<(), E>` or
/// `async fn(Json<T>, Message) -> Result<(), E>`, for any `E: Into<Error>`;
/// any [`FromMessage`](crate::FromMessage) extractor (`Sns<T>`,
/// `EventBridge<T>`, `S3Event`) takes `Json<T>`'s place.
///
/// ```
/// use sqs_worker_core::{Error, Handler, Message};
/// struct Audit { table: String }
/// impl Handler for Audit {
///     async fn handle(&self, msg: Message) -> Result<(), Error> {
///         let _ = (&self.table, msg.id());
///         Ok(())
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Handles `msg`.
    fn handle(&self, msg: Message) -> impl Future<Output = Result<(), Error>> + Send;
}

impl<H: Handler> Handler for Arc<H> {
    fn handle(&self, msg: Message) -> impl Future<Output = Result<(), Error>> + Send {
        (**self).handle(msg)
    }
}

/// Anything that can become a [`Handler`]: handler types themselves and async
/// fns of the supported shapes. `Args` is a marker that keeps the shapes apart
/// (as in axum); callers never name it.
pub trait IntoHandler<Args>: Sized {
    /// The handler this becomes.
    type Handler: Handler;
    /// Converts.
    fn into_handler(self) -> Self::Handler;
}

/// Marker for types that already implement [`Handler`].
#[doc(hidden)]
#[derive(Debug)]
pub enum IsHandler {}

impl<H: Handler> IntoHandler<IsHandler> for H {
    type Handler = H;
    fn into_handler(self) -> H {
        self
    }
}

/// A function wrapped as a [`Handler`]; `Args` marks its argument shape.
pub struct FnHandler<F, Args> {
    pub(crate) f: F,
    _args: PhantomData<fn() -> Args>,
}

impl<F, Args> FnHandler<F, Args> {
    pub(crate) fn new(f: F) -> Self {
        Self {
            f,
            _args: PhantomData,
        }
    }
}

impl<F: Clone, Args> Clone for FnHandler<F, Args> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            _args: PhantomData,
        }
    }
}

impl<F, Args> std::fmt::Debug for FnHandler<F, Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnHandler")
    }
}

/// Wraps an async fn (or closure) as a [`Handler`] explicitly, e.g. to pass it
/// to a layer.
pub fn handler_fn<Args, F: IntoHandler<Args>>(f: F) -> F::Handler {
    f.into_handler()
}

/// Marker: `Fn(Message)`.
#[doc(hidden)]
#[derive(Debug)]
pub enum MessageArg {}
impl<F, Fut, E> Handler for FnHandler<F, (MessageArg, E)>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<Error> + 'static,
{
    fn handle(&self, msg: Message) -> impl Future<Output = Result<(), Error>> + Send {
        let fut = (self.f)(msg);
        async move { fut.await.map_err(Into::into) }
    }
}

impl<F, Fut, E> IntoHandler<(MessageArg, E)> for F
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<Error> + 'static,
{
    type Handler = FnHandler<F, (MessageArg, E)>;
    fn into_handler(self) -> Self::Handler {
        FnHandler {
            f: self,
            _args: PhantomData,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::Json;

    #[derive(serde::Deserialize)]
    struct Order {
        order_id: u64,
    }

    fn assert_handler<A, F: IntoHandler<A>>(f: F) -> F::Handler {
        f.into_handler()
    }

    async fn by_message(m: Message) -> Result<(), Error> {
        if m.body() == "fail" {
            return Err(Error::msg("asked to fail"));
        }
        Ok(())
    }

    async fn by_json(Json(o): Json<Order>) -> Result<(), std::io::Error> {
        if o.order_id == 0 {
            return Err(std::io::Error::other("zero"));
        }
        Ok(())
    }

    async fn by_json_and_message(Json(o): Json<Order>, m: Message) -> Result<(), Error> {
        assert_eq!(m.id(), "id");
        assert_eq!(o.order_id, 5);
        Ok(())
    }

    #[tokio::test]
    async fn plain_async_fns_are_handlers() {
        let h = assert_handler(by_message);
        assert!(h.handle(Message::builder("id", "ok").build()).await.is_ok());
        assert!(
            h.handle(Message::builder("id", "fail").build())
                .await
                .is_err()
        );

        let h = assert_handler(by_json);
        assert!(
            h.handle(Message::builder("id", r#"{"order_id":1}"#).build())
                .await
                .is_ok()
        );
        let e = h
            .handle(Message::builder("id", r#"{"order_id":0}"#).build())
            .await
            .unwrap_err();
        assert!(!e.is_permanent(), "a handler's io error is retried");
        let e = h
            .handle(Message::builder("id", "{").build())
            .await
            .unwrap_err();
        assert!(e.is_permanent(), "a bad body is permanent");
        assert!(e.to_string().contains("message id"), "{e}");

        let h = assert_handler(by_json_and_message);
        assert!(
            h.handle(Message::builder("id", r#"{"order_id":5}"#).build())
                .await
                .is_ok()
        );

        let h = assert_handler(|m: Message| async move {
            let _ = m;
            Ok::<(), Error>(())
        });
        assert!(h.handle(Message::builder("x", "").build()).await.is_ok());
    }
}
