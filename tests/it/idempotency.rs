//! Idempotency against a real DynamoDB API (moto's server on loopback, a
//! fresh table per test), and through both runners.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqs_worker::idempotency::{
    Begun, IdempotencyError, IdempotencyLayer, IdempotencyStore, KeyFn, Layer, StoreError,
    set_result,
};
use sqs_worker::{Action, Error, Handler, Message};
use sqs_worker_dynamodb::DynamoDbStore;

async fn dynamodb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&common::sdk_config().await)
}

/// A store on a fresh table, created with the crate's helper.
async fn store() -> DynamoDbStore {
    let store = DynamoDbStore::new(dynamodb().await, common::unique("idem"));
    store
        .create_table()
        .await
        .unwrap_or_else(|e| panic!("create_table: {e:?}"));
    store
}

/// Counts its runs, sleeps `work`, fails when the body says so.
#[derive(Clone)]
struct Counting {
    runs: Arc<AtomicUsize>,
    work: Duration,
}

impl Counting {
    fn new(work: Duration) -> Self {
        Self {
            runs: Arc::new(AtomicUsize::new(0)),
            work,
        }
    }
    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

impl Handler for Counting {
    async fn handle(&self, msg: Message) -> Result<(), Error> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.work).await;
        match msg.body() {
            "fail" => Err(Error::msg("asked to fail")),
            _ => Ok(()),
        }
    }
}

fn msg(id: &str, body: &str) -> Message {
    Message::builder(id, body).build()
}

fn layer(store: &DynamoDbStore) -> IdempotencyLayer {
    IdempotencyLayer::new(store.clone()).claim_ttl(Duration::from_secs(20))
}

#[tokio::test]
async fn dynamodb_same_key_twice_in_sequence_runs_once() {
    let store = store().await;
    let h = Counting::new(Duration::ZERO);
    let idem = layer(&store).layer(h.clone());
    idem.handle(msg("m1", "x")).await.unwrap();
    idem.handle(msg("m1", "x")).await.unwrap();
    idem.handle(msg("m2", "x")).await.unwrap();
    assert_eq!(h.runs(), 2);
}

#[tokio::test]
async fn dynamodb_concurrent_workers_run_once_and_the_other_is_acknowledged_later() {
    let store = store().await;
    let h = Counting::new(Duration::from_millis(800));
    let a = layer(&store).layer(h.clone());
    let b = layer(&store).layer(h.clone());
    let first = tokio::spawn(async move { a.handle(msg("m1", "x")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = b.handle(msg("m1", "x")).await.unwrap_err();
    assert!(matches!(e.action(), Action::RetryAfter(_)), "{e}");
    assert!(matches!(
        e.downcast_ref::<IdempotencyError>(),
        Some(IdempotencyError::InProgress { .. })
    ));
    first.await.unwrap().unwrap();
    b.handle(msg("m1", "x")).await.unwrap();
    assert_eq!(h.runs(), 1);
}

#[tokio::test]
async fn dynamodb_many_workers_racing_for_one_key_run_it_once() {
    let store = store().await;
    let h = Counting::new(Duration::from_millis(200));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let idem = layer(&store).layer(h.clone());
        tasks.push(tokio::spawn(
            async move { idem.handle(msg("m1", "x")).await },
        ));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap().is_ok());
    }
    assert_eq!(h.runs(), 1);
    assert_eq!(ok, 1, "the others were told to retry");
}

#[tokio::test]
async fn dynamodb_a_crashed_holders_lease_expires_and_the_next_delivery_runs() {
    let store = store().await;
    let h = Counting::new(Duration::ZERO);
    let idem = layer(&store).layer(h.clone());
    // The store key the layer derives (namespaced, hashed), taken by a crashed holder.
    let key = idem.key_of(&msg("m1", "x")).unwrap().unwrap();
    let Begun::Acquired(_) = store
        .begin(&key, Duration::from_secs(1), None)
        .await
        .unwrap()
    else {
        panic!("first begin acquires")
    };
    assert!(idem.handle(msg("m1", "x")).await.is_err());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    idem.handle(msg("m1", "x")).await.unwrap();
    assert_eq!(h.runs(), 1);
}

#[tokio::test]
async fn dynamodb_the_lease_is_renewed_while_the_handler_runs() {
    let store = store().await;
    let h = Counting::new(Duration::from_millis(3500));
    let claim_ttl = |s: &DynamoDbStore| {
        IdempotencyLayer::new(s.clone())
            .claim_ttl(Duration::from_secs(1))
            .renew_every(Duration::from_millis(300))
    };
    let a = claim_ttl(&store).layer(h.clone());
    let b = claim_ttl(&store).layer(h.clone());
    let first = tokio::spawn(async move { a.handle(msg("m1", "x")).await });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        b.handle(msg("m1", "x")).await.is_err(),
        "held past 2 claims"
    );
    first.await.unwrap().unwrap();
    b.handle(msg("m1", "x")).await.unwrap();
    assert_eq!(h.runs(), 1);
}

#[tokio::test]
async fn dynamodb_handler_failure_releases_the_key_and_the_retry_runs() {
    let store = store().await;
    let h = Counting::new(Duration::ZERO);
    let idem = layer(&store).layer(h.clone());
    idem.handle(msg("m1", "fail")).await.unwrap_err();
    let item = store.get("m1").await.unwrap();
    assert_eq!(item, None);
    idem.handle(msg("m1", "ok")).await.unwrap();
    idem.handle(msg("m1", "ok")).await.unwrap();
    assert_eq!(h.runs(), 2);
}

#[tokio::test]
async fn dynamodb_payload_mismatch_is_permanent() {
    let store = store().await;
    let h = Counting::new(Duration::ZERO);
    let idem = layer(&store)
        .key_from_json(|o: &serde_json::Value| o["order_id"].as_u64())
        .validate_payload()
        .layer(h.clone());
    idem.handle(msg("a", r#"{"order_id":1,"amount":5}"#))
        .await
        .unwrap();
    idem.handle(msg("b", r#"{"order_id":1,"amount":5}"#))
        .await
        .unwrap();
    let e = idem
        .handle(msg("c", r#"{"order_id":1,"amount":6}"#))
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
    assert!(e.to_string().contains("different payload"), "{e}");
    assert_eq!(h.runs(), 1);
}

#[tokio::test]
async fn dynamodb_dedup_id_keys_and_results_round_trip() {
    let store = store().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let idem = layer(&store)
        .key(KeyFn::deduplication_id())
        .layer(sqs_worker::handler_fn(move |m: Message| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                set_result(format!("done-{}", m.id())).map_err(Error::permanent)?;
                Ok::<(), Error>(())
            }
        }));
    let fifo = |id: &str| {
        Message::builder(id, "x")
            .group_id("g")
            .deduplication_id("dedup-1")
            .build()
    };
    idem.handle(fifo("m1")).await.unwrap();
    idem.handle(fifo("m2")).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let done = idem.completion(&fifo("m3")).await.unwrap().unwrap();
    assert_eq!(done.result.as_deref(), Some(&b"done-m1"[..]));
}

#[tokio::test]
async fn dynamodb_tokens_guard_every_write_and_retention_expires() {
    let store = store().await;
    let claim_ttl = Duration::from_secs(30);
    let Begun::Acquired(t) = store.begin("k", claim_ttl, None).await.unwrap() else {
        panic!()
    };
    let Begun::InProgress { remaining } = store.begin("k", claim_ttl, None).await.unwrap() else {
        panic!("held")
    };
    assert!(
        remaining > Duration::from_secs(25) && remaining <= claim_ttl,
        "{remaining:?}"
    );
    let wrong = sqs_worker::idempotency::ClaimToken::generate();
    for e in [
        store.renew("k", &wrong, claim_ttl).await.unwrap_err(),
        store
            .complete("k", &wrong, claim_ttl, None)
            .await
            .unwrap_err(),
        store.release("k", &wrong).await.unwrap_err(),
    ] {
        assert!(matches!(e, StoreError::ClaimLost { .. }), "{e}");
    }
    store.renew("k", &t, claim_ttl).await.unwrap();
    store
        .complete("k", &t, Duration::ZERO, Some(b"r"))
        .await
        .unwrap();
    assert!(matches!(
        store.release("k", &t).await,
        Err(StoreError::ClaimLost { .. })
    ));
    // Retention 0: past `expires_at` within about a second, then free again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(store.get("k").await.unwrap(), None);
    assert!(matches!(
        store.begin("k", claim_ttl, None).await.unwrap(),
        Begun::Acquired(_)
    ));
}

#[tokio::test]
async fn dynamodb_create_table_is_idempotent_and_enables_ttl() {
    let store = store().await.key_attribute("pk");
    store.create_table().await.unwrap();
    let ttl = store
        .client()
        .describe_time_to_live()
        .table_name(store.table())
        .send()
        .await
        .unwrap();
    let d = ttl.time_to_live_description().unwrap();
    assert_eq!(d.attribute_name(), Some("expires_at"));

    // A custom key attribute.
    let custom = DynamoDbStore::new(dynamodb().await, common::unique("idem-custom"))
        .key_attribute("idempotency_key");
    custom.create_table().await.unwrap();
    assert!(matches!(
        custom
            .begin("k", Duration::from_secs(5), None)
            .await
            .unwrap(),
        Begun::Acquired(_)
    ));
}

#[tokio::test]
async fn dynamodb_errors_are_retryable_and_name_the_table() {
    let store = DynamoDbStore::new(dynamodb().await, "no-such-table-for-idempotency");
    let h = Counting::new(Duration::ZERO);
    let idem = layer(&store).layer(h.clone());
    let e = idem.handle(msg("m1", "x")).await.unwrap_err();
    assert_eq!(e.action(), Action::Retry);
    assert!(
        e.to_string().contains("no-such-table-for-idempotency"),
        "{e}"
    );
    assert_eq!(h.runs(), 0);
}

#[derive(serde::Deserialize)]
struct Order {
    order_id: u64,
}

/// A charge handler that records every order it charges, slowly.
fn charging(
    charges: &Arc<std::sync::Mutex<Vec<u64>>>,
    work: Duration,
) -> impl Handler + Clone + use<> {
    let charges = charges.clone();
    sqs_worker::handler_fn(move |sqs_worker::Json(o): sqs_worker::Json<Order>| {
        let charges = charges.clone();
        async move {
            tokio::time::sleep(work).await;
            charges
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(o.order_id);
            Ok::<(), Error>(())
        }
    })
}

fn by_order(store: &DynamoDbStore) -> IdempotencyLayer {
    IdempotencyLayer::new(store.clone())
        .key_from_json(|o: &Order| Some(o.order_id))
        .validate_payload()
        .claim_ttl(Duration::from_secs(2))
}

/// Two pollers on one queue, each order sent twice (a producer's retry: new
/// message ids): every order is charged once, every message is deleted.
#[cfg(feature = "poller")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_two_workers_charge_each_order_once() {
    use sqs_worker::poller::Poller;
    use tokio::sync::oneshot;

    let store = store().await;
    let sqs = common::sqs().await;
    let url = common::queue(&sqs, "idem-poller").await;
    let charges = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = oneshot::channel::<()>();
        let handler = by_order(&store).layer(charging(&charges, Duration::from_millis(300)));
        let poller = Poller::builder(url.as_str(), handler)
            .client(sqs.clone())
            .wait_time(Duration::from_secs(1))
            .shutdown_signal(async move {
                let _ = rx.await;
            })
            .build()
            .unwrap();
        stops.push(tx);
        tasks.push(tokio::spawn(poller.run()));
    }
    for round in 0..2 {
        for order_id in 1..=5u64 {
            sqs.send_message()
                .queue_url(&url)
                .message_body(format!(r#"{{"order_id":{order_id},"note":"same"}}"#))
                .send()
                .await
                .unwrap_or_else(|e| panic!("send round {round}: {e:?}"));
        }
    }
    let start = std::time::Instant::now();
    loop {
        let depth = common::depth(&sqs, &url).await;
        if depth == (0, 0) && charges.lock().unwrap().len() >= 5 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "queue not drained: depth {depth:?}, charges {:?}",
            charges.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for tx in stops {
        let _ = tx.send(());
    }
    let mut succeeded = 0;
    for t in tasks {
        let summary = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        succeeded += summary.succeeded;
    }
    let mut charged = charges.lock().unwrap().clone();
    charged.sort_unstable();
    assert_eq!(charged, [1, 2, 3, 4, 5], "each order charged exactly once");
    assert_eq!(
        succeeded, 10,
        "every message acknowledged, duplicates included"
    );
}

/// Lambda: two concurrent invocations with the same record (two function
/// instances): one runs it, the other reports it in `batchItemFailures`; the
/// redelivery is acknowledged without running. An invocation that times out
/// mid-handler releases the key, so its redelivery runs.
#[cfg(feature = "lambda")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_concurrent_invocations_run_a_record_once() {
    use sqs_worker::lambda::LambdaService;
    use sqs_worker::lambda::testing::{
        assert_all_succeeded, assert_failed_ids, event, invoke, record,
    };

    let store = store().await;
    let charges = Arc::new(std::sync::Mutex::new(Vec::new()));
    let service = |work: Duration| {
        LambdaService::new(sqs_worker_core::runner::Engine::new(
            by_order(&store).layer(charging(&charges, work)),
        ))
    };
    let (a, b) = (
        service(Duration::from_millis(500)),
        service(Duration::from_millis(500)),
    );
    let first = tokio::spawn(async move {
        invoke(
            &a,
            event([record("m1", r#"{"order_id":1}"#)]),
            Duration::from_secs(30),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = invoke(
        &b,
        event([
            record("m1", r#"{"order_id":1}"#),
            record("m2", r#"{"order_id":2}"#),
        ]),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_failed_ids(&second, ["m1"]);
    assert_all_succeeded(&first.await.unwrap().unwrap());
    // The redelivery of m1, and a producer's duplicate of order 2.
    let again = invoke(
        &b,
        event([
            record("m1", r#"{"order_id":1}"#),
            record("m3", r#"{"order_id":2}"#),
        ]),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_all_succeeded(&again);
    let mut charged = charges.lock().unwrap().clone();
    charged.sort_unstable();
    assert_eq!(charged, [1, 2]);

    // A function timeout shorter than the handler: the record is reported
    // failed, its key released (not left in progress for the whole claim).
    let slow = service(Duration::from_secs(5));
    let timed_out = invoke(
        &slow,
        event([record("m4", r#"{"order_id":4}"#)]),
        Duration::from_millis(1500),
    )
    .await
    .unwrap();
    assert_failed_ids(&timed_out, ["m4"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fast = service(Duration::ZERO);
    let retried = invoke(
        &fast,
        event([record("m4", r#"{"order_id":4}"#)]),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_all_succeeded(&retried);
    assert_eq!(
        charges.lock().unwrap().iter().filter(|&&o| o == 4).count(),
        1
    );
}
