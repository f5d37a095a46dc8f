//! The contract every [`IdempotencyStore`] keeps, as one suite that runs
//! against any store: [`MemoryStore`](super::MemoryStore) in core's tests,
//! `DynamoDbStore` against the local server, your own store in yours.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use sqs_worker_core::idempotency::{MemoryStore, conformance};
//! conformance::check(&MemoryStore::new(), "doc").await;
//! # }
//! ```

use std::time::Duration;

use super::store::{Begun, ClaimToken, Completed, IdempotencyStore, PayloadHash, StoreError};

/// The claim the expiry cases use: short, so the suite takes a few seconds.
const SHORT_CLAIM: Duration = Duration::from_secs(1);
const CLAIM: Duration = Duration::from_secs(30);
const RETENTION: Duration = Duration::from_secs(600);

/// Runs every case against `store`, with keys starting with `prefix` (unique
/// per run when the store is shared), and panics naming the first case where
/// the store breaks the contract. Waits about 1.5 s of real time for claims
/// to expire.
pub async fn check(store: &dyn IdempotencyStore, prefix: &str) {
    let k = |name: &str| format!("{prefix}:{name}");
    lifecycle(store, &k("lifecycle")).await;
    release_frees_the_key(store, &k("release")).await;
    wrong_tokens_are_refused(store, &k("tokens")).await;
    let (free, taken) = (k("expired-free"), k("expired-taken"));
    let Begun::Acquired(mine) = begin(store, &free, SHORT_CLAIM, None).await else {
        panic!("conformance: a new key is acquired")
    };
    let Begun::Acquired(old) = begin(store, &taken, SHORT_CLAIM, None).await else {
        panic!("conformance: a new key is acquired")
    };
    tokio::time::sleep(SHORT_CLAIM + Duration::from_millis(500)).await;
    // Expired, but nobody took it over: still this worker's to complete.
    let done = store.complete(&free, &mine, RETENTION, None).await;
    assert!(
        done.is_ok(),
        "conformance: completing an expired claim nobody took over succeeds: {done:?}"
    );
    assert_eq!(
        begin(store, &free, CLAIM, None).await,
        Begun::Completed(Completed::default()),
        "conformance: the expired-but-completed key reads completed"
    );
    // Expired and taken over: the old token has lost it.
    let Begun::Acquired(new) = begin(store, &taken, CLAIM, None).await else {
        panic!("conformance: an expired claim is free to take over")
    };
    assert_ne!(old, new);
    lost(
        store.complete(&taken, &old, RETENTION, None).await,
        "complete (taken over)",
    );
    lost(store.release(&taken, &old).await, "release (taken over)");
    let ok = store.release(&taken, &new).await;
    assert!(ok.is_ok(), "conformance: the new holder releases: {ok:?}");
}

async fn begin(
    store: &dyn IdempotencyStore,
    key: &str,
    claim: Duration,
    hash: Option<&PayloadHash>,
) -> Begun {
    match store.begin(key, claim, hash).await {
        Ok(b) => b,
        Err(e) => panic!("conformance: begin {key:?} failed: {e}"),
    }
}

fn lost(r: Result<(), StoreError>, what: &str) {
    assert!(
        matches!(r, Err(StoreError::ClaimLost { .. })),
        "conformance: {what} with a token that no longer holds the key is ClaimLost: {r:?}"
    );
}

async fn lifecycle(store: &dyn IdempotencyStore, key: &str) {
    let hash = PayloadHash::of("payload");
    let Begun::Acquired(token) = begin(store, key, CLAIM, Some(&hash)).await else {
        panic!("conformance: a new key is acquired")
    };
    match begin(store, key, CLAIM, Some(&hash)).await {
        Begun::InProgress { remaining } => assert!(
            remaining <= CLAIM,
            "conformance: in-progress remaining {remaining:?} is within the claim"
        ),
        other => panic!("conformance: a held key is in progress, not {other:?}"),
    }
    let renewed = store.renew(key, &token, CLAIM).await;
    assert!(
        renewed.is_ok(),
        "conformance: the holder renews: {renewed:?}"
    );
    let done = store.complete(key, &token, RETENTION, Some(b"r")).await;
    assert!(done.is_ok(), "conformance: the holder completes: {done:?}");
    let expected = Completed {
        result: Some(b"r".to_vec()),
        payload_hash: Some(hash.clone()),
    };
    assert_eq!(
        begin(store, key, CLAIM, Some(&hash)).await,
        Begun::Completed(expected.clone()),
        "conformance: a completed key reads completed, with its result and hash"
    );
    let got = store.get(key).await.ok().flatten();
    assert_eq!(got, Some(expected), "conformance: get reads the completion");
    lost(
        store.complete(key, &token, RETENTION, None).await,
        "complete (completed)",
    );
    lost(store.release(key, &token).await, "release (completed)");
}

async fn release_frees_the_key(store: &dyn IdempotencyStore, key: &str) {
    let Begun::Acquired(token) = begin(store, key, CLAIM, None).await else {
        panic!("conformance: a new key is acquired")
    };
    let released = store.release(key, &token).await;
    assert!(
        released.is_ok(),
        "conformance: the holder releases: {released:?}"
    );
    assert!(
        matches!(begin(store, key, CLAIM, None).await, Begun::Acquired(_)),
        "conformance: a released key is acquired again"
    );
    let none = store.get(key).await.ok().flatten();
    assert_eq!(
        none, None,
        "conformance: an in-progress key has no completion"
    );
}

async fn wrong_tokens_are_refused(store: &dyn IdempotencyStore, key: &str) {
    let stranger = ClaimToken::generate();
    lost(
        store.renew(key, &stranger, CLAIM).await,
        "renew (no record)",
    );
    let Begun::Acquired(_) = begin(store, key, CLAIM, None).await else {
        panic!("conformance: a new key is acquired")
    };
    lost(
        store.renew(key, &stranger, CLAIM).await,
        "renew (other token)",
    );
    lost(
        store.complete(key, &stranger, RETENTION, None).await,
        "complete (other token)",
    );
    lost(store.release(key, &stranger).await, "release (other token)");
}
