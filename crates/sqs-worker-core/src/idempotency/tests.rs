use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::batch::{BatchHandler, BatchResults};
use crate::engine::{Engine, EngineConfig, FailureKind, Processor};
use crate::error::Action;
use crate::handler::handler_fn;
use crate::json::Json;

const CLAIM_TTL: Duration = Duration::from_secs(30);

/// A handler that counts its runs, sleeps `work`, and fails when the body says so.
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
            "fail-permanently" => Err(Error::permanent("asked to fail for good")),
            "panic" => panic!("asked to panic"),
            _ => Ok(()),
        }
    }
}

fn layer(store: &MemoryStore) -> IdempotencyLayer {
    IdempotencyLayer::new(store.clone()).claim_ttl(CLAIM_TTL)
}

fn msg(id: &str, body: &str) -> Message {
    Message::builder(id, body).build()
}

fn err_kind<E: std::error::Error + 'static>(e: &Error) -> &E {
    e.downcast_ref::<E>()
        .unwrap_or_else(|| panic!("unexpected error: {e}"))
}

#[tokio::test(start_paused = true)]
async fn same_key_twice_in_sequence_runs_once() {
    let store = MemoryStore::new();
    let h = Counting::new(Duration::ZERO);
    let idem = layer(&store).layer(h.clone());
    idem.handle(msg("m1", "x")).await.unwrap();
    idem.handle(msg("m1", "x")).await.unwrap();
    assert_eq!(h.runs(), 1);
    // Another message id is another key.
    idem.handle(msg("m2", "x")).await.unwrap();
    assert_eq!(h.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_workers_run_once_and_the_other_is_retried_then_acknowledged() {
    let store = MemoryStore::new();
    let h = Counting::new(Duration::from_secs(5));
    let worker_a = layer(&store).layer(h.clone());
    let worker_b = layer(&store).layer(h.clone());
    let a = tokio::spawn(async move { worker_a.handle(msg("m1", "x")).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let e = worker_b.handle(msg("m1", "x")).await.unwrap_err();
    match e.action() {
        // First delivery: retried after a second, not the whole claim.
        Action::RetryAfter(d) => assert_eq!(d, Duration::from_secs(1)),
        other => panic!("expected retry-after, got {other:?}"),
    }
    assert!(matches!(
        err_kind::<IdempotencyError>(&e),
        IdempotencyError::InProgress { .. }
    ));
    a.await.unwrap().unwrap();
    worker_b.handle(msg("m1", "x")).await.unwrap();
    assert_eq!(h.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_crashed_holders_lease_expires_and_the_next_delivery_runs() {
    let store = MemoryStore::new();
    let h = Counting::new(Duration::ZERO);
    let idem = layer(&store).layer(h.clone());
    // The "crashed" worker took the claim and never came back.
    let key = idem.key_of(&msg("m1", "x")).unwrap().unwrap();
    let Begun::Acquired(_) = store.begin(&key, CLAIM_TTL, None).await.unwrap() else {
        panic!()
    };
    let e = idem.handle(msg("m1", "x")).await.unwrap_err();
    assert!(matches!(e.action(), Action::RetryAfter(_)));
    assert_eq!(h.runs(), 0);
    tokio::time::advance(CLAIM_TTL + Duration::from_millis(1)).await;
    idem.handle(msg("m1", "x")).await.unwrap();
    assert_eq!(h.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_lease_is_renewed_while_a_long_handler_runs() {
    let store = MemoryStore::new();
    let h = Counting::new(CLAIM_TTL * 4);
    let idem = layer(&store).layer(h.clone());
    let other = layer(&store).layer(h.clone());
    let run = tokio::spawn(async move { idem.handle(msg("m1", "x")).await });
    tokio::time::sleep(CLAIM_TTL * 3).await;
    let e = other.handle(msg("m1", "x")).await.unwrap_err();
    assert!(
        matches!(e.action(), Action::RetryAfter(_)),
        "still held after 3 claims: {e}"
    );
    run.await.unwrap().unwrap();
    other.handle(msg("m1", "x")).await.unwrap();
    assert_eq!(h.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn any_failure_releases_the_key_and_the_retry_runs() {
    let store = MemoryStore::new();
    let h = Counting::new(Duration::ZERO);
    let idem = layer(&store).layer(h.clone());
    for body in ["fail", "fail-permanently"] {
        let e = idem.handle(msg(body, body)).await.unwrap_err();
        assert!(
            e.downcast_ref::<IdempotencyError>().is_none(),
            "the handler's own error: {e}"
        );
        assert!(store.is_empty(), "released after {body}");
    }
    // Retries run (and succeed this time with another body).
    idem.handle(msg("fail", "ok")).await.unwrap();
    idem.handle(msg("fail", "ok")).await.unwrap();
    assert_eq!(h.runs(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_panic_releases_the_key_and_still_panics() {
    let store = MemoryStore::new();
    let h = Counting::new(Duration::ZERO);
    let engine = Engine::new(layer(&store).layer(h.clone()));
    let report = engine.run(vec![msg("m1", "panic")], None).await;
    let (_, f) = report.failed().next().unwrap();
    assert_eq!(f.kind, FailureKind::Panicked);
    assert!(store.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_handler_stopped_at_its_time_limit_releases_the_key() {
    let store = MemoryStore::new();
    let h = Counting::new(Duration::from_secs(10));
    let cfg = EngineConfig::default().handler_timeout(Some(Duration::from_secs(1)));
    let engine = Engine::with_config(layer(&store).layer(h.clone()), cfg);
    let report = engine.run(vec![msg("m1", "x")], None).await;
    assert_eq!(
        report.failed().next().unwrap().1.kind,
        FailureKind::TimedOut
    );
    tokio::time::sleep(Duration::from_millis(1)).await; // the background release
    assert!(store.is_empty());
}

#[tokio::test(start_paused = true)]
async fn payload_mismatch_is_permanent_and_checked_before_the_completion_is_trusted() {
    let store = MemoryStore::new();
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
        .handle(msg("c", r#"{"order_id":1,"amount":9}"#))
        .await
        .unwrap_err();
    assert!(e.is_permanent());
    assert!(matches!(
        err_kind::<IdempotencyError>(&e),
        IdempotencyError::PayloadMismatch { .. }
    ));
    assert!(e.to_string().contains("different payload"), "{e}");
    assert_eq!(h.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_chosen_part_of_the_payload_is_validated() {
    #[derive(serde::Deserialize)]
    struct Order {
        order_id: u64,
        amount: u64,
    }
    let store = MemoryStore::new();
    let h = Counting::new(Duration::ZERO);
    let idem = layer(&store)
        .key_from_json(|o: &Order| Some(o.order_id))
        .validate_json(|o: &Order| o.amount)
        .layer(h.clone());
    idem.handle(msg("a", r#"{"order_id":1,"amount":5,"sent":"t1"}"#))
        .await
        .unwrap();
    idem.handle(msg("b", r#"{"order_id":1,"amount":5,"sent":"t2"}"#))
        .await
        .unwrap();
    let e = idem
        .handle(msg("c", r#"{"order_id":1,"amount":6,"sent":"t2"}"#))
        .await
        .unwrap_err();
    assert!(e.is_permanent());
    assert_eq!(h.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn dedup_id_keys_key_fifo_messages_by_their_deduplication_id() {
    let store = MemoryStore::new();
    let h = Counting::new(Duration::ZERO);
    let idem = layer(&store)
        .key(KeyFn::deduplication_id())
        .layer(h.clone());
    let fifo = |id: &str, dedup: &str| {
        Message::builder(id, "x")
            .group_id("g")
            .deduplication_id(dedup)
            .build()
    };
    idem.handle(fifo("m1", "d1")).await.unwrap();
    idem.handle(fifo("m2", "d1")).await.unwrap();
    idem.handle(fifo("m3", "d2")).await.unwrap();
    assert_eq!(h.runs(), 2);
    assert_eq!(
        idem.key_of(&fifo("m9", "d7")).unwrap(),
        idem.key_of(&fifo("m8", "d7")).unwrap(),
        "one deduplication id in one group is one key"
    );
}

#[tokio::test(start_paused = true)]
async fn a_key_from_the_typed_payload_and_what_happens_without_one() {
    #[derive(serde::Deserialize)]
    struct Order {
        order_id: Option<u64>,
    }
    async fn charge(Json(o): Json<Order>, _m: Message) -> Result<(), Error> {
        let _ = o.order_id;
        Ok(())
    }
    let store = MemoryStore::new();
    let base = layer(&store)
        .key_from_json(|o: &Order| o.order_id)
        .namespace("charge");
    let idem = base.clone().layer(handler_fn(charge));
    idem.handle(msg("a", r#"{"order_id":7}"#)).await.unwrap();
    let key = idem
        .key_of(&msg("z", r#"{"order_id":7}"#))
        .unwrap()
        .unwrap();
    assert!(store.get(&key).await.unwrap().is_some());

    let e = idem.handle(msg("b", r#"{}"#)).await.unwrap_err();
    assert!(e.is_permanent());
    assert!(matches!(
        err_kind::<IdempotencyError>(&e),
        IdempotencyError::MissingKey { .. }
    ));
    let e = idem.handle(msg("c", "not json")).await.unwrap_err();
    assert!(
        e.is_permanent(),
        "a key function over a bad body fails permanently"
    );

    let h = Counting::new(Duration::ZERO);
    let lenient = base.on_missing_key(MissingKey::RunWithout).layer(h.clone());
    lenient.handle(msg("b", r#"{}"#)).await.unwrap();
    lenient.handle(msg("b", r#"{}"#)).await.unwrap();
    assert_eq!(h.runs(), 2, "no key, no idempotency");
}

#[tokio::test(start_paused = true)]
async fn a_handler_can_store_a_small_result() {
    let store = MemoryStore::new();
    let idem = layer(&store).layer(handler_fn(|m: Message| async move {
        set_result(format!("receipt-for-{}", m.id())).map_err(Error::permanent)?;
        Ok::<(), Error>(())
    }));
    let m = msg("m1", "x");
    assert_eq!(idem.completion(&m).await.unwrap(), None);
    idem.handle(m.clone()).await.unwrap();
    let done = idem.completion(&m).await.unwrap().unwrap();
    assert_eq!(done.result.as_deref(), Some(&b"receipt-for-m1"[..]));
    assert!(matches!(
        set_result("x"),
        Err(SetResultError::NotInIdempotentHandler)
    ));
    let big = vec![0u8; MAX_RESULT_SIZE + 1];
    assert!(matches!(set_result(big), Err(SetResultError::TooLarge(_))));
}

#[tokio::test(start_paused = true)]
async fn completion_expires_after_retention() {
    let store = MemoryStore::new();
    let h = Counting::new(Duration::ZERO);
    let idem = layer(&store)
        .retention(Duration::from_secs(60))
        .layer(h.clone());
    idem.handle(msg("m1", "x")).await.unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    idem.handle(msg("m1", "x")).await.unwrap();
    assert_eq!(h.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn through_the_engine_duplicates_in_one_batch_run_once() {
    let store = MemoryStore::new();
    let h = Counting::new(Duration::from_millis(5));
    let engine = Engine::new(
        layer(&store)
            .key_fn(|m| Some(m.body().to_owned()))
            .layer(h.clone()),
    );
    let batch = vec![msg("a", "k1"), msg("b", "k1"), msg("c", "k2")];
    let report = engine.run(batch, None).await;
    assert_eq!(report.failed_ids(), ["b"], "b's key was in progress");
    assert_eq!(h.runs(), 2);
    let report = engine.run(vec![msg("b", "k1")], None).await;
    assert!(report.all_succeeded());
    assert_eq!(h.runs(), 2);
}

#[derive(Clone)]
struct CountingBatch(Arc<AtomicUsize>);

impl BatchHandler for CountingBatch {
    async fn handle_batch(&self, batch: Vec<Message>) -> BatchResults {
        let mut r = BatchResults::new();
        for m in &batch {
            self.0.fetch_add(1, Ordering::SeqCst);
            match m.body() {
                "fail" => r.fail(m, Error::msg("no")),
                "forget" => &mut r,
                _ => r.succeed(m),
            };
        }
        r
    }
}

#[tokio::test(start_paused = true)]
async fn batch_handlers_are_wrapped_per_message() {
    use crate::batch::BatchEngine;
    let store = MemoryStore::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let idem = layer(&store).layer(CountingBatch(runs.clone()));
    let engine = BatchEngine::new(idem);
    let report = engine
        .run(
            vec![msg("a", "ok"), msg("b", "fail"), msg("c", "forget")],
            None,
        )
        .await;
    let mut failed = report.failed_ids();
    failed.sort();
    assert_eq!(failed, ["b", "c"]);
    assert_eq!(store.len(), 1, "only a is recorded; b and c were released");
    assert_eq!(runs.load(Ordering::SeqCst), 3);

    let report = engine
        .run(vec![msg("a", "ok"), msg("b", "ok"), msg("c", "ok")], None)
        .await;
    assert!(report.all_succeeded());
    assert_eq!(runs.load(Ordering::SeqCst), 5, "a was not run again");
}

#[test]
fn idempotent_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Idempotent<Counting>>();
    assert_send_sync::<IdempotencyLayer>();
}

#[test]
fn in_progress_retry_delay_grows_per_delivery_and_stays_within_the_lease() {
    let claim_ttl = Duration::from_secs(60);
    let d = |n| super::in_progress_delay(n, claim_ttl);
    assert_eq!(
        [d(1), d(2), d(3), d(4), d(5)],
        [1, 4, 16, 60, 60].map(Duration::from_secs)
    );
    assert_eq!(
        super::in_progress_delay(1, Duration::ZERO),
        Duration::from_secs(1)
    );
    assert_eq!(super::in_progress_delay(u32::MAX, claim_ttl), claim_ttl);
}
