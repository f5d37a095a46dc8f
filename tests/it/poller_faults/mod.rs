//! The poller under the faults real fleets meet (issue 14): the in-flight
//! limit, credentials failing mid-run, shutdown during a long poll, throttled
//! deletes, a lost FIFO receive, short polls, the shutdown release, the
//! heartbeat's cadence. Where the local server (moto) does not model SQS, an
//! SQS-aware proxy (`common/sqs_proxy.rs`) imitates SQS's documented
//! behaviour; each test says which. Each prints a `FIGURES` line:
//! `cargo test --all-features --test it poller_faults:: -- --nocapture`.

#![allow(clippy::unwrap_used)] // tests may unwrap

use crate::common;
use crate::common::sqs_proxy;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_credential_types::provider::{ProvideCredentials, error::CredentialsError, future};
use aws_sdk_sqs::config::{Credentials, IdentityCache, Region};
use sqs_proxy::{SqsProxy, Verdict};
use sqs_worker::poller::Poller;
use sqs_worker::{Error, Message};

/// Handler runs by message id.
type Runs = Arc<Mutex<HashMap<String, u32>>>;

/// Counts each message's runs, then waits `pause`.
struct Counting {
    runs: Runs,
    pause: Duration,
}

impl sqs_worker::Handler for Counting {
    async fn handle(&self, m: Message) -> Result<(), Error> {
        *self
            .runs
            .lock()
            .unwrap()
            .entry(m.id().to_owned())
            .or_default() += 1;
        tokio::time::sleep(self.pause).await;
        Ok(())
    }
}

fn counting(runs: &Runs, pause: Duration) -> Counting {
    Counting {
        runs: runs.clone(),
        pause,
    }
}

fn handled(runs: &Runs) -> usize {
    runs.lock().unwrap().len()
}

fn duplicates(runs: &Runs) -> usize {
    runs.lock().unwrap().values().filter(|n| **n > 1).count()
}

async fn drained(client: &aws_sdk_sqs::Client, url: &str, limit: Duration) {
    let end = Instant::now() + limit;
    loop {
        if common::depth(client, url).await == (0, 0) {
            return;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for the queue to drain"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn send(client: &aws_sdk_sqs::Client, url: &str, n: usize, group: Option<&str>) {
    for i in 0..n {
        let mut req = client
            .send_message()
            .queue_url(url)
            .message_body(format!("m{i}"));
        if let Some(g) = group {
            req = req.message_group_id(g);
        }
        req.send().await.unwrap();
    }
}

async fn proxied(endpoint: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&common::sdk_config_for(endpoint).await)
}

/// SQS answers `ReceiveMessage` with HTTP 403 `OverLimit` while the queue
/// holds its maximum of in-flight messages (SQS developer guide, "Amazon SQS
/// message quotas"; API reference, `ReceiveMessage` errors). The proxy
/// answers the first three receives so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_receives_back_off_and_the_run_drains_the_queue() {
    let plain = common::sqs().await;
    let url = common::queue(&plain, "overlimit").await;
    let messages = 20;
    send(&plain, &url, messages, None).await;
    let refused = Arc::new(AtomicU64::new(0));
    let r = refused.clone();
    let proxy = SqsProxy::start(
        &common::server().endpoint,
        move |req| {
            if req.action == "ReceiveMessage" && r.fetch_add(1, SeqCst) < 3 {
                Verdict::Error {
                    status: "403 Forbidden",
                    code: "OverLimit",
                }
            } else {
                Verdict::Forward
            }
        },
        |_, _, _| {},
    )
    .await;
    let runs = Runs::default();
    let running = common::Running::start_as_configured(
        Poller::builder(url.as_str(), counting(&runs, Duration::ZERO))
            .client(proxied(&proxy.endpoint).await)
            .receivers(1)
            .wait_time(Duration::from_secs(1)),
    );
    common::until(Duration::from_secs(60), "every message handled", || {
        handled(&runs) == messages
    })
    .await;
    drained(&plain, &url, Duration::from_secs(30)).await;
    let summary = running.stop().await;
    println!(
        "FIGURES in-flight limit: messages {messages}, faults 3 (HTTP 403 OverLimit), lost 0, \
         duplicates {}, stuck invisible after the run 0",
        duplicates(&runs)
    );
    assert!(
        refused.load(SeqCst) > 3,
        "OverLimit was answered, then receives went on"
    );
    assert!(summary.sdk_errors >= 3, "{summary}");
    assert_eq!(duplicates(&runs), 0);
}

/// Credentials that fail to refresh for a few seconds mid-run (an ECS task
/// role's endpoint hiccup, an expired token): a provider that errs while told to.
#[derive(Debug, Clone)]
struct Flaky(Arc<AtomicBool>);

impl ProvideCredentials for Flaky {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(if self.0.load(SeqCst) {
            Err(CredentialsError::provider_error(
                "credentials refresh failed (injected)",
            ))
        } else {
            Ok(Credentials::new("testing", "testing", None, None, "flaky"))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_failing_mid_drain_are_waited_out_and_nothing_is_lost() {
    let plain = common::sqs().await;
    let url = common::create_queue(
        &plain,
        &common::unique("creds"),
        &[("VisibilityTimeout", "60")],
    )
    .await;
    let messages = 200;
    send(&plain, &url, messages, None).await;
    let failing = Arc::new(AtomicBool::new(false));
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&common::server().endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Flaky(failing.clone()))
        // Ask the provider on every request, so its failure shows at once.
        .identity_cache(IdentityCache::no_cache())
        .load()
        .await;
    let runs = Runs::default();
    let running = common::Running::start_as_configured(
        Poller::builder(url.as_str(), counting(&runs, Duration::from_millis(20)))
            .client(aws_sdk_sqs::Client::new(&conf))
            .concurrency(8)
            .receivers(1)
            .wait_time(Duration::from_secs(1)),
    );
    common::until(Duration::from_secs(60), "some messages handled", || {
        handled(&runs) >= 30
    })
    .await;
    failing.store(true, SeqCst);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = handled(&runs);
    failing.store(false, SeqCst);
    common::until(Duration::from_secs(120), "every message handled", || {
        handled(&runs) == messages
    })
    .await;
    drained(&plain, &url, Duration::from_secs(60)).await;
    let summary = running.stop().await;
    println!(
        "FIGURES credential expiry mid-run: messages {messages}, faults 1 (credentials failing \
         4 s; {during} handled by its end), lost 0, duplicates {}, stuck invisible after the run 0",
        duplicates(&runs)
    );
    assert!(summary.sdk_errors > 0, "the failure was seen: {summary}");
    assert_eq!(
        summary.settlement_failures, 0,
        "no delete failed for good: {summary}"
    );
    assert_eq!(summary.deleted as usize, messages, "{summary}");
    assert_eq!(duplicates(&runs), 0);
}

/// SQS does not cancel a long poll when its client goes away: a message that
/// arrives during the rest of the wait is handed to the dead connection and
/// stays invisible for the visibility timeout (API reference,
/// `ReceiveMessage` `WaitTimeSeconds`). The proxy holds every receive for 4 s
/// and then forwards it whether or not the client is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_long_poll_on_an_idle_queue_leaves_nothing_invisible() {
    let plain = common::sqs().await;
    let url = common::create_queue(
        &plain,
        &common::unique("idlestop"),
        &[("VisibilityTimeout", "60")],
    )
    .await;
    let receives = Arc::new(AtomicU64::new(0));
    let r = receives.clone();
    let proxy = SqsProxy::start(
        &common::server().endpoint,
        move |req| {
            if req.action == "ReceiveMessage" {
                r.fetch_add(1, SeqCst);
                Verdict::HoldThenForward(Duration::from_secs(4))
            } else {
                Verdict::Forward
            }
        },
        |_, _, _| {},
    )
    .await;
    let runs = Runs::default();
    let mut running = common::Running::start_as_configured(
        Poller::builder(url.as_str(), counting(&runs, Duration::ZERO))
            .client(proxied(&proxy.endpoint).await)
            .receivers(1)
            .wait_time(Duration::from_secs(10)),
    );
    common::until(Duration::from_secs(30), "a receive is held", || {
        receives.load(SeqCst) >= 1
    })
    .await;
    let held_since = Instant::now();
    running.signal();
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&plain, &url, 1, None).await;
    let summary = running.stop().await;
    // Past the held receive's forwarding (4 s), whatever the run did.
    tokio::time::sleep(
        (held_since + Duration::from_secs(6)).saturating_duration_since(Instant::now()),
    )
    .await;
    let (visible, invisible) = common::depth(&plain, &url).await;
    println!(
        "FIGURES shutdown on an idle queue: messages 1, faults 1 (shutdown during a held long \
         poll), lost 0, duplicates 0, stuck invisible after the run {invisible}"
    );
    assert_eq!(
        (visible, invisible),
        (1, 0),
        "the message is visible again: {summary}"
    );
    assert_eq!(
        handled(&runs),
        0,
        "received while stopping: released, not run"
    );
}

/// SQS throttles `DeleteMessageBatch` (HTTP 400 `ThrottlingException`, query
/// code `RequestThrottled`) when a queue's API rate is exceeded. The proxy
/// throttles every delete for 30 s from the first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_deletes_hold_back_receiving() {
    let plain = common::sqs().await;
    let url = common::create_queue(
        &plain,
        &common::unique("backpressure"),
        &[("VisibilityTimeout", "120")],
    )
    .await;
    let messages = 150;
    send(&plain, &url, messages, None).await;
    let start = Instant::now();
    let throttle_from = Arc::new(AtomicI64::new(-1));
    let (received, deleted, throttled) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let (tf, th) = (throttle_from.clone(), throttled.clone());
    let (rc, dl) = (received.clone(), deleted.clone());
    let proxy = SqsProxy::start(
        &common::server().endpoint,
        move |req| {
            if req.action != "DeleteMessageBatch" {
                return Verdict::Forward;
            }
            let now = start.elapsed().as_millis() as i64;
            let _ = tf.compare_exchange(-1, now, SeqCst, SeqCst);
            if now - tf.load(SeqCst) < 30_000 {
                th.fetch_add(1, SeqCst);
                Verdict::Error {
                    status: "400 Bad Request",
                    code: "ThrottlingException",
                }
            } else {
                Verdict::Forward
            }
        },
        move |req, body, _| match req.action.as_str() {
            "ReceiveMessage" => {
                rc.fetch_add(sqs_proxy::received(body) as u64, SeqCst);
            }
            "DeleteMessageBatch" => {
                dl.fetch_add(sqs_proxy::successful(body) as u64, SeqCst);
            }
            _ => {}
        },
    )
    .await;
    let concurrency = 10;
    let runs = Runs::default();
    let running = common::Running::start_as_configured(
        Poller::builder(url.as_str(), counting(&runs, Duration::ZERO))
            .client(proxied(&proxy.endpoint).await)
            .concurrency(concurrency)
            // One receive loop: moto's ReceiveMessage takes no lock.
            .receivers(1)
            .wait_time(Duration::from_secs(1)),
    );
    let mut worst = 0;
    let end = Instant::now() + Duration::from_secs(150);
    while deleted.load(SeqCst) < messages as u64 {
        assert!(
            Instant::now() < end,
            "timed out: {} deleted",
            deleted.load(SeqCst)
        );
        let held = received.load(SeqCst).saturating_sub(deleted.load(SeqCst));
        worst = worst.max(held);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drained(&plain, &url, Duration::from_secs(30)).await;
    let summary = running.stop().await;
    println!(
        "FIGURES deletes throttled 30 s: messages {messages}, faults {} (HTTP 400 \
         ThrottlingException), lost 0, duplicates {}, received minus deleted at most {worst}",
        throttled.load(SeqCst),
        duplicates(&runs)
    );
    assert!(throttled.load(SeqCst) > 0);
    // The documented bound on received and not yet settled: twice the
    // running and received-ahead messages (`2 × (concurrency + receive_ahead)`).
    let bound = 2 * (concurrency + sqs_worker_poller::DEFAULT_RECEIVE_AHEAD) as u64;
    assert!(
        worst <= bound,
        "received minus deleted reached {worst} (bound: {bound})"
    );
    assert_eq!(summary.settlement_failures, 0, "{summary}");
    assert_eq!(duplicates(&runs), 0);
}

/// SQS FIFO: a `ReceiveMessage` retried with the same
/// `ReceiveRequestAttemptId` within 5 minutes returns the same messages (API
/// reference, `ReceiveRequestAttemptId`). moto does not implement attempt
/// ids, so the proxy imitates them: it remembers the response to each
/// attempt id and replays it. The first receive's response is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_fifo_receive_is_replayed_by_its_attempt_id() {
    let plain = common::sqs().await;
    let name = format!("{}.fifo", common::unique("attempt"));
    let url = common::create_queue(
        &plain,
        &name,
        &[
            ("FifoQueue", "true"),
            ("ContentBasedDeduplication", "true"),
            ("VisibilityTimeout", "60"),
        ],
    )
    .await;
    let messages = 5;
    send(&plain, &url, messages, Some("g")).await;
    let seen: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let dropped = Arc::new(AtomicU64::new(0));
    let (s, d) = (seen.clone(), dropped.clone());
    let s2 = seen.clone();
    let attempt = |req: &sqs_proxy::Request| {
        req.body
            .get("ReceiveRequestAttemptId")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let proxy = SqsProxy::start(
        &common::server().endpoint,
        move |req| {
            if req.action != "ReceiveMessage" {
                return Verdict::Forward;
            }
            if let Some(r) = attempt(req).and_then(|id| s.lock().unwrap().get(&id).cloned()) {
                return Verdict::Raw(r);
            }
            if d.fetch_add(1, SeqCst) == 0 {
                Verdict::DropResponse
            } else {
                Verdict::Forward
            }
        },
        move |req, _, raw| {
            if req.action == "ReceiveMessage"
                && let Some(id) = attempt(req)
            {
                s2.lock().unwrap().entry(id).or_insert_with(|| raw.to_vec());
            }
        },
    )
    .await;
    let runs = Runs::default();
    let running = common::Running::start_as_configured(
        Poller::builder(url.as_str(), counting(&runs, Duration::ZERO))
            .client(proxied(&proxy.endpoint).await)
            .receivers(1)
            .wait_time(Duration::from_secs(1)),
    );
    // Well under the 60 s visibility timeout the lost batch would wait out.
    common::until(
        Duration::from_secs(15),
        "the group's messages handled",
        || handled(&runs) == messages,
    )
    .await;
    drained(&plain, &url, Duration::from_secs(20)).await;
    running.stop().await;
    assert!(dropped.load(SeqCst) >= 1, "a response was dropped");
    assert_eq!(duplicates(&runs), 0);
}

/// With `wait_time` 0 (short polls), an empty queue must not turn into a
/// busy loop of `ReceiveMessage` calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_polls_on_an_empty_queue_back_off() {
    let plain = common::sqs().await;
    let url = common::queue(&plain, "shortpoll").await;
    let runs = Runs::default();
    let running = common::Running::start_as_configured(
        Poller::builder(url.as_str(), counting(&runs, Duration::ZERO))
            .client(plain.clone())
            .receivers(1)
            .wait_time(Duration::ZERO),
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let summary = running.stop().await;
    // Start-up checks plus a receive about every second at most.
    assert!(
        summary.requests <= 20,
        "{} requests in 4 s: {summary}",
        summary.requests
    );
}

/// The messages still unfinished at the end of the grace period are made
/// visible again in batches of ten, not in pairs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_release_sends_full_batches() {
    let plain = common::sqs().await;
    let url = common::create_queue(
        &plain,
        &common::unique("release"),
        &[("VisibilityTimeout", "60")],
    )
    .await;
    let messages = 20;
    send(&plain, &url, messages, None).await;
    let changes = Arc::new(AtomicU64::new(0));
    let c = changes.clone();
    let proxy = SqsProxy::start(
        &common::server().endpoint,
        move |req| {
            if req.action == "ChangeMessageVisibilityBatch" {
                c.fetch_add(1, SeqCst);
            }
            Verdict::Forward
        },
        |_, _, _| {},
    )
    .await;
    let runs = Runs::default();
    let running = common::Running::start_as_configured(
        Poller::builder(url.as_str(), counting(&runs, Duration::from_secs(3600)))
            .client(proxied(&proxy.endpoint).await)
            .concurrency(messages)
            .receivers(1)
            .grace_period(Duration::from_secs(1))
            .wait_time(Duration::from_secs(1)),
    );
    common::until(Duration::from_secs(30), "every handler started", || {
        handled(&runs) == messages
    })
    .await;
    let summary = running.stop().await;
    assert_eq!(summary.released as usize, messages, "{summary}");
    assert_eq!(common::depth(&plain, &url).await, (messages as u64, 0));
    assert!(
        changes.load(SeqCst) <= 3,
        "{} ChangeMessageVisibilityBatch calls",
        changes.load(SeqCst)
    );
}

// The heartbeat (every other tick; a handler's own extension racing it) is in
// `heartbeat`.
mod heartbeat;
