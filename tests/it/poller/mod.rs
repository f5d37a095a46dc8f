//! The long-poll runner against a real local SQS server (moto): every test
//! makes its own queues, keeps them shallow, and stops its poller itself.
//!
//! Most tests run one receive loop: moto's `ReceiveMessage` takes no lock, so
//! two concurrent receives can return the same message (real SQS does not),
//! and exact-once assertions would then fail for moto's sake. The outage test
//! runs two loops and tolerates such duplicates.

#![allow(clippy::unwrap_used)] // tests may unwrap

use crate::common;
use crate::common::proxy;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use sqs_worker::poller::Poller;
use sqs_worker::{Error, FixedDelay, Message};
use tokio::sync::Notify;

type Seen = Arc<Mutex<Vec<String>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_500_messages_and_deletes_each() {
    common::init_logs();
    let client = common::sqs().await;
    let url = common::queue(&client, "drain").await;
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let handler = move |m: Message| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(m.id().to_owned());
            Ok::<_, Error>(())
        }
    };
    // One receive loop: moto's ReceiveMessage takes no lock, so two concurrent
    // receives can return the same message, which real SQS does not do.
    let running = common::Running::start(
        Poller::builder(url.as_str(), handler)
            .client(client.clone())
            .receivers(1),
    );
    // Produce while consuming: the queue stays shallow.
    let mut sent = HashSet::new();
    for round in 0..50 {
        let bodies: Vec<String> = (0..10)
            .map(|i| format!("{{\"n\":{}}}", round * 10 + i))
            .collect();
        sent.extend(common::send(&client, &url, &bodies).await);
    }
    common::until(Duration::from_secs(60), "500 messages handled", || {
        seen.lock().unwrap().len() >= 500
    })
    .await;
    let summary = running.stop().await;
    let seen: Vec<String> = seen.lock().unwrap().clone();
    let distinct: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(distinct, sent, "every message handled");
    assert_eq!(seen.len(), 500, "none handled twice");
    assert_eq!(summary.succeeded, 500);
    assert_eq!(summary.deleted, 500);
    assert_eq!(summary.settlement_failures, 0);
    assert_eq!(common::depth(&client, &url).await, (0, 0), "queue empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_come_back_after_their_delay_then_succeed() {
    common::init_logs();
    let client = common::sqs().await;
    let url = common::queue(&client, "transient").await;
    let attempts: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
    let a = attempts.clone();
    let handler = move |m: Message| {
        let a = a.clone();
        async move {
            a.lock()
                .unwrap()
                .entry(m.id().to_owned())
                .or_default()
                .push(Instant::now());
            if m.receive_count() == 1 {
                return Err(Error::msg("downstream busy"));
            }
            Ok(())
        }
    };
    let delay = Duration::from_secs(2);
    let running = common::Running::start(
        Poller::builder(url.as_str(), handler)
            .client(client.clone())
            .receivers(1)
            .retry_policy(FixedDelay(delay)),
    );
    let bodies: Vec<String> = (0..5).map(|i| i.to_string()).collect();
    common::send(&client, &url, &bodies).await;
    common::until(Duration::from_secs(30), "5 retried messages", || {
        let a = attempts.lock().unwrap();
        a.len() == 5 && a.values().all(|v| v.len() >= 2)
    })
    .await;
    let summary = running.stop().await;
    for (id, times) in attempts.lock().unwrap().iter() {
        assert_eq!(times.len(), 2, "{id}: one failure, one success");
        let gap = times[1] - times[0];
        // SQS counts whole seconds; allow for its granularity.
        assert!(
            gap >= delay - Duration::from_millis(500),
            "{id} came back after {gap:?}"
        );
    }
    assert_eq!(
        (summary.failed, summary.retried, summary.succeeded),
        (5, 5, 5)
    );
    assert_eq!(common::depth(&client, &url).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_running_three_visibility_timeouts_is_never_delivered_twice() {
    common::init_logs();
    let client = common::sqs().await;
    let url = common::create_queue(
        &client,
        &common::unique("slow"),
        &[("VisibilityTimeout", "2")],
    )
    .await;
    let calls: Seen = Arc::default();
    let c = calls.clone();
    let handler = move |m: Message| {
        let c = c.clone();
        async move {
            c.lock().unwrap().push(m.id().to_owned());
            tokio::time::sleep(Duration::from_secs(6)).await;
            Ok::<_, Error>(())
        }
    };
    let running = common::Running::start_as_configured(
        Poller::builder(url.as_str(), handler)
            .client(client.clone())
            .receivers(1) // see drains_500_messages_and_deletes_each
            .wait_time(Duration::from_secs(1)),
    );
    let sent = common::send(&client, &url, &["a".into(), "b".into(), "c".into()]).await;
    let start = Instant::now();
    loop {
        if common::depth(&client, &url).await == (0, 0) && calls.lock().unwrap().len() >= 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "slow messages not done"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The loop kept polling meanwhile (free capacity): a lapse would show as a second delivery.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let summary = running.stop().await;
    let mut calls = calls.lock().unwrap().clone();
    calls.sort();
    let mut sent = sent;
    sent.sort();
    assert_eq!(calls, sent, "each delivered exactly once");
    assert!(summary.extensions >= 3, "heartbeat extended: {summary}");
    assert_eq!(summary.settlement_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_order_holds_in_every_group_despite_a_failure() {
    common::init_logs();
    let client = common::sqs().await;
    let name = format!("{}.fifo", common::unique("fifo"));
    let url = common::create_queue(
        &client,
        &name,
        &[("FifoQueue", "true"), ("ContentBasedDeduplication", "true")],
    )
    .await;
    let done: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let d = done.clone();
    let handler = move |m: Message| {
        let d = d.clone();
        async move {
            let (group, seq) = m.body().split_once(':').unwrap();
            let seq: u32 = seq.parse().unwrap();
            if group == "b" && seq == 3 && m.receive_count() == 1 {
                return Err(Error::msg("b-3 fails once"));
            }
            tokio::time::sleep(Duration::from_millis(fastrand_ms(seq))).await;
            d.lock().unwrap().push((group.to_owned(), seq));
            Ok(())
        }
    };
    let running = common::Running::start_as_configured(
        Poller::builder(url.as_str(), handler)
            .client(client.clone())
            // moto: concurrent receives can return the same message, and a
            // FIFO long poll does not wake up when messages arrive.
            .receivers(1)
            .wait_time(Duration::from_secs(1))
            .retry_policy(FixedDelay(Duration::from_secs(1))),
    );
    for seq in 0..8u32 {
        let entries = ["a", "b", "c"]
            .iter()
            .map(|g| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("{g}{seq}"))
                    .message_body(format!("{g}:{seq}"))
                    .message_group_id(*g)
                    .build()
                    .unwrap()
            })
            .collect();
        client
            .send_message_batch()
            .queue_url(&url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
    }
    common::until(Duration::from_secs(40), "24 FIFO messages", || {
        done.lock().unwrap().len() >= 24
    })
    .await;
    let summary = running.stop().await;
    let done = done.lock().unwrap().clone();
    for g in ["a", "b", "c"] {
        let order: Vec<u32> = done
            .iter()
            .filter(|(x, _)| x == g)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(
            order,
            (0..8).collect::<Vec<_>>(),
            "group {g} in order, each once"
        );
    }
    assert!(summary.failed >= 1);
    assert_eq!(common::depth(&client, &url).await, (0, 0));
}

/// A small, varying handler time so groups interleave.
fn fastrand_ms(seq: u32) -> u64 {
    u64::from((seq * 7) % 5) * 5
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_drain_loses_nothing_and_releases_at_once() {
    common::init_logs();
    let client = common::sqs().await;
    // A long visibility timeout: anything not released would stay hidden.
    let url = common::create_queue(
        &client,
        &common::unique("shutdown"),
        &[("VisibilityTimeout", "120")],
    )
    .await;
    let sent: HashSet<String> = common::send(
        &client,
        &url,
        &(0..60).map(|i| i.to_string()).collect::<Vec<_>>(),
    )
    .await
    .into_iter()
    .collect();
    let done: Seen = Arc::default();
    let enough = Arc::new(Notify::new());
    let (d, n) = (done.clone(), enough.clone());
    let handler = move |m: Message| {
        let (d, n) = (d.clone(), n.clone());
        async move {
            // Staggered: at any moment some handlers are midway.
            let i: u64 = m.body().parse().unwrap();
            tokio::time::sleep(Duration::from_millis(150 + (i * 53) % 600)).await;
            let mut d = d.lock().unwrap();
            d.push(m.id().to_owned());
            if d.len() == 15 {
                n.notify_one();
            }
            Ok::<_, Error>(())
        }
    };
    let running = common::Running::start(
        Poller::builder(url.as_str(), handler)
            .client(client.clone())
            .receivers(1)
            .concurrency(10)
            .grace_period(Duration::from_millis(100)),
    );
    tokio::time::timeout(Duration::from_secs(30), enough.notified())
        .await
        .unwrap();
    let summary = running.stop().await;
    let first: HashSet<String> = done.lock().unwrap().iter().cloned().collect();
    assert_eq!(summary.succeeded as usize, first.len());
    assert!(
        summary.released > 0,
        "some were stopped by the short grace period: {summary}"
    );
    assert_eq!(
        summary.received,
        summary.succeeded + summary.released,
        "every received message settled once: {summary}"
    );
    // Released ones are visible at once, not after the 120 s timeout.
    let (visible, hidden) = common::depth(&client, &url).await;
    assert_eq!(hidden, 0, "nothing stranded in flight");
    assert_eq!(visible as usize, 60 - first.len());

    // A second worker drains the rest: together, every message.
    done.lock().unwrap().clear();
    let second = common::Running::start(
        Poller::builder(url.as_str(), {
            let d = done.clone();
            move |m: Message| {
                let d = d.clone();
                async move {
                    d.lock().unwrap().push(m.id().to_owned());
                    Ok::<_, Error>(())
                }
            }
        })
        .client(client.clone()),
    );
    let rest = 60 - first.len();
    common::until(Duration::from_secs(30), "the rest drained", || {
        done.lock().unwrap().len() >= rest
    })
    .await;
    second.stop().await;
    let all: HashSet<String> = first
        .union(&done.lock().unwrap().iter().cloned().collect())
        .cloned()
        .collect();
    assert_eq!(all, sent);
    assert_eq!(common::depth(&client, &url).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_by_itself_from_a_server_outage() {
    common::init_logs();
    let direct = common::sqs().await;
    let url = common::queue(&direct, "outage").await;
    let proxy = proxy::Proxy::start(&common::server().endpoint).await;
    let via_proxy = aws_sdk_sqs::Client::new(&common::sdk_config_for(&proxy.endpoint).await);
    let done: Seen = Arc::default();
    let d = done.clone();
    let handler = move |m: Message| {
        let d = d.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            d.lock().unwrap().push(m.id().to_owned());
            Ok::<_, Error>(())
        }
    };
    let running = common::Running::start_as_configured(
        Poller::builder(url.as_str(), handler)
            .client(via_proxy)
            .concurrency(8)
            .receivers(2) // duplicates from moto's receive race are fine here
            .wait_time(Duration::from_secs(2)),
    );
    let mut sent = HashSet::new();
    sent.extend(
        common::send(
            &direct,
            &url,
            &(0..40).map(|i| i.to_string()).collect::<Vec<_>>(),
        )
        .await,
    );
    common::until(
        Duration::from_secs(30),
        "some handled before the outage",
        || done.lock().unwrap().len() >= 10,
    )
    .await;
    proxy.cut();
    sent.extend(
        common::send(
            &direct,
            &url,
            &(40..80).map(|i| i.to_string()).collect::<Vec<_>>(),
        )
        .await,
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.restore();
    sent.extend(
        common::send(
            &direct,
            &url,
            &(80..100).map(|i| i.to_string()).collect::<Vec<_>>(),
        )
        .await,
    );
    common::until(
        Duration::from_secs(60),
        "all handled after the outage",
        || {
            let d: HashSet<String> = done.lock().unwrap().iter().cloned().collect();
            d == sent
        },
    )
    .await;
    let start = Instant::now();
    while common::depth(&direct, &url).await != (0, 0) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "queue not emptied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let summary = running.stop().await;
    assert!(summary.sdk_errors > 0, "the outage was seen: {summary}");
}

// Start-up checks and the runner's options (body size, idle exit, batch
// engines, time limits, execution) are in `options`.
mod ahead;
mod options;
