//! Flow control (issue 16) against moto's SQS server: the retry budget (the
//! poller, and Lambda reading `maxReceiveCount` at its cold start) and the
//! circuit breaker.

use crate::common::{self, Running, init_logs, queue_arn, send, sqs_proxy};

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqs_worker::poller::Poller;
use sqs_worker::{Error, Message};
use sqs_worker_core::flow::BreakerConfig;

/// A queue with a redrive policy to a fresh dead-letter queue: (queue, dlq).
async fn queue_with_redrive(
    client: &aws_sdk_sqs::Client,
    prefix: &str,
    max_receive_count: u32,
) -> (String, String) {
    let dlq = common::queue(client, &format!("{prefix}-dlq")).await;
    let redrive = format!(
        r#"{{"deadLetterTargetArn":"{}","maxReceiveCount":"{max_receive_count}"}}"#,
        queue_arn(client, &dlq).await
    );
    let url = common::create_queue(
        client,
        &common::unique(prefix),
        &[("RedrivePolicy", &redrive)],
    )
    .await;
    (url, dlq)
}

/// Issue 16 §1: a dependency down for 20 s on a queue with
/// `maxReceiveCount=5` and a retry window of 100 s (a 60 s outage against a
/// 5-minute window, scaled down by 3 to keep CI short). With the old fixed
/// backoff (1 s doubling) every message reached the DLQ after ~8–15 s; the
/// budget (read from the redrive policy at start-up) spreads the five
/// receives over at least the window, so the outage costs no message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_shorter_than_the_retry_window_dead_letters_nothing() {
    init_logs();
    let client = common::sqs().await;
    let (url, dlq) = queue_with_redrive(&client, "budget", 5).await;
    const OUTAGE: Duration = Duration::from_secs(20);
    let bodies: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    send(&client, &url, &bodies).await;

    let start = Instant::now();
    let handled: Arc<Mutex<HashSet<String>>> = Arc::default();
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (h, f) = (handled.clone(), failures.clone());
    let handler = move |m: Message| {
        let (h, f) = (h.clone(), f.clone());
        async move {
            if start.elapsed() < OUTAGE {
                f.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(Error::msg("the payment API is down"));
            }
            h.lock().unwrap().insert(m.body().to_owned());
            Ok(())
        }
    };
    let running = Running::start(
        Poller::builder(url.as_str(), handler)
            .client(client.clone())
            .retry_window(Duration::from_secs(100)),
    );
    // The budget's last delays before recovery: ≤ 7 + 13 + 26 s after the
    // first failure; wait generously for every message, and fail as soon as
    // one is dead-lettered.
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        assert_eq!(
            common::depth(&client, &dlq).await.0,
            0,
            "a message reached the DLQ during a 20 s outage (after {:?})",
            start.elapsed()
        );
        if handled.lock().unwrap().len() == bodies.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {} handled after recovery",
            handled.lock().unwrap().len(),
            bodies.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let summary = running.stop().await;
    let failed = failures.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        failed >= bodies.len() as u64,
        "every message failed during the outage"
    );
    assert_eq!(summary.succeeded, bodies.len() as u64, "{summary:?}");
    assert_eq!(common::depth(&client, &dlq).await, (0, 0));
    assert_eq!(common::depth(&client, &url).await, (0, 0));
}

/// Issue 16 §2: a dependency down for 30 s (every message fails), 2,000
/// messages queued, `maxReceiveCount=5`. With the breaker, the poller stops
/// receiving during the outage: the `ReceiveMessage` calls that reach SQS
/// (counted by a forwarding proxy) drop to a trickle of probes, no message is
/// delivered more than 3 times, nothing reaches the DLQ, and the queue drains
/// after recovery. (A retry window of 20 s keeps the few budget delays of
/// the failures before the breaker opened short.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_stops_receiving_during_an_outage() {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
    init_logs();
    let client = common::sqs().await;
    let (url, dlq) = queue_with_redrive(&client, "breaker", 5).await;
    let total = 2000usize;
    let bodies: Vec<String> = (0..total).map(|i| format!("m{i}")).collect();
    send(&client, &url, &bodies).await;

    const OUTAGE: Duration = Duration::from_secs(30);
    let start = Instant::now();
    // Receives by the time they were sent, in whole seconds since the start.
    let receives: Arc<Mutex<Vec<u64>>> = Arc::default();
    let r = receives.clone();
    let proxy = sqs_proxy::SqsProxy::start(
        &common::server().endpoint,
        move |req| {
            if req.action == "ReceiveMessage" {
                r.lock().unwrap().push(start.elapsed().as_secs());
            }
            sqs_proxy::Verdict::Forward
        },
        |_, _, _| {},
    )
    .await;
    let proxied = aws_sdk_sqs::Client::new(&common::sdk_config_for(&proxy.endpoint).await);

    let handled: Arc<Mutex<HashSet<String>>> = Arc::default();
    let max_receive = Arc::new(AtomicU32::new(0));
    let runs = Arc::new(AtomicU64::new(0));
    let (h, mr, ru) = (handled.clone(), max_receive.clone(), runs.clone());
    let handler = move |m: Message| {
        let (h, mr, ru) = (h.clone(), mr.clone(), ru.clone());
        async move {
            ru.fetch_add(1, Relaxed);
            mr.fetch_max(m.receive_count(), Relaxed);
            if start.elapsed() < OUTAGE {
                return Err(Error::msg("the payment API is down"));
            }
            h.lock().unwrap().insert(m.body().to_owned());
            Ok(())
        }
    };
    let running = Running::start(
        Poller::builder(url.as_str(), handler)
            .client(proxied)
            .retry_window(Duration::from_secs(20))
            .circuit_breaker(BreakerConfig::default()),
    );
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        assert_eq!(
            common::depth(&client, &dlq).await.0,
            0,
            "a message reached the DLQ"
        );
        if handled.lock().unwrap().len() == total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {total} handled",
            handled.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drained_after = start.elapsed();
    running.stop().await;
    let during: usize = receives
        .lock()
        .unwrap()
        .iter()
        .filter(|&&s| (5..30).contains(&s))
        .count();
    // Probes after cool-downs of 5, 10 and 20 s, plus a long poll or two
    // in flight when it opened: a trickle, against ~200 receives per pass
    // over 2,000 messages without the breaker.
    assert!(
        during <= 20,
        "{during} ReceiveMessage calls during the outage"
    );
    let max = max_receive.load(Relaxed);
    assert!(max <= 3, "a message was delivered {max} times");
    assert_eq!(common::depth(&client, &dlq).await, (0, 0));
    // The breaker closes at the first probe after recovery (at most the
    // capped cool-down of 20 s after it), then the queue drains.
    assert!(
        drained_after < OUTAGE + Duration::from_secs(150),
        "drained {drained_after:?} after the start"
    );
}

/// Issue 16 §1 in Lambda: without `SQS_WORKER_MAX_RECEIVE_COUNT`, the
/// service reads the queue's `maxReceiveCount` on its first invocation with
/// its SQS client (the queue URL from the record's `eventSourceARN`), so the
/// retry budget spreads the retries over its window. A window of 62 s with
/// 5 receives makes the first retry delay 2–4 s; the fallback policy (what
/// an unread count leaves) would make it 0.5–1 s. When the policy cannot be
/// read, the invocation still answers and the fallback stays.
#[tokio::test]
async fn lambda_reads_max_receive_count_at_the_cold_start() {
    use sqs_worker::EngineConfig;
    use sqs_worker_core::flow::RetryBudget;
    use sqs_worker_lambda::LambdaRunner;
    use sqs_worker_lambda::testing::{event, failed_ids, record};

    init_logs();
    let client = common::sqs().await;
    let (url, _dlq) = queue_with_redrive(&client, "lambda-budget", 5).await;
    send(&client, &url, &["m".to_owned()]).await;
    let got = client
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    let m = got.messages().first().cloned().expect("the message");
    let rec = record(m.message_id().unwrap(), m.body().unwrap())
        .receipt_handle(m.receipt_handle().unwrap())
        .queue_arn(&queue_arn(&client, &url).await);

    let failing = |_m: Message| async { Err::<(), _>(Error::msg("the payment API is down")) };
    let service = |budget: &Arc<RetryBudget>| {
        LambdaRunner::with_config(
            failing,
            EngineConfig::default().retry_policy_arc(budget.clone()),
        )
        .sqs_client(client.clone())
        .retry_budget(budget.clone())
        .build()
        .unwrap()
    };
    let budget = Arc::new(RetryBudget::new(Duration::from_secs(62)));
    let svc = service(&budget);
    let ctx = lambda_runtime::Context::default();
    let resp = svc.handle(event([rec]), &ctx).await.unwrap();
    let answered = Instant::now();
    assert_eq!(failed_ids(&resp).len(), 1);
    assert_eq!(
        budget.max_receive_count(),
        Some(5),
        "read from the redrive policy"
    );

    let visible = || async {
        let out = client
            .receive_message()
            .queue_url(&url)
            .wait_time_seconds(0)
            .send()
            .await
            .unwrap();
        !out.messages().is_empty()
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !visible().await,
        "visible again {:?} after the failure: the budget's delay is at least 2 s",
        answered.elapsed()
    );
    common::until_async(Duration::from_secs(10), "the retry", visible).await;

    // A queue that cannot be read: logged, the fallback stays, and the
    // invocation answers as before.
    let budget = Arc::new(RetryBudget::new(Duration::from_secs(62)));
    let svc = service(&budget);
    let missing = record("x", "{}").queue_arn("arn:aws:sqs:us-east-1:123456789012:no-such-queue");
    let resp = svc.handle(event([missing]), &ctx).await.unwrap();
    assert_eq!(failed_ids(&resp), ["x"]);
    assert_eq!(budget.max_receive_count(), None);
}
