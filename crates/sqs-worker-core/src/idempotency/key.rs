//! Where an idempotency key (and the payload to validate) comes from.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::message::Message;

type KeyFnInner = dyn Fn(&Message) -> Result<Option<String>, Error> + Send + Sync;
type PayloadFnInner = dyn Fn(&Message) -> Result<Vec<u8>, Error> + Send + Sync;

/// How to get a message's idempotency key.
///
/// `Ok(None)` means "this message has no key" (see [`MissingKey`]); `Err`
/// fails the message with that error (e.g. a body that is not valid JSON is
/// permanent).
#[derive(Clone)]
pub struct KeyFn(Arc<KeyFnInner>);

impl fmt::Debug for KeyFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyFn")
    }
}

impl Default for KeyFn {
    /// [`KeyFn::message_id`]: with the layer's namespace (by default the
    /// queue name), the queue plus the message id.
    fn default() -> Self {
        Self::message_id()
    }
}

impl KeyFn {
    /// The SQS message id: the default. With the layer's
    /// [namespace](super::IdempotencyLayer::namespace) (by default the queue
    /// name) the key is the queue plus the message id: stable across
    /// redeliveries of one message (a visibility lapse, a crashed worker),
    /// unique otherwise, so no distinct message is ever acknowledged without
    /// running.
    ///
    /// It does not catch a producer sending the same thing twice: for that,
    /// key on a business id with [`KeyFn::json`] or [`KeyFn::message`].
    pub fn message_id() -> Self {
        Self::new(|m: &Message| Ok(Some(m.id().to_owned())))
    }

    /// The FIFO `MessageDeduplicationId` with the message's group; no key
    /// on standard queues.
    ///
    /// It means "the same message within SQS's 5-minute deduplication
    /// window": SQS itself drops such a resend inside the window. Outside it,
    /// two messages with one deduplication id are distinct to SQS (with
    /// content-based deduplication: two identical bodies sent more than
    /// 5 minutes apart), and this key acknowledges the second without running
    /// it. The group is part of the key because with high-throughput FIFO
    /// (deduplication scoped per group) one id in two groups is two messages.
    pub fn deduplication_id() -> Self {
        Self::new(|m: &Message| Ok(m.deduplication_id().map(|d| dedup_key(m, d))))
    }

    /// The [deduplication id](Self::deduplication_id) (with its meaning) on
    /// FIFO queues, else the message id.
    pub fn deduplication_id_or_message_id() -> Self {
        Self::new(|m: &Message| {
            Ok(Some(match m.deduplication_id() {
                Some(d) => dedup_key(m, d),
                None => m.id().to_owned(),
            }))
        })
    }

    /// Any function of the message, e.g. a message attribute.
    ///
    /// ```
    /// use sqs_worker_core::idempotency::KeyFn;
    /// let key = KeyFn::message(|m| {
    ///     m.message_attribute("request-id").and_then(|a| a.as_str()).map(str::to_owned)
    /// });
    /// # let _ = key;
    /// ```
    pub fn message<F>(f: F) -> Self
    where
        F: Fn(&Message) -> Option<String> + Send + Sync + 'static,
    {
        Self::new(move |m: &Message| Ok(f(m)))
    }

    /// A function of the typed JSON payload, e.g. an order id. A body that
    /// does not deserialize as `T` fails the message permanently, as
    /// [`Json`](crate::Json) does.
    ///
    /// ```
    /// use sqs_worker_core::idempotency::KeyFn;
    /// #[derive(serde::Deserialize)]
    /// struct Order { order_id: u64 }
    /// let key = KeyFn::json(|o: &Order| Some(o.order_id));
    /// # let _ = key;
    /// ```
    pub fn json<T, K, F>(f: F) -> Self
    where
        T: DeserializeOwned,
        K: fmt::Display,
        F: Fn(&T) -> Option<K> + Send + Sync + 'static,
    {
        Self::new(move |m: &Message| Ok(f(&m.json::<T>()?).map(|k| k.to_string())))
    }

    /// The most general form: a fallible function.
    pub fn new<F>(f: F) -> Self
    where
        F: Fn(&Message) -> Result<Option<String>, Error> + Send + Sync + 'static,
    {
        Self(Arc::new(f))
    }

    /// The key of `msg` (before the layer's namespace and hashing).
    pub fn key(&self, msg: &Message) -> Result<Option<String>, Error> {
        (self.0)(msg)
    }
}

/// A deduplication-id key: the group's length, the group, the id (the length
/// keeps `("a:b", "c")` and `("a", "b:c")` apart).
fn dedup_key(m: &Message, dedup: &str) -> String {
    let group = m.group_id().unwrap_or_default();
    format!("dedup:{}:{group}:{dedup}", group.len())
}

/// What to do with a message whose key function gives no key (or an empty
/// one: an empty key is a missing key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MissingKey {
    /// Fail it permanently ([`IdempotencyError::MissingKey`](super::IdempotencyError::MissingKey)).
    /// The default: a silent loss of idempotency is worse than a visible failure.
    #[default]
    Fail,
    /// Run the handler without idempotency, and log a warning.
    RunWithout,
}

/// Which bytes of a message to hash for payload validation.
#[derive(Clone)]
pub struct PayloadFn(Arc<PayloadFnInner>);

impl fmt::Debug for PayloadFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PayloadFn")
    }
}

impl PayloadFn {
    /// The whole body.
    pub fn body() -> Self {
        Self::new(|m: &Message| Ok(m.body().as_bytes().to_vec()))
    }

    /// A part of the typed JSON payload, serialized back to JSON (so fields a
    /// producer may legitimately change between retries, such as a timestamp,
    /// can be left out). Use types with a stable serialization (structs,
    /// `BTreeMap`; not `HashMap`).
    ///
    /// ```
    /// use sqs_worker_core::idempotency::PayloadFn;
    /// #[derive(serde::Deserialize)]
    /// struct Order { order_id: u64, amount_cents: u64, sent_at: String }
    /// let part = PayloadFn::json(|o: &Order| (o.order_id, o.amount_cents));
    /// # let _ = part;
    /// ```
    pub fn json<T, V, F>(f: F) -> Self
    where
        T: DeserializeOwned,
        V: Serialize,
        F: Fn(&T) -> V + Send + Sync + 'static,
    {
        Self::new(move |m: &Message| {
            let t = m.json::<T>()?;
            serde_json::to_vec(&f(&t)).map_err(Error::permanent)
        })
    }

    /// Any fallible function of the message.
    pub fn new<F>(f: F) -> Self
    where
        F: Fn(&Message) -> Result<Vec<u8>, Error> + Send + Sync + 'static,
    {
        Self(Arc::new(f))
    }

    /// The bytes to hash for `msg`.
    pub fn payload(&self, msg: &Message) -> Result<Vec<u8>, Error> {
        (self.0)(msg)
    }
}
