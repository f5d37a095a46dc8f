//! Flow control (issue 16 §3, §4) against moto's SQS server: the rate limit
//! and adaptive concurrency of the poller.

use crate::common::{self, Running, init_logs, send};

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqs_worker::poller::Poller;
use sqs_worker::{Error, Message};
use sqs_worker_core::flow::RateLimit;

/// Issue 16 §3: 14 handler starts per second with a concurrency of 64 (two
/// receive loops). The issue asks for 30 s; 12 s (168 messages) keeps the
/// same assertions: the starts in every whole second since the first stay
/// at most 14 + the burst (7), the average rate is within 5 % of 14, and
/// every message is handled once the queue drains (nothing lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_starts_to_the_rate_with_a_small_burst() {
    init_logs();
    let client = common::sqs().await;
    let url = common::queue(&client, "rate").await;
    let limit = RateLimit::per_second(14.0);
    assert_eq!(limit.burst_size(), 7);
    let total = 14 * 12;
    let bodies: Vec<String> = (0..total).map(|i| format!("m{i}")).collect();
    send(&client, &url, &bodies).await;

    let start = Instant::now();
    let starts: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let handled: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (st, h) = (starts.clone(), handled.clone());
    let handler = move |m: Message| {
        let (st, h) = (st.clone(), h.clone());
        async move {
            st.lock().unwrap().push(start.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
            h.lock().unwrap().insert(m.body().to_owned());
            Ok::<_, Error>(())
        }
    };
    let running = Running::start(
        Poller::builder(url.as_str(), handler)
            .client(client.clone())
            .concurrency(64)
            .rate_limit(limit),
    );
    common::until(Duration::from_secs(60), "every message handled", || {
        handled.lock().unwrap().len() == total
    })
    .await;
    let summary = running.stop().await;
    assert_eq!(summary.succeeded, total as u64, "{summary:?}");
    assert_eq!(common::depth(&client, &url).await, (0, 0), "nothing left");

    let mut starts = starts.lock().unwrap().clone();
    starts.sort();
    assert_eq!(starts.len(), total, "each message started once");
    let first = starts[0];
    let mut per_second = vec![0usize; 64];
    for t in &starts {
        per_second[(*t - first).as_secs() as usize] += 1;
    }
    let most = per_second.iter().max().copied().unwrap_or(0);
    assert!(
        most <= 14 + 7,
        "{most} starts in one second: {per_second:?}"
    );
    let span = (starts[total - 1] - first).as_secs_f64();
    let rate = (total - 1) as f64 / span;
    eprintln!("rate limit: {rate:.2}/s on average, per second {per_second:?}");
    assert!(
        (rate - 14.0).abs() <= 0.05 * 14.0,
        "{rate:.2} starts per second on average: {per_second:?}"
    );
}

/// Issue 16 §4 through the poller: a handler that answers in 300 ms, then
/// fails for 4 s (a downstream struggling), then answers again. With
/// adaptive concurrency from 1 to 64, the handlers running at once climb
/// while healthy, drop to a few while failing, and climb again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_concurrency_drops_while_failing_and_recovers() {
    init_logs();
    let client = common::sqs().await;
    let url = common::queue(&client, "adaptive").await;
    let bodies: Vec<String> = (0..1200).map(|i| format!("m{i}")).collect();
    send(&client, &url, &bodies).await;

    const FAIL_FROM: Duration = Duration::from_secs(4);
    const FAIL_UNTIL: Duration = Duration::from_secs(8);
    let start = Instant::now();
    let running_now = Arc::new(AtomicUsize::new(0));
    // (since the start, handlers running at once) at every handler start.
    let samples: Arc<Mutex<Vec<(Duration, usize)>>> = Arc::default();
    let (r, s) = (running_now.clone(), samples.clone());
    let handler = move |_m: Message| {
        let (r, s) = (r.clone(), s.clone());
        async move {
            let now = r.fetch_add(1, Relaxed) + 1;
            let t = start.elapsed();
            s.lock().unwrap().push((t, now));
            tokio::time::sleep(Duration::from_millis(300)).await;
            r.fetch_sub(1, Relaxed);
            if (FAIL_FROM..FAIL_UNTIL).contains(&t) {
                return Err(Error::msg("the database is struggling"));
            }
            Ok(())
        }
    };
    let running = Running::start(
        Poller::builder(url.as_str(), handler)
            .client(client.clone())
            .adaptive_concurrency(1..=64),
    );
    tokio::time::sleep(Duration::from_secs(16)).await;
    running.stop().await;

    let samples = samples.lock().unwrap().clone();
    let most = |from: u64, to: u64| {
        samples
            .iter()
            .filter(|(t, _)| (Duration::from_secs(from)..Duration::from_secs(to)).contains(t))
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    };
    let (healthy, failing, recovered) = (most(1, 4), most(6, 8), most(9, 16));
    eprintln!("adaptive: at once {healthy} healthy, {failing} failing, {recovered} recovered");
    assert!(healthy >= 16, "{healthy} at once while healthy");
    assert!(failing <= 4, "{failing} at once while failing");
    assert!(recovered >= 16, "{recovered} at once after recovery");
}
