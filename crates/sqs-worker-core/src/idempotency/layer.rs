//! [`IdempotencyLayer`]: the settings, and the `tower_layer::Layer` that
//! wraps a handler in [`Idempotent`].

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Idempotent;
use super::key::{KeyFn, MissingKey, PayloadFn};
use super::store::IdempotencyStore;
use crate::message::Message;

/// The default in-progress claim: 60 s, renewed every 20 s while the handler
/// runs.
pub const DEFAULT_CLAIM_TTL: Duration = Duration::from_secs(60);
/// The default retention of a completion record: 24 hours.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// Makes any [`Handler`](crate::Handler) or [`BatchHandler`](crate::BatchHandler)
/// run at most once per key: wraps it in [`Idempotent`].
///
/// ```
/// use std::time::Duration;
/// use sqs_worker_core::idempotency::{IdempotencyLayer, KeyFn, Layer, MemoryStore};
/// use sqs_worker_core::{Error, Json, handler_fn};
///
/// #[derive(serde::Deserialize)]
/// struct Order { order_id: u64 }
///
/// async fn charge(Json(order): Json<Order>) -> Result<(), Error> {
///     let _ = order.order_id; // the side effect to run once per order
///     Ok(())
/// }
///
/// let layer = IdempotencyLayer::new(MemoryStore::new())
///     .key(KeyFn::json(|o: &Order| Some(o.order_id)))
///     .validate_payload()
///     .claim_ttl(Duration::from_secs(30));
/// let once_per_order = layer.layer(handler_fn(charge));
/// # let _ = once_per_order;
/// ```
///
/// Order with other layers: an outer layer sees everything inside as one
/// call, so put `IdempotencyLayer` outermost around retrying or timing
/// layers, so that their retries happen under one claim.
#[derive(Clone)]
pub struct IdempotencyLayer {
    pub(super) config: Config,
}

/// Shared by [`IdempotencyLayer`] and every [`Idempotent`] it makes.
#[derive(Clone)]
pub(super) struct Config {
    pub(super) store: Arc<dyn IdempotencyStore>,
    pub(super) key: KeyFn,
    pub(super) missing_key: MissingKey,
    pub(super) payload: Option<PayloadFn>,
    pub(super) claim_ttl: Duration,
    pub(super) renew_every: Option<Duration>,
    pub(super) retention: Duration,
    pub(super) namespace: Option<String>,
}

impl std::fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        f.debug_struct("IdempotencyLayer")
            .field("missing_key", &c.missing_key)
            .field("validate_payload", &c.payload.is_some())
            .field("claim", &c.claim_ttl)
            .field("renew_every", &c.renew_interval())
            .field("retention", &c.retention)
            .field("namespace", &c.namespace)
            .finish_non_exhaustive()
    }
}

impl IdempotencyLayer {
    /// A layer over `store`, keyed by [`KeyFn::default`] (the message id, in
    /// the namespace of its queue), with a [`DEFAULT_CLAIM_TTL`], [`DEFAULT_RETENTION`],
    /// no payload validation and [`MissingKey::Fail`].
    pub fn new(store: impl IdempotencyStore) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// A layer over a shared store.
    pub fn from_arc(store: Arc<dyn IdempotencyStore>) -> Self {
        Self {
            config: Config {
                store,
                key: KeyFn::default(),
                missing_key: MissingKey::default(),
                payload: None,
                claim_ttl: DEFAULT_CLAIM_TTL,
                renew_every: None,
                retention: DEFAULT_RETENTION,
                namespace: None,
            },
        }
    }

    /// Where the key comes from.
    #[must_use]
    pub fn key(mut self, key: KeyFn) -> Self {
        self.config.key = key;
        self
    }

    /// Key by a function of the message ([`KeyFn::message`]).
    #[must_use]
    pub fn key_fn<F>(self, f: F) -> Self
    where
        F: Fn(&Message) -> Option<String> + Send + Sync + 'static,
    {
        self.key(KeyFn::message(f))
    }

    /// Key by a function of the typed JSON payload ([`KeyFn::json`]).
    #[must_use]
    pub fn key_from_json<T, K, F>(self, f: F) -> Self
    where
        T: DeserializeOwned,
        K: std::fmt::Display,
        F: Fn(&T) -> Option<K> + Send + Sync + 'static,
    {
        self.key(KeyFn::json(f))
    }

    /// What to do when the key function gives no key.
    #[must_use]
    pub fn on_missing_key(mut self, missing: MissingKey) -> Self {
        self.config.missing_key = missing;
        self
    }

    /// The namespace of every key, instead of the default: the name of the
    /// message's source queue (the last segment of its URL or ARN, so the
    /// poller and a Lambda function on one queue deduplicate against each
    /// other). Handlers that share a table and a queue with overlapping keys
    /// (two handlers keyed by order id behind one router) each set their own.
    ///
    /// The store sees only the SHA-256 of namespace and key (64 hex
    /// characters), never the key itself: keys may hold personal data, and
    /// any key fits any store's size limit.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = Some(namespace.into());
        self
    }

    /// The in-progress claim (at least 1 s). Independent of any runner
    /// deadline (a Lambda function's timeout, a message's visibility
    /// timeout): the wrapper renews it while the handler runs, so it bounds
    /// only how long a crashed worker's key stays blocked.
    #[must_use]
    pub fn claim_ttl(mut self, claim_ttl: Duration) -> Self {
        self.config.claim_ttl = claim_ttl.max(Duration::from_secs(1));
        self
    }

    /// How often the claim is renewed while the handler runs; by default a
    /// third of the claim. Capped at half the claim.
    #[must_use]
    pub fn renew_every(mut self, every: Duration) -> Self {
        self.config.renew_every = Some(every);
        self
    }

    /// How long a completion is remembered: duplicates later than this run
    /// again. Cover the longest redelivery you expect (the queue's retention,
    /// a redrive from the dead-letter queue).
    #[must_use]
    pub fn retention(mut self, retention: Duration) -> Self {
        self.config.retention = retention;
        self
    }

    /// Validate the whole body: the same key with a different body fails
    /// permanently ([`IdempotencyError::PayloadMismatch`](super::IdempotencyError::PayloadMismatch)).
    #[must_use]
    pub fn validate_payload(self) -> Self {
        self.validate_payload_with(PayloadFn::body())
    }

    /// Validate a chosen part of the payload.
    #[must_use]
    pub fn validate_payload_with(mut self, payload: PayloadFn) -> Self {
        self.config.payload = Some(payload);
        self
    }

    /// Validate a part of the typed JSON payload ([`PayloadFn::json`]).
    #[must_use]
    pub fn validate_json<T, V, F>(self, f: F) -> Self
    where
        T: DeserializeOwned,
        V: Serialize,
        F: Fn(&T) -> V + Send + Sync + 'static,
    {
        self.validate_payload_with(PayloadFn::json(f))
    }
}

impl Config {
    /// The renewal period: as set, capped at half the claim, at least 10 ms.
    pub(super) fn renew_interval(&self) -> Duration {
        let every = self.renew_every.unwrap_or(self.claim_ttl / 3);
        every.min(self.claim_ttl / 2).max(Duration::from_millis(10))
    }
}

impl<H> tower_layer::Layer<H> for IdempotencyLayer {
    type Service = Idempotent<H>;

    fn layer(&self, inner: H) -> Idempotent<H> {
        Idempotent {
            inner,
            config: Arc::new(self.config.clone()),
        }
    }
}
