//! The storage contract behind [`Idempotent`](super::Idempotent): one record
//! per key, in progress (a claim with an expiry and a token) or completed
//! (with a retention TTL).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::BoxError;
use crate::visibility::BoxFuture;

/// The largest result [`set_result`](super::set_result) accepts: 64 KiB, so a
/// record always fits a DynamoDB item (400 KB) with room to spare.
pub const MAX_RESULT_SIZE: usize = 64 * 1024;

/// Proof of holding an in-progress claim: an opaque, random value that
/// [`IdempotencyStore::renew`], [`complete`](IdempotencyStore::complete) and
/// [`release`](IdempotencyStore::release) must present.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClaimToken(String);

impl ClaimToken {
    /// A fresh random token (128 bits, hex).
    pub fn generate() -> Self {
        Self(format!("{:032x}", fastrand::u128(..)))
    }

    /// A token read back from a store.
    pub fn from_stored(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token's text, to store.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClaimToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short prefix only: enough to correlate logs.
        let short = self.0.get(..8).unwrap_or(&self.0);
        write!(f, "ClaimToken({short}…)")
    }
}

/// A stable hash of a message's payload (SHA-256, lowercase hex), stored with
/// the record so that the same key arriving with a different payload is
/// caught. Stable across processes, platforms and Rust versions.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PayloadHash(String);

impl PayloadHash {
    /// The SHA-256 of `bytes`.
    pub fn of(bytes: impl AsRef<[u8]>) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(bytes.as_ref());
        let mut hex = String::with_capacity(64);
        for b in digest.iter() {
            hex.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            hex.push(char::from_digit(u32::from(b & 0x0f), 16).unwrap_or('0'));
        }
        Self(hex)
    }

    /// A hash read back from a store.
    pub fn from_stored(hash: impl Into<String>) -> Self {
        Self(hash.into())
    }

    /// The hash's text, to store.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PayloadHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PayloadHash({})", &self.0)
    }
}

impl fmt::Display for PayloadHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A completion record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completed {
    /// The small result the handler recorded with
    /// [`set_result`](super::set_result), if any.
    pub result: Option<Vec<u8>>,
    /// The payload hash stored when the key was begun (with validation on).
    pub payload_hash: Option<PayloadHash>,
}

/// What [`IdempotencyStore::begin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begun {
    /// The caller now holds the in-progress claim; run the handler.
    Acquired(ClaimToken),
    /// Someone else holds an unexpired claim on the key.
    InProgress {
        /// How long until that claim expires unless renewed. Relative, so
        /// that no clock has to be shared between the store and the worker.
        remaining: Duration,
    },
    /// The key completed earlier and the record is still retained.
    Completed(Completed),
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The token no longer holds the key: the claim expired and another
    /// worker took it, or the record was removed.
    #[error("idempotency key {key:?}: the in-progress claim is no longer held by this worker")]
    ClaimLost {
        /// The key.
        key: String,
    },
    /// The store refused the request as invalid (e.g. DynamoDB's
    /// `ValidationException`): the same request fails the same way every
    /// time, so the message fails permanently instead of being retried until
    /// the dead-letter queue as "store unavailable".
    #[error("idempotency store {store}: {operation} of key {key:?} was refused as invalid")]
    Invalid {
        /// Which store.
        store: String,
        /// `begin`, `renew`, `complete`, `release` or `get`.
        operation: &'static str,
        /// The key.
        key: String,
        /// What the store said.
        #[source]
        source: BoxError,
    },
    /// The backend failed (network, throttling, permissions, …). Retryable.
    #[error("idempotency store {store}: {operation} of key {key:?} failed")]
    Backend {
        /// Which store, e.g. `DynamoDB table "idempotency"`.
        store: String,
        /// `begin`, `renew`, `complete`, `release` or `get`.
        operation: &'static str,
        /// The key.
        key: String,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
}

/// Where idempotency records live: in memory ([`MemoryStore`](super::MemoryStore)),
/// DynamoDB (`sqs-worker-dynamodb`), or your own.
///
/// Object-safe (methods return [`BoxFuture`]) so that layers hold an
/// `Arc<dyn IdempotencyStore>`. Every write must be atomic with respect to
/// its condition (a compare-and-set): two workers calling `begin` on the same
/// key at once must never both get [`Begun::Acquired`].
///
/// Expiry is given as durations, measured on the store's own clock.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Takes the in-progress claim on `key` for `claim` if the key is new, its
    /// claim has expired, or its record is past retention; otherwise reports
    /// what holds it. Stores `payload_hash` with the record.
    fn begin<'a>(
        &'a self,
        key: &'a str,
        claim_ttl: Duration,
        payload_hash: Option<&'a PayloadHash>,
    ) -> BoxFuture<'a, Result<Begun, StoreError>>;

    /// Extends the claim held with `token` to `claim` from now.
    /// [`StoreError::ClaimLost`] if the token no longer holds the key.
    ///
    /// "Holds" means the record is still the in-progress record begun with
    /// `token`, expired or not: a claim that expired but was not taken over
    /// by another `begin` can still be renewed, completed or released (the
    /// [conformance suite](super::conformance) checks this for every store).
    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        claim_ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Marks the key completed, kept for `retention`, with an optional small
    /// `result`. [`StoreError::ClaimLost`] if the token no longer holds the key.
    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        retention: Duration,
        result: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Removes the in-progress record held with `token`, so that a retry can
    /// run at once. [`StoreError::ClaimLost`] if the token no longer holds it.
    fn release<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The completion record of `key`, if the key completed and is retained.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Completed>, StoreError>>;
}

impl<S: IdempotencyStore + ?Sized> IdempotencyStore for Arc<S> {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        claim_ttl: Duration,
        payload_hash: Option<&'a PayloadHash>,
    ) -> BoxFuture<'a, Result<Begun, StoreError>> {
        (**self).begin(key, claim_ttl, payload_hash)
    }

    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        claim_ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).renew(key, token, claim_ttl)
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        retention: Duration,
        result: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).complete(key, token, retention, result)
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).release(key, token)
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Completed>, StoreError>> {
        (**self).get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_hash_is_stable_sha256() {
        // The well-known SHA-256 of "abc": a persisted hash must never change.
        assert_eq!(
            PayloadHash::of("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn store_is_object_safe() {
        fn takes(_: Option<&dyn IdempotencyStore>) {}
        takes(None);
        let t = ClaimToken::generate();
        assert_eq!(t.as_str().len(), 32);
        assert_ne!(t, ClaimToken::generate());
    }
}
