//! Receiving ahead (issue 20 §1): messages received before a slot is free
//! are leased like running ones (invisible, never more running than the
//! concurrency) and released at once at shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqs_worker::poller::Poller;
use sqs_worker::{Error, Message};

use crate::common;

#[derive(Default)]
struct Seen {
    running: usize,
    peak: usize,
    slow_running: usize,
    handled: Vec<String>,
}

/// Fast handlers first (the poller learns their pace and receives ahead),
/// then slow ones fill both slots: what was received ahead waits, invisible;
/// at shutdown it is visible again at once, while the two running messages
/// finish within the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_received_ahead_wait_invisible_and_are_released_at_shutdown() {
    let sqs = common::sqs().await;
    let url = common::queue(&sqs, "ahead").await;
    let fast: Vec<String> = (0..10).map(|i| format!("fast-{i}")).collect();
    let slow: Vec<String> = (0..20).map(|i| format!("slow-{i}")).collect();
    common::send(&sqs, &url, &fast).await;
    common::send(&sqs, &url, &slow).await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    let handler = move |m: Message| {
        let s = s.clone();
        async move {
            let is_slow = m.body().starts_with("slow");
            {
                let mut s = s.lock().unwrap();
                s.running += 1;
                s.peak = s.peak.max(s.running);
                s.slow_running += usize::from(is_slow);
            }
            let t = if is_slow { 4000 } else { 10 };
            tokio::time::sleep(Duration::from_millis(t)).await;
            let mut s = s.lock().unwrap();
            s.running -= 1;
            s.slow_running -= usize::from(is_slow);
            s.handled.push(m.body().to_owned());
            Ok::<(), Error>(())
        }
    };
    let mut running = common::Running::start(
        Poller::builder(url.as_str(), handler)
            .client(sqs.clone())
            .concurrency(2)
            .receive_ahead(20)
            // One receive loop: moto's ReceiveMessage takes no lock.
            .receivers(1),
    );
    common::until(
        Duration::from_secs(30),
        "both slots on slow messages",
        || seen.lock().unwrap().slow_running == 2,
    )
    .await;
    // Give a receive ahead its round trip.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, invisible) = common::depth(&sqs, &url).await;
    println!("FIGURES receive ahead: 2 running, {invisible} invisible before shutdown");
    assert!(
        invisible > 2,
        "messages were received ahead of the two running ones ({invisible} invisible)"
    );
    running.signal();
    common::until_async(
        Duration::from_secs(2),
        "only the two running messages invisible",
        async || common::depth(&sqs, &url).await.1 == 2,
    )
    .await;
    {
        let s = seen.lock().unwrap();
        assert_eq!(
            s.slow_running, 2,
            "released at once: the slow handlers still run"
        );
    }
    let summary = running.stop().await;
    let (peak, all) = {
        let s = seen.lock().unwrap();
        (s.peak, s.handled.clone())
    };
    assert!(peak <= 2, "never more than the concurrency running: {peak}");
    let mut handled = all.clone();
    handled.sort();
    handled.dedup();
    assert_eq!(handled.len(), all.len(), "nothing ran twice");
    assert_eq!(
        handled.len(),
        12,
        "10 fast and the 2 slow that were running"
    );
    assert_eq!(summary.deleted, 12, "{summary}");
    assert_eq!(
        common::depth(&sqs, &url).await,
        (18, 0),
        "the rest is visible"
    );
}
