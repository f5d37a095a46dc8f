//! Issue 15: idempotency keys never drop a distinct message; stores agree.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::batch::{BatchHandler, BatchResults};
use crate::engine::{Engine, EngineConfig, FailureKind, Processor};
use crate::visibility::BoxFuture;

const QUEUE_URL: &str = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders.fifo";
const QUEUE_ARN: &str = "arn:aws:sqs:eu-west-1:123456789012:orders.fifo";

fn counting() -> (Arc<AtomicUsize>, impl Handler + Clone) {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let h = crate::handler::handler_fn(move |_m: Message| {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            Ok::<(), Error>(())
        }
    });
    (runs, h)
}

fn fifo(id: &str, group: &str, dedup: &str) -> Message {
    Message::builder(id, "same body")
        .group_id(group)
        .deduplication_id(dedup)
        .sequence_number("1")
        .source(QUEUE_URL)
        .build()
}

#[tokio::test]
async fn one_deduplication_id_in_two_groups_runs_both() {
    // High-throughput FIFO scopes deduplication per group: two messages.
    let (runs, h) = counting();
    let idem = IdempotencyLayer::new(MemoryStore::new()).layer(h);
    idem.handle(fifo("m1", "g1", "d")).await.unwrap();
    idem.handle(fifo("m2", "g2", "d")).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // With dedup-id keys too: the group is part of the key.
    let (runs, h) = counting();
    let idem = IdempotencyLayer::new(MemoryStore::new())
        .key(KeyFn::deduplication_id())
        .layer(h);
    idem.handle(fifo("m1", "g1", "d")).await.unwrap();
    idem.handle(fifo("m2", "g2", "d")).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_same_content_sent_again_after_the_window_runs_again() {
    // Content-based deduplication: one dedup id (the body's SHA-256) for two
    // messages sent 10 minutes apart, which SQS delivers both. New message
    // ids: the default key runs both.
    let (runs, h) = counting();
    let idem = IdempotencyLayer::new(MemoryStore::new()).layer(h);
    idem.handle(fifo("m-first", "g", "sha-of-body"))
        .await
        .unwrap();
    idem.handle(fifo("m-10-min-later", "g", "sha-of-body"))
        .await
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // A redelivery of one message (same id) is still caught.
    idem.handle(fifo("m-first", "g", "sha-of-body"))
        .await
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn two_handlers_with_one_business_key_on_one_table_both_run() {
    #[derive(serde::Deserialize)]
    struct Order {
        order_id: u64,
    }
    let store = MemoryStore::new();
    let on = |queue: &str| {
        Message::builder("m-1", r#"{"order_id": 7}"#)
            .source(format!("https://sqs.eu-west-1.amazonaws.com/1/{queue}"))
            .build()
    };
    let (charged, charge) = counting();
    let (shipped, ship) = counting();
    let by_order = IdempotencyLayer::new(store.clone()).key_from_json(|o: &Order| Some(o.order_id));
    by_order
        .clone()
        .layer(charge)
        .handle(on("charges"))
        .await
        .unwrap();
    by_order.layer(ship).handle(on("shipments")).await.unwrap();
    assert_eq!(charged.load(Ordering::SeqCst), 1);
    assert_eq!(shipped.load(Ordering::SeqCst), 1, "namespaced by queue");
    // Keys are stored hashed: no business id in the store.
    let key = IdempotencyLayer::new(store.clone())
        .key_from_json(|o: &Order| Some(o.order_id))
        .layer(counting().1)
        .key_of(&on("charges"))
        .unwrap()
        .unwrap();
    assert_eq!(key.len(), 64);
    assert!(!key.contains('7') || key.chars().all(|c| c.is_ascii_hexdigit()));
}

#[tokio::test]
async fn the_poller_and_lambda_on_one_queue_share_keys() {
    let idem = IdempotencyLayer::new(MemoryStore::new()).layer(counting().1);
    let from = |source: &str| Message::builder("m-1", "").source(source).build();
    assert_eq!(
        idem.key_of(&from(QUEUE_URL)).unwrap(),
        idem.key_of(&from(QUEUE_ARN)).unwrap()
    );
    let other = from("https://sqs.eu-west-1.amazonaws.com/123456789012/other");
    assert_ne!(
        idem.key_of(&other).unwrap(),
        idem.key_of(&from(QUEUE_URL)).unwrap()
    );
}

#[tokio::test]
async fn an_empty_key_is_a_missing_key_and_fails_permanently() {
    let (runs, h) = counting();
    let idem = IdempotencyLayer::new(MemoryStore::new())
        .key_fn(|_m| Some(String::new()))
        .layer(h);
    let e = idem
        .handle(Message::builder("m-1", "").build())
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
    assert!(e.to_string().contains("m-1"), "names the message: {e}");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

/// A store that refuses every request as invalid.
struct Refusing;

fn refused(key: &str, operation: &'static str) -> StoreError {
    StoreError::Invalid {
        store: "test".into(),
        operation,
        key: key.to_owned(),
        source: "ValidationException".into(),
    }
}

impl IdempotencyStore for Refusing {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        _: Duration,
        _: Option<&'a PayloadHash>,
    ) -> BoxFuture<'a, Result<Begun, StoreError>> {
        Box::pin(async move { Err(refused(key, "begin")) })
    }
    fn renew<'a>(
        &'a self,
        key: &'a str,
        _: &'a ClaimToken,
        _: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { Err(refused(key, "renew")) })
    }
    fn complete<'a>(
        &'a self,
        key: &'a str,
        _: &'a ClaimToken,
        _: Duration,
        _: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { Err(refused(key, "complete")) })
    }
    fn release<'a>(
        &'a self,
        key: &'a str,
        _: &'a ClaimToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { Err(refused(key, "release")) })
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Completed>, StoreError>> {
        Box::pin(async move { Err(refused(key, "get")) })
    }
}

#[tokio::test]
async fn a_store_validation_error_is_permanent() {
    let (runs, h) = counting();
    let idem = IdempotencyLayer::new(Refusing).layer(h);
    let e = idem
        .handle(Message::builder("m-1", "").build())
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_batch_with_a_group_head_in_progress_passes_none_of_that_group() {
    let store = MemoryStore::new();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let batch_handler = move |batch: Vec<Message>| {
        let s = s.clone();
        async move {
            s.lock()
                .unwrap()
                .extend(batch.iter().map(|m| m.id().to_owned()));
            BatchResults::all_succeeded(&batch)
        }
    };
    let idem = IdempotencyLayer::new(store.clone()).layer(batch_handler);
    let batch = vec![
        fifo("a1", "A", "a1"),
        fifo("a2", "A", "a2"),
        fifo("b1", "B", "b1"),
        fifo("a3", "A", "a3"),
    ];
    // A1 is in progress elsewhere.
    let key = idem.key_of(&batch[0]).unwrap().unwrap();
    assert!(matches!(
        store.begin(&key, Duration::from_secs(60), None).await,
        Ok(Begun::Acquired(_))
    ));
    let results = BatchHandler::handle_batch(&idem, batch.clone()).await;
    assert_eq!(*seen.lock().unwrap(), ["b1"]);
    for id in ["a1", "a2", "a3"] {
        assert!(matches!(results.get(id), Some(Err(_))), "{id} fails");
    }
    // A2's and A3's keys are free again for their redelivery.
    for m in &batch[1..] {
        let key = idem.key_of(m).unwrap().unwrap();
        if m.id() != "b1" {
            assert!(matches!(
                store.begin(&key, Duration::from_secs(1), None).await,
                Ok(Begun::Acquired(_))
            ));
        }
    }
}

/// A store whose completion write takes `delay`.
struct SlowComplete {
    inner: MemoryStore,
    delay: Duration,
}

impl IdempotencyStore for SlowComplete {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
        hash: Option<&'a PayloadHash>,
    ) -> BoxFuture<'a, Result<Begun, StoreError>> {
        self.inner.begin(key, ttl, hash)
    }
    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.renew(key, token, ttl)
    }
    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        retention: Duration,
        result: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.inner.complete(key, token, retention, result).await
        })
    }
    fn release<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.release(key, token)
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Completed>, StoreError>> {
        self.inner.get(key)
    }
}

#[tokio::test]
async fn a_completion_racing_the_time_limit_leaves_the_key_completed() {
    let store = MemoryStore::new();
    let slow = SlowComplete {
        inner: store.clone(),
        delay: Duration::from_millis(300),
    };
    let (runs, h) = counting();
    let idem = IdempotencyLayer::new(slow).layer(h);
    let m = Message::builder("m-1", "").build();
    let key = idem.key_of(&m).unwrap().unwrap();
    let engine = Engine::with_config(
        idem,
        EngineConfig::default().handler_timeout(Some(Duration::from_millis(50))),
    );
    let report = engine.run(vec![m], None).await;
    let kinds: Vec<FailureKind> = report.failed().map(|(_, f)| f.kind).collect();
    assert_eq!(kinds, [FailureKind::TimedOut], "the limit cut the wait");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // The write goes on: the key ends completed, so the redelivery is acknowledged.
    let mut completed = false;
    for _ in 0..100 {
        if store.get(&key).await.unwrap().is_some() {
            completed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(completed, "the completion was not cut");
}

#[tokio::test]
async fn the_memory_store_keeps_the_store_contract() {
    conformance::check(&MemoryStore::new(), "memory").await;
}
