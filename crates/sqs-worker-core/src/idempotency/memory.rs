//! An in-process [`IdempotencyStore`], for tests and single-process workers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::store::{Begun, ClaimToken, Completed, IdempotencyStore, PayloadHash, StoreError};
use crate::visibility::BoxFuture;

/// Records in a mutex-protected map, with claim expiry and retention.
///
/// Cloning shares the map, so two "workers" in a test can share one store.
/// Time comes from [`tokio::time::Instant`], so tests with paused time
/// (`tokio::time::pause`, `advance`) control claims and retention. Expired
/// records are dropped when touched and swept every 1,024 `begin`s (or by
/// [`purge_expired`](Self::purge_expired)).
///
/// Nothing survives the process: across processes or hosts use a shared store
/// such as `sqs_worker_dynamodb::DynamoDbStore`.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    records: HashMap<String, Record>,
    begins: u64,
}

struct Record {
    state: State,
    payload_hash: Option<PayloadHash>,
}

enum State {
    InProgress {
        token: ClaimToken,
        until: Instant,
    },
    Completed {
        result: Option<Vec<u8>>,
        until: Instant,
    },
}

impl Record {
    fn expired(&self, now: Instant) -> bool {
        match &self.state {
            State::InProgress { until, .. } | State::Completed { until, .. } => *until <= now,
        }
    }

    /// Whether `token` holds the record: the in-progress record it began,
    /// expired or not (an expired claim nobody took over is still its own),
    /// as the DynamoDB store's token condition decides.
    fn held_by(&self, token: &ClaimToken) -> bool {
        matches!(&self.state, State::InProgress { token: t, .. } if t == token)
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("records", &self.lock().records.len())
            .finish()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of records, expired ones included until swept.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every expired record.
    pub fn purge_expired(&self) {
        let now = Instant::now();
        self.lock().records.retain(|_, r| !r.expired(now));
    }

    /// Poison-tolerant: a panic elsewhere never leaves the map half-written
    /// (every update is a single insert or remove).
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn begin_now(&self, key: &str, claim_ttl: Duration, hash: Option<&PayloadHash>) -> Begun {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.begins += 1;
        if inner.begins.is_multiple_of(1024) {
            inner.records.retain(|_, r| !r.expired(now));
        }
        if let Some(r) = inner.records.get(key).filter(|r| !r.expired(now)) {
            return match &r.state {
                State::InProgress { until, .. } => Begun::InProgress {
                    remaining: until.saturating_duration_since(now),
                },
                State::Completed { result, .. } => Begun::Completed(Completed {
                    result: result.clone(),
                    payload_hash: r.payload_hash.clone(),
                }),
            };
        }
        let token = ClaimToken::generate();
        inner.records.insert(
            key.to_owned(),
            Record {
                state: State::InProgress {
                    token: token.clone(),
                    until: now + claim_ttl,
                },
                payload_hash: hash.cloned(),
            },
        );
        Begun::Acquired(token)
    }

    fn with_held<T>(
        &self,
        key: &str,
        token: &ClaimToken,
        f: impl FnOnce(&mut HashMap<String, Record>, Instant) -> T,
    ) -> Result<T, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        if !inner.records.get(key).is_some_and(|r| r.held_by(token)) {
            return Err(StoreError::ClaimLost {
                key: key.to_owned(),
            });
        }
        Ok(f(&mut inner.records, now))
    }
}

impl IdempotencyStore for MemoryStore {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        claim_ttl: Duration,
        payload_hash: Option<&'a PayloadHash>,
    ) -> BoxFuture<'a, Result<Begun, StoreError>> {
        Box::pin(async move { Ok(self.begin_now(key, claim_ttl, payload_hash)) })
    }

    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        claim_ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.with_held(key, token, |records, now| {
                if let Some(State::InProgress { until, .. }) =
                    records.get_mut(key).map(|r| &mut r.state)
                {
                    *until = now + claim_ttl;
                }
            })
        })
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        retention: Duration,
        result: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.with_held(key, token, |records, now| {
                if let Some(r) = records.get_mut(key) {
                    r.state = State::Completed {
                        result: result.map(<[u8]>::to_vec),
                        until: now + retention,
                    };
                }
            })
        })
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.with_held(key, token, |records, _| {
                records.remove(key);
            })
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Completed>, StoreError>> {
        Box::pin(async move {
            let now = Instant::now();
            let inner = self.lock();
            Ok(inner
                .records
                .get(key)
                .filter(|r| !r.expired(now))
                .and_then(|r| match &r.state {
                    State::Completed { result, .. } => Some(Completed {
                        result: result.clone(),
                        payload_hash: r.payload_hash.clone(),
                    }),
                    State::InProgress { .. } => None,
                }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLAIM_TTL: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn lease_lifecycle() {
        let s = MemoryStore::new();
        let Begun::Acquired(t) = s.begin("k", CLAIM_TTL, None).await.unwrap() else {
            panic!("first begin acquires")
        };
        assert_eq!(
            s.begin("k", CLAIM_TTL, None).await.unwrap(),
            Begun::InProgress {
                remaining: CLAIM_TTL
            }
        );
        tokio::time::advance(Duration::from_secs(8)).await;
        s.renew("k", &t, CLAIM_TTL).await.unwrap();
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(matches!(
            s.begin("k", CLAIM_TTL, None).await.unwrap(),
            Begun::InProgress { .. }
        ));
        s.complete("k", &t, Duration::from_secs(60), Some(b"r"))
            .await
            .unwrap();
        let done = Completed {
            result: Some(b"r".to_vec()),
            payload_hash: None,
        };
        assert_eq!(
            s.begin("k", CLAIM_TTL, None).await.unwrap(),
            Begun::Completed(done.clone())
        );
        assert_eq!(s.get("k").await.unwrap(), Some(done));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(s.get("k").await.unwrap(), None, "retention over");
        assert!(matches!(
            s.begin("k", CLAIM_TTL, None).await.unwrap(),
            Begun::Acquired(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_lease_is_taken_over_and_the_old_token_is_lost() {
        let s = MemoryStore::new();
        let Begun::Acquired(old) = s.begin("k", CLAIM_TTL, None).await.unwrap() else {
            panic!()
        };
        tokio::time::advance(CLAIM_TTL).await;
        let Begun::Acquired(new) = s.begin("k", CLAIM_TTL, None).await.unwrap() else {
            panic!("an expired claim is free")
        };
        assert_ne!(old, new);
        for e in [
            s.renew("k", &old, CLAIM_TTL).await.unwrap_err(),
            s.complete("k", &old, CLAIM_TTL, None).await.unwrap_err(),
            s.release("k", &old).await.unwrap_err(),
        ] {
            assert!(matches!(e, StoreError::ClaimLost { .. }), "{e}");
        }
        s.release("k", &new).await.unwrap();
        assert!(s.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn purge_drops_expired_records() {
        let s = MemoryStore::new();
        for k in ["a", "b"] {
            s.begin(k, CLAIM_TTL, None).await.unwrap();
        }
        tokio::time::advance(CLAIM_TTL).await;
        s.begin("c", CLAIM_TTL, None).await.unwrap();
        s.purge_expired();
        assert_eq!(s.len(), 1);
    }
}
