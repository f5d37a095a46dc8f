//! FIFO queues and fair queues (issue 15), in both runners.
//!
//! Since July 2025 a *standard* queue accepts `MessageGroupId` as a tenant
//! label ("fair queues"): messages of one group may run in parallel and in
//! any order, and one failure holds back nothing. On a FIFO queue the group
//! orders its messages and a failure holds back the rest of the group.
//! The local server (moto 5.2) accepts `MessageGroupId` on standard queues.

#![allow(clippy::unwrap_used)] // tests may unwrap

use crate::common::{self, Running, until};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use sqs_worker::poller::{Poller, PollerBuilder};
use sqs_worker::{EngineConfig, Error, FixedDelay, Message};
use sqs_worker_core::runner::{Engine, Processor};
use sqs_worker_lambda::LambdaService;
use sqs_worker_lambda::testing::{self, event, fifo_record, record};

/// Counts handlers running at once and records every run, in order.
#[derive(Clone, Default)]
struct Probe {
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    runs: Arc<Mutex<Vec<(String, u32)>>>,
}

impl Probe {
    /// A handler that takes 100 ms and fails `t0` on its first receive.
    fn handler(&self) -> impl Fn(Message) -> Fut + Clone + Send + Sync + 'static {
        let p = self.clone();
        move |m: Message| {
            let p = p.clone();
            Box::pin(async move {
                let now = p.running.fetch_add(1, Ordering::SeqCst) + 1;
                p.peak.fetch_max(now, Ordering::SeqCst);
                p.runs
                    .lock()
                    .unwrap()
                    .push((m.body().to_owned(), m.receive_count()));
                tokio::time::sleep(Duration::from_millis(100)).await;
                p.running.fetch_sub(1, Ordering::SeqCst);
                if m.body() == "t0" && m.receive_count() == 1 {
                    return Err(Error::msg("t0 fails on its first receive"));
                }
                Ok(())
            })
        }
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    fn runs(&self) -> Vec<(String, u32)> {
        self.runs.lock().unwrap().clone()
    }
}

/// The boxed future of [`Probe::handler`].
type Fut = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send>>;

fn bodies() -> Vec<String> {
    (0..10).map(|i| format!("t{i}")).collect()
}

// ---- Lambda -------------------------------------------------------------

fn service(p: &Probe) -> LambdaService<Engine<impl sqs_worker::Handler>> {
    LambdaService::new(Engine::with_config(
        p.handler(),
        EngineConfig::default().concurrency(10),
    ))
}

#[tokio::test]
async fn lambda_fair_queue_group_runs_in_parallel_and_a_failure_blocks_nothing() {
    let p = Probe::default();
    // Standard-queue records (no `.fifo` ARN, no SequenceNumber) with one tenant.
    let ev = event(
        bodies()
            .into_iter()
            .map(|b| record(b.clone(), b).group_id("t1")),
    );
    let resp = testing::invoke(&service(&p), ev, Duration::from_secs(30))
        .await
        .unwrap();
    testing::assert_failed_ids(&resp, ["t0"]);
    assert_eq!(p.runs().len(), 10, "every message ran once");
    assert_eq!(p.peak(), 10, "one tenant's messages ran in parallel");
}

#[tokio::test]
async fn lambda_fifo_group_keeps_order_and_blocks_after_a_failure() {
    let p = Probe::default();
    let ev = event(
        bodies()
            .into_iter()
            .map(|b| fifo_record(b.clone(), "t1", b)),
    );
    let resp = testing::invoke(&service(&p), ev, Duration::from_secs(30))
        .await
        .unwrap();
    let mut expected = bodies();
    let failed: Vec<&str> = testing::failed_ids(&resp);
    expected.sort();
    let mut got: Vec<String> = failed.iter().map(|s| (*s).to_owned()).collect();
    got.sort();
    assert_eq!(got, expected, "t0 failed, the rest of its group blocked");
    assert_eq!(p.runs(), [("t0".to_owned(), 1)], "nothing after t0 ran");
    assert_eq!(p.peak(), 1);
}

#[tokio::test]
async fn lambda_fair_queue_record_without_body_holds_back_no_tenant() {
    let p = Probe::default();
    let mut no_body = record("nb", "").group_id("t1").build();
    no_body.body = None;
    let ev = event(std::iter::once(no_body).chain((1..4).map(|i| {
        record(format!("t{i}"), format!("t{i}"))
            .group_id("t1")
            .build()
    })));
    let resp = testing::invoke(&service(&p), ev, Duration::from_secs(30))
        .await
        .unwrap();
    testing::assert_failed_ids(&resp, ["nb"]);
    assert_eq!(p.runs().len(), 3, "the tenant's other records ran");

    // The same on a FIFO queue holds back the rest of the group.
    let p = Probe::default();
    let mut no_body = fifo_record("nb", "g", "").build();
    no_body.body = None;
    let ev = event(
        std::iter::once(no_body)
            .chain((1..4).map(|i| fifo_record(format!("t{i}"), "g", format!("t{i}")).build())),
    );
    let resp = testing::invoke(&service(&p), ev, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(testing::failed_ids(&resp).len(), 4);
    assert!(p.runs().is_empty());
}

// ---- Poller -------------------------------------------------------------

/// Sends `t0..t9` of group `t1` in one batch (dedup ids for FIFO queues).
async fn send_group(client: &aws_sdk_sqs::Client, url: &str) {
    let entries = bodies()
        .into_iter()
        .map(|b| {
            SendMessageBatchRequestEntry::builder()
                .id(b.clone())
                .message_body(b.clone())
                .message_group_id("t1")
                .set_message_deduplication_id(url.ends_with(".fifo").then(|| b.clone()))
                .build()
                .unwrap()
        })
        .collect();
    let out = client
        .send_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .unwrap();
    assert!(out.failed().is_empty(), "{:?}", out.failed());
}

fn poller(url: &str, client: &aws_sdk_sqs::Client, p: &Probe) -> PollerBuilder<impl Processor> {
    Poller::builder(url, p.handler())
        .client(client.clone())
        // moto: concurrent receives can return the same message.
        .receivers(1)
        .concurrency(10)
        .wait_time(Duration::from_secs(1))
        .retry_policy(FixedDelay(Duration::from_secs(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_fair_queue_group_runs_in_parallel_and_a_failure_blocks_nothing() {
    let client = common::sqs().await;
    let url = common::queue(&client, "fair").await;
    send_group(&client, &url).await;
    let p = Probe::default();
    let running = Running::start(poller(&url, &client, &p));
    until(Duration::from_secs(30), "11 runs", || p.runs().len() >= 11).await;
    let summary = running.stop().await;
    let runs = p.runs();
    for b in bodies().iter().skip(1) {
        let n = runs.iter().filter(|(x, _)| x == b).count();
        assert_eq!(
            n, 1,
            "{b} ran once, not held back by t0's failure: {runs:?}"
        );
    }
    assert_eq!(runs.iter().filter(|(x, _)| x == "t0").count(), 2);
    // moto returns all ten visible messages to one receive: they overlap.
    assert!(
        p.peak() >= 5,
        "a tenant's messages ran in parallel: peak {}",
        p.peak()
    );
    assert_eq!(summary.succeeded, 10);
    assert_eq!(summary.deleted, 10);
    assert_eq!(common::depth(&client, &url).await, (0, 0), "queue empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_fifo_group_keeps_order_and_blocks_after_a_failure() {
    let client = common::sqs().await;
    let name = format!("{}.fifo", common::unique("fifo-order"));
    let url = common::create_queue(&client, &name, &[("FifoQueue", "true")]).await;
    send_group(&client, &url).await;
    let p = Probe::default();
    let running = Running::start(poller(&url, &client, &p));
    until(Duration::from_secs(40), "11 runs", || p.runs().len() >= 11).await;
    let summary = running.stop().await;
    let order: Vec<String> = p.runs().into_iter().map(|(b, _)| b).collect();
    let mut expected = vec!["t0".to_owned()];
    expected.extend(bodies());
    assert_eq!(
        order, expected,
        "t0 fails, is retried, then the group in order"
    );
    assert_eq!(p.peak(), 1, "one message of the group at a time");
    assert_eq!(summary.deleted, 10);
}

// ---- Idempotency stores -------------------------------------------------

/// The one store contract (`sqs_worker::idempotency::conformance`), which
/// core's tests run against `MemoryStore`, here against DynamoDB (moto).
#[tokio::test]
async fn the_dynamodb_store_keeps_the_store_contract() {
    let client = aws_sdk_dynamodb::Client::new(&common::sdk_config().await);
    let store = sqs_worker_dynamodb::DynamoDbStore::new(client, common::unique("idem-conf"));
    store.create_table().await.unwrap();
    sqs_worker::idempotency::conformance::check(&store, "dynamodb").await;
}

// ---- FIFO followers and the maximum processing time (issue 15 §3, §4) ----

/// Sends `bodies` to a FIFO queue as one group, in order.
async fn send_fifo(client: &aws_sdk_sqs::Client, url: &str, group: &str, bodies: &[&str]) {
    for b in bodies {
        client
            .send_message()
            .queue_url(url)
            .message_body(*b)
            .message_group_id(group)
            .message_deduplication_id(*b)
            .send()
            .await
            .unwrap();
    }
}

/// Every message on `url` (received once each, with their attributes).
async fn drain_bodies(client: &aws_sdk_sqs::Client, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let mut out = Vec::new();
    loop {
        let got = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        let msgs = got.messages.unwrap_or_default();
        if msgs.is_empty() {
            return out;
        }
        for m in &msgs {
            client
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        out.extend(msgs);
    }
}

/// A poison head of a FIFO group is retried in the process while its group
/// stays leased: the followers are not received again, so their receive
/// counts do not climb with the head's, and only the head reaches the
/// dead-letter queue (the redrive policy's, moved there by the poller after
/// `maxReceiveCount` attempts). Failed on the old code: the DLQ held
/// `poison, ok1, ok2` and neither follower ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_fifo_poison_head_does_not_send_its_followers_to_the_dlq() {
    let client = common::sqs().await;
    let base = common::unique("fifo-poison");
    let dlq = common::create_queue(
        &client,
        &format!("{base}-dlq.fifo"),
        &[("FifoQueue", "true")],
    )
    .await;
    let dlq_arn = common::queue_arn(&client, &dlq).await;
    let redrive = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"3"}}"#);
    let url = common::create_queue(
        &client,
        &format!("{base}.fifo"),
        &[("FifoQueue", "true"), ("RedrivePolicy", redrive.as_str())],
    )
    .await;
    send_fifo(&client, &url, "g", &["poison", "ok1", "ok2"]).await;

    let runs: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let handler = {
        let runs = runs.clone();
        move |m: Message| {
            let runs = runs.clone();
            async move {
                runs.lock()
                    .unwrap()
                    .push((m.body().to_owned(), m.receive_count()));
                if m.body() == "poison" {
                    return Err(Error::msg("poison always fails"));
                }
                Ok(())
            }
        }
    };
    let running = Running::start(
        Poller::builder(url.as_str(), handler)
            .client(client.clone())
            .receivers(1)
            .concurrency(10)
            // Three attempts spread over about 2 s.
            .retry_window(Duration::from_secs(2)),
    );
    common::until_async(
        Duration::from_secs(40),
        "the source queue empty",
        async || common::depth(&client, &url).await == (0, 0),
    )
    .await;
    let summary = running.stop().await;

    let dead = drain_bodies(&client, &dlq).await;
    let dead_bodies: Vec<&str> = dead.iter().filter_map(|m| m.body()).collect();
    assert_eq!(
        dead_bodies,
        ["poison"],
        "only the poison head is dead-lettered"
    );
    let attrs = dead[0].message_attributes().unwrap();
    assert_eq!(
        attrs["SqsWorker.SourceQueueUrl"].string_value(),
        Some(url.as_str()),
        "the shared dead-letter schema"
    );
    let runs = runs.lock().unwrap().clone();
    let order: Vec<&str> = runs.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(
        order,
        ["poison", "poison", "poison", "ok1", "ok2"],
        "the head gets maxReceiveCount attempts, then the followers run in order"
    );
    let counts: Vec<u32> = runs.iter().map(|(_, n)| *n).collect();
    assert_eq!(counts, [1, 2, 3, 1, 1], "followers were received once");
    assert_eq!(summary.deleted, 3, "ok1, ok2, and poison from the source");
    assert_eq!(summary.dead_lettered, 1);
}

/// One run of a handler: body, start, end.
type Span = (String, std::time::Instant, std::time::Instant);

/// A FIFO group longer than the maximum processing time in one receive: the
/// messages waiting behind the others keep their visibility until they run
/// (the limit counts from each handler's start), so a second consumer never
/// gets the group while the first still runs it. Failed on the old code
/// (visibility ended at receipt + max processing time: the second poller ran
/// the last messages again, overlapping the first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_fifo_followers_keep_visibility_past_the_max_processing_time() {
    let client = common::sqs().await;
    let name = format!("{}.fifo", common::unique("fifo-maxproc"));
    let url = common::create_queue(
        &client,
        &name,
        &[("FifoQueue", "true"), ("VisibilityTimeout", "2")],
    )
    .await;
    send_fifo(&client, &url, "g", &["m1", "m2", "m3", "m4"]).await;

    let runs: Arc<Mutex<Vec<Span>>> = Arc::default();
    let handler = {
        let runs = runs.clone();
        move |m: Message| {
            let runs = runs.clone();
            async move {
                let start = std::time::Instant::now();
                tokio::time::sleep(Duration::from_millis(1500)).await;
                runs.lock()
                    .unwrap()
                    .push((m.body().to_owned(), start, std::time::Instant::now()));
                Ok::<(), Error>(())
            }
        }
    };
    let poller = |h| {
        Poller::builder(url.as_str(), h)
            .client(client.clone())
            .receivers(1)
            .concurrency(10)
            .max_processing_time(Duration::from_secs(3))
    };
    let first = Running::start(poller(handler.clone()));
    let second = Running::start(poller(handler));
    common::until_async(Duration::from_secs(40), "the queue empty", async || {
        runs.lock().unwrap().len() >= 4 && common::depth(&client, &url).await == (0, 0)
    })
    .await;
    let (a, b) = (first.stop().await, second.stop().await);

    let mut runs = runs.lock().unwrap().clone();
    runs.sort_by_key(|r| r.1);
    let order: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        order,
        ["m1", "m2", "m3", "m4"],
        "each ran exactly once, in order"
    );
    for w in runs.windows(2) {
        assert!(
            w[1].1 >= w[0].2,
            "{} started before {} ended: two consumers in one group",
            w[1].0,
            w[0].0
        );
    }
    assert_eq!(a.deleted + b.deleted, 4);
}

/// Shutdown lets a held FIFO group go at once, as settlement would have:
/// the failed head after its retry delay, the rest of the group visible
/// again at once (not after the grace period, not at visibility 0 for the
/// head).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_fifo_held_group_is_released_at_shutdown() {
    let client = common::sqs().await;
    let name = format!("{}.fifo", common::unique("fifo-held"));
    let url = common::create_queue(&client, &name, &[("FifoQueue", "true")]).await;
    send_fifo(&client, &url, "g", &["poison", "ok1", "ok2"]).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let runs = runs.clone();
        move |m: Message| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                match m.body() {
                    "poison" => Err(Error::msg("poison always fails")),
                    _ => Ok(()),
                }
            }
        }
    };
    let running = Running::start(
        Poller::builder(url.as_str(), handler)
            .client(client.clone())
            .receivers(1)
            .retry_policy(FixedDelay(Duration::from_secs(60))),
    );
    until(Duration::from_secs(30), "the head's first run", || {
        runs.load(Ordering::SeqCst) >= 1
    })
    .await;
    // Held: nothing of the group is visible while the head waits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        common::depth(&client, &url).await,
        (0, 3),
        "the group is held"
    );
    let summary = running.stop().await;
    assert_eq!(
        common::depth(&client, &url).await,
        (2, 1),
        "the followers are visible again, the head keeps its retry delay"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the followers did not run");
    assert_eq!(summary.released, 2);
    assert_eq!(summary.retried, 1);
}
