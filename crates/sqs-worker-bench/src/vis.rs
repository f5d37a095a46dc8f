//! Workload 3, visibility extension: handlers run 12 s on a queue whose
//! visibility timeout is 5 s, two pollers on the same queue: every message
//! must be handled exactly once; counts the extension calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqs_worker_core::{Error, Message};
use sqs_worker_poller::Poller;
use tokio::sync::Notify;

use crate::count::Counter;

/// One run: two pollers (concurrency `c` each) in this process.
pub(crate) async fn run(endpoint: &str, url: &str, n: u64, hold: Duration, c: usize) -> Value {
    let counter = Counter::default();
    let client = crate::sqs::client(endpoint, &counter).await;
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let finished = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let all_done = Arc::new(Notify::new());
    let stop = Arc::new(Notify::new());
    let t0 = Instant::now();
    let mut pollers = Vec::new();
    for _ in 0..2 {
        let (seen, finished, all_done) = (seen.clone(), finished.clone(), all_done.clone());
        let handler = move |m: Message| {
            *seen
                .lock()
                .expect("lock")
                .entry(m.id().to_owned())
                .or_default() += 1;
            let (finished, all_done) = (finished.clone(), all_done.clone());
            async move {
                tokio::time::sleep(hold).await;
                if finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 == n {
                    all_done.notify_one();
                }
                Ok::<(), Error>(())
            }
        };
        let stop = stop.clone();
        let p = Poller::builder(url, handler)
            .client(client.clone())
            .concurrency(c)
            .shutdown_signal(async move { stop.notified().await })
            .build()
            .expect("poller");
        pollers.push(tokio::spawn(p.run()));
    }
    all_done.notified().await;
    let handled_at = t0.elapsed();
    // Let a lapsed lease show up as a redelivery before stopping.
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.notify_waiters();
    let mut summaries = Vec::new();
    for p in pollers {
        let s = p.await.expect("join").expect("poller run");
        summaries.push(json!({
            "received": s.received, "succeeded": s.succeeded, "deleted": s.deleted,
            "extensions": s.extensions, "settlement_failures": s.settlement_failures,
            "sdk_errors": s.sdk_errors,
        }));
    }
    let seen = seen.lock().expect("lock").clone();
    let deliveries: u32 = seen.values().sum();
    let (visible, in_flight) = crate::sqs::depth(&client, url).await;
    json!({
        "workload": "visibility",
        "n": n,
        "hold_s": hold.as_secs_f64(),
        "distinct_handled": seen.len(),
        "deliveries": deliveries,
        "duplicates": deliveries as usize - seen.len(),
        "handled_after_s": handled_at.as_secs_f64(),
        "change_visibility_batch": counter.get("ChangeMessageVisibilityBatch"),
        "change_visibility": counter.get("ChangeMessageVisibility"),
        "requests": counter.total(),
        "left_visible": visible,
        "left_in_flight": in_flight,
        "pollers": summaries,
    })
}
