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
