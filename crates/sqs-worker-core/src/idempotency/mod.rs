//! Run a side effect once per key, although SQS delivers at least once.
//!
//! Duplicates are normal on SQS: a redelivery after a visibility lapse or a
//! crashed worker, a producer's retry, a standard queue's rare double
//! delivery. [`IdempotencyLayer`] wraps any [`Handler`] (or [`BatchHandler`](crate::BatchHandler))
//! in [`Idempotent`], which per message:
//!
//! 1. computes the key ([`KeyFn`]: by default the message id; or a function of
//!    the message or of its typed payload), in a namespace (by default the
//!    queue name: [`IdempotencyLayer::namespace`]), and hashes both (SHA-256)
//!    into the store key. No key, or an empty one: fail permanently or run
//!    without idempotency ([`MissingKey`]);
//! 2. `begin`s it in the [`IdempotencyStore`]:
//!    - **completed** → first, with payload validation on, the stored payload
//!      hash must match this message's ([`IdempotencyError::PayloadMismatch`],
//!      permanent, if not); then the message is acknowledged **without
//!      running the handler**;
//!    - **in progress elsewhere** → the message fails with
//!      [`Error::retry_after`] ([`IdempotencyError::InProgress`]): retried
//!      later, never run twice at once. The delay starts at 1 s (the holder
//!      usually finishes in milliseconds) and grows ×4 per delivery (1, 4,
//!      16, 64 s…), never past the time left on that claim: a duplicate of a
//!      quick job is acknowledged within a second or so, and one of a long
//!      job does not burn through the queue's `maxReceiveCount` meanwhile;
//!    - **acquired** → the handler runs under an in-progress claim;
//! 3. while the handler runs, **renews the claim itself** every third of the
//!    claim ([`IdempotencyLayer::renew_every`]). The claim is therefore
//!    independent of the Lambda function timeout and of the message's
//!    visibility timeout, works the same in both runners, and needs nothing
//!    from the poller's visibility heartbeat. A crashed (or frozen) worker
//!    stops renewing and its claim expires after at most
//!    [`IdempotencyLayer::claim_ttl`]; the next delivery then runs;
//! 4. on success, records the completion for
//!    [`retention`](IdempotencyLayer::retention), with the small result the
//!    handler gave to [`set_result`], if any; on **any failure** — retryable,
//!    permanent, panic, or the engine stopping the handler at a time limit —
//!    releases the key so that the next delivery runs. Permanent failures are
//!    released rather than recorded because they go to the dead-letter queue,
//!    and a redrive after a fix must be able to run.
//!
//! If recording the completion fails (after three tries), the message is
//! still acknowledged: the side effect happened, and retrying the message
//! would run it again once the claim expires. The error is logged. The
//! completion runs as its own task, bounded by its own time limit: a time
//! limit or deadline that stops the message meanwhile does not cut it, so the
//! key ends completed and the redelivery is acknowledged without running.
//!
//! A store that refuses a request as invalid ([`StoreError::Invalid`]) fails
//! the message permanently; any other store error is retried.
//!
//! Stores: [`MemoryStore`] (tests, one process) and `DynamoDbStore` in
//! `sqs-worker-dynamodb`; any type implementing [`IdempotencyStore`].
//!
//! Metrics: `sqs_worker_idempotency_duplicates_total` (completed keys
//! acknowledged without running) and `sqs_worker_idempotency_in_progress_total`
//! (messages retried because their key was in progress).

mod batch;
pub mod conformance;
#[cfg(test)]
mod distinct_tests;
mod error;
mod key;
mod layer;
mod memory;
mod store;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;

pub use self::error::{IdempotencyError, SetResultError};
pub use self::key::{KeyFn, MissingKey, PayloadFn};
use self::layer::Config;
pub use self::layer::{DEFAULT_CLAIM_TTL, DEFAULT_RETENTION, IdempotencyLayer};
pub use self::memory::MemoryStore;
pub use self::store::{
    Begun, ClaimToken, Completed, IdempotencyStore, MAX_RESULT_SIZE, PayloadHash, StoreError,
};
use crate::error::Error;
use crate::handler::Handler;
use crate::message::Message;
/// The `tower_layer` trait [`IdempotencyLayer`] implements, re-exported so that
/// `layer.layer(handler)` needs no extra dependency.
pub use tower_layer::Layer;

/// The retry delay for a message whose key is in progress elsewhere: 1 s on
/// the first delivery, ×4 per delivery after, capped by the holder's claim.
fn in_progress_delay(receive_count: u32, remaining: Duration) -> Duration {
    let exp = receive_count.saturating_sub(1).min(10);
    let grown = Duration::from_secs(1u64 << (2 * exp));
    grown.min(remaining).max(Duration::from_secs(1))
}

/// Metric names.
pub mod names {
    /// Completed keys acknowledged without running the handler.
    pub const DUPLICATES: &str = "sqs_worker_idempotency_duplicates_total";
    /// Messages retried because their key was in progress elsewhere.
    pub const IN_PROGRESS: &str = "sqs_worker_idempotency_in_progress_total";
}

tokio::task_local! {
    static RESULT: Arc<Mutex<Option<Vec<u8>>>>;
}

/// Records a small result (at most [`MAX_RESULT_SIZE`] bytes) with the
/// completion of the key being handled; read it back with
/// [`Idempotent::completion`] or [`IdempotencyStore::get`].
///
/// Call it from the handler's own task, inside a single-message handler
/// wrapped by [`Idempotent`]; batch handlers cannot record results.
pub fn set_result(result: impl Into<Vec<u8>>) -> Result<(), SetResultError> {
    let result = result.into();
    if result.len() > MAX_RESULT_SIZE {
        return Err(SetResultError::TooLarge(result.len()));
    }
    RESULT
        .try_with(|slot| {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        })
        .map_err(|_| SetResultError::NotInIdempotentHandler)
}

/// A handler that runs at most once per idempotency key; made by
/// [`IdempotencyLayer`]. A [`Handler`] when `H` is one, a [`BatchHandler`](crate::BatchHandler)
/// when `H` is one. See the [module docs](self) for the rules.
pub struct Idempotent<H> {
    inner: H,
    config: Arc<Config>,
}

impl<H: Clone> Clone for Idempotent<H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<H> std::fmt::Debug for Idempotent<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotent")
            .field("claim", &self.config.claim_ttl)
            .field("retention", &self.config.retention)
            .finish_non_exhaustive()
    }
}

impl<H> Idempotent<H> {
    /// The wrapped handler.
    pub fn inner(&self) -> &H {
        &self.inner
    }

    /// The store key of `msg` (with the layer's prefix), or `None` when the
    /// key function gives none.
    pub fn key_of(&self, msg: &Message) -> Result<Option<String>, Error> {
        self.config.full_key(msg)
    }

    /// The completion record of `msg`'s key, with the result the handler
    /// gave to [`set_result`], if the key completed and is still retained.
    pub async fn completion(&self, msg: &Message) -> Result<Option<Completed>, Error> {
        let Some(key) = self.key_of(msg)? else {
            return Ok(None);
        };
        self.config
            .store
            .get(&key)
            .await
            .map_err(|source| store_error(msg, source))
    }
}

impl<H: Handler> Handler for Idempotent<H> {
    async fn handle(&self, msg: Message) -> Result<(), Error> {
        let cfg = &*self.config;
        let mut held = match cfg.plan(&msg).await {
            Plan::Done(r) => return r,
            Plan::Without => return self.inner.handle(msg).await,
            Plan::Run(held) => held,
        };
        let slot = Arc::new(Mutex::new(None));
        let run = RESULT.scope(
            slot.clone(),
            AssertUnwindSafe(self.inner.handle(msg.clone())).catch_unwind(),
        );
        let claims = [(held.key.clone(), held.token.clone())];
        let out = tokio::select! {
            biased;
            out = run => out,
            never = cfg.keep_renewed(&claims) => match never {},
        };
        match out {
            Ok(result) => {
                let stored = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                cfg.settle(msg.id(), &mut held, result.is_ok(), stored)
                    .await;
                result
            }
            Err(panic) => {
                cfg.settle(msg.id(), &mut held, false, None).await;
                std::panic::resume_unwind(panic)
            }
        }
    }
}

/// What to do with a message after `begin`.
enum Plan {
    /// Run the handler under this claim.
    Run(Held),
    /// Run the handler without idempotency (no key, [`MissingKey::RunWithout`]).
    Without,
    /// Don't run it: this is the message's result.
    Done(Result<(), Error>),
}

/// A claim this worker holds. Dropped while armed (the engine stopped the
/// handler at a time limit, or the runner dropped the batch), it releases
/// the key in the background, best effort; otherwise the claim just expires.
struct Held {
    store: Arc<dyn IdempotencyStore>,
    key: String,
    token: ClaimToken,
    armed: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (store, key, token) = (self.store.clone(), self.key.clone(), self.token.clone());
            rt.spawn(async move {
                if let Err(e) = store.release(&key, &token).await {
                    tracing::debug!(error = %e, "releasing an abandoned idempotency claim failed");
                }
            });
        }
    }
}

/// A store error for `msg`: permanent when the store refused the request as
/// invalid (it would fail the same way every time), else retried.
fn store_error(msg: &Message, source: StoreError) -> Error {
    let invalid = matches!(source, StoreError::Invalid { .. });
    let e = IdempotencyError::Store {
        message_id: msg.id().to_owned(),
        source,
    };
    if invalid {
        Error::permanent(e)
    } else {
        Error::retry(e)
    }
}

/// The store key: the SHA-256 (hex) of the namespace and the key, the
/// namespace's length first so that no two (namespace, key) pairs collide.
fn store_key(namespace: &str, key: &str) -> String {
    let mut text = String::with_capacity(namespace.len() + key.len() + 24);
    text.push_str("sqs-worker:");
    text.push_str(&namespace.len().to_string());
    text.push(':');
    text.push_str(namespace);
    text.push(':');
    text.push_str(key);
    PayloadHash::of(text).as_str().to_owned()
}

/// The default namespace: the queue's name, the last segment of the source
/// URL (poller) or ARN (Lambda); empty when the message has no source.
fn queue_name(msg: &Message) -> &str {
    msg.source()
        .and_then(|s| s.rsplit(['/', ':']).next())
        .unwrap_or_default()
}

/// How long one completion write may take before it counts as failed.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(10);

impl Config {
    /// The store key of `msg` (namespaced and hashed); `None` for a missing
    /// or empty key.
    fn full_key(&self, msg: &Message) -> Result<Option<String>, Error> {
        let Some(key) = self.key.key(msg)?.filter(|k| !k.is_empty()) else {
            return Ok(None);
        };
        let namespace = match &self.namespace {
            Some(ns) => ns.as_str(),
            None => queue_name(msg),
        };
        Ok(Some(store_key(namespace, &key)))
    }

    /// Key, hash, `begin`: what to do with `msg`.
    async fn plan(&self, msg: &Message) -> Plan {
        let key = match self.full_key(msg) {
            Ok(Some(k)) => k,
            Ok(None) => {
                return match self.missing_key {
                    MissingKey::RunWithout => {
                        tracing::warn!(
                            messaging.message.id = msg.id(),
                            "no idempotency key for this message; running it without idempotency"
                        );
                        Plan::Without
                    }
                    MissingKey::Fail => {
                        Plan::Done(Err(Error::permanent(IdempotencyError::MissingKey {
                            message_id: msg.id().to_owned(),
                        })))
                    }
                };
            }
            Err(e) => return Plan::Done(Err(e)),
        };
        let hash = match &self.payload {
            None => None,
            Some(p) => match p.payload(msg) {
                Ok(bytes) => Some(PayloadHash::of(bytes)),
                Err(e) => return Plan::Done(Err(e)),
            },
        };
        let begun = match self.store.begin(&key, self.claim_ttl, hash.as_ref()).await {
            Ok(b) => b,
            Err(e) => return Plan::Done(Err(store_error(msg, e))),
        };
        match begun {
            Begun::Acquired(token) => {
                tracing::debug!(
                    messaging.message.id = msg.id(),
                    key,
                    "idempotency claim acquired"
                );
                Plan::Run(Held {
                    store: self.store.clone(),
                    key,
                    token,
                    armed: true,
                })
            }
            Begun::InProgress { remaining } => {
                metrics::counter!(names::IN_PROGRESS).increment(1);
                let delay = in_progress_delay(msg.receive_count(), remaining);
                Plan::Done(Err(Error::retry_after(
                    delay,
                    IdempotencyError::InProgress {
                        message_id: msg.id().to_owned(),
                        key,
                        remaining,
                    },
                )))
            }
            Begun::Completed(done) => {
                // Validate before trusting the completion.
                if let (Some(actual), Some(stored)) = (&hash, &done.payload_hash)
                    && actual != stored
                {
                    return Plan::Done(Err(Error::permanent(IdempotencyError::PayloadMismatch {
                        message_id: msg.id().to_owned(),
                        key,
                        stored: stored.to_string(),
                        actual: actual.to_string(),
                    })));
                }
                metrics::counter!(names::DUPLICATES).increment(1);
                tracing::info!(
                    messaging.message.id = msg.id(),
                    key,
                    "idempotency key already completed; acknowledged without running the handler"
                );
                Plan::Done(Ok(()))
            }
        }
    }

    /// Renews `claims` every renewal period, forever (the caller drops it
    /// when the handler finishes). A lost claim is logged and no longer renewed.
    async fn keep_renewed(&self, claims: &[(String, ClaimToken)]) -> Infallible {
        let every = self.renew_interval();
        let mut live = vec![true; claims.len()];
        loop {
            tokio::time::sleep(every).await;
            let due: Vec<&(String, ClaimToken)> = claims
                .iter()
                .zip(&live)
                .filter(|(_, live)| **live)
                .map(|(c, _)| c)
                .collect();
            // At most `STORE_CONCURRENCY` renewals at once.
            let mut results = Vec::with_capacity(due.len());
            for chunk in due.chunks(batch::STORE_CONCURRENCY) {
                let renewals = chunk.iter().map(|(key, token)| async move {
                    (key, self.store.renew(key, token, self.claim_ttl).await)
                });
                results.extend(futures_util::future::join_all(renewals).await);
            }
            for (key, result) in results {
                match result {
                    Ok(()) => {}
                    Err(e @ StoreError::ClaimLost { .. }) => {
                        tracing::error!(
                            key, error = %e,
                            "idempotency claim lost while the handler runs; another delivery may run concurrently"
                        );
                        if let Some(i) = claims.iter().position(|(k, _)| k == key) {
                            live[i] = false;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(key, error = %e, "renewing the idempotency claim failed; will retry");
                    }
                }
            }
        }
    }

    /// After the handler: complete the key (success) or release it (failure).
    async fn settle(
        &self,
        message_id: &str,
        held: &mut Held,
        success: bool,
        result: Option<Vec<u8>>,
    ) {
        held.armed = false;
        let (key, token) = (&held.key, &held.token);
        if !success {
            if let Err(e) = self.store.release(key, token).await {
                tracing::warn!(
                    messaging.message.id = message_id, key, error = %e,
                    "releasing the idempotency key failed; the retry runs once the claim expires"
                );
            }
            return;
        }
        // Its own task: a time limit that drops this future meanwhile does
        // not cut the write (the message may come back; it then reads completed).
        let (store, key, token) = (self.store.clone(), key.clone(), token.clone());
        let (retention, message_id) = (self.retention, message_id.to_owned());
        let write = tokio::spawn(async move {
            complete(
                &*store,
                &key,
                &token,
                retention,
                result.as_deref(),
                &message_id,
            )
            .await;
        });
        let _ = write.await;
    }
}

/// Records the completion: three tries, each bounded by [`COMPLETE_TIMEOUT`];
/// a failure is logged (the message is acknowledged anyway).
async fn complete(
    store: &dyn IdempotencyStore,
    key: &str,
    token: &ClaimToken,
    retention: Duration,
    result: Option<&[u8]>,
    message_id: &str,
) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=3 {
        let write = store.complete(key, token, retention, result);
        let outcome = match tokio::time::timeout(COMPLETE_TIMEOUT, write).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Backend {
                store: "idempotency store".to_owned(),
                operation: "complete",
                key: key.to_owned(),
                source: format!("no answer within {COMPLETE_TIMEOUT:?}").into(),
            }),
        };
        match outcome {
            Ok(()) => return,
            Err(e)
                if attempt == 3
                    || matches!(e, StoreError::ClaimLost { .. } | StoreError::Invalid { .. }) =>
            {
                tracing::error!(
                    messaging.message.id = message_id, key, error = %e,
                    "the handler succeeded but its idempotency completion was not recorded; \
                     acknowledging the message anyway"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(key, error = %e, "recording the idempotency completion failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}
