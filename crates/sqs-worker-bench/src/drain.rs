//! Workload 1 (drain) and 5 (memory): consume a pre-filled queue with a
//! no-op handler, measuring this process only (the producer is the parent).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use serde_json::{Value, json};
use sqs_worker_core::{Error, Message};
use sqs_worker_poller::Poller;
use tokio::sync::Notify;

use crate::count::Counter;
use crate::procfs;

/// The plainest correct aws-sdk-sqs consumer: `tasks` loops of
/// ReceiveMessage (10, long poll) then DeleteMessageBatch of what came back,
/// per-entry failures checked. Returns once `n` messages were deleted.
pub(crate) async fn raw(client: &Client, url: &str, n: u64, tasks: usize) -> u64 {
    let deleted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (client, url) = (client.clone(), url.to_owned());
        let (deleted, failed, done) = (deleted.clone(), failed.clone(), done.clone());
        set.spawn(async move {
            loop {
                let out = match client
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(20)
                    .send()
                    .await
                {
                    Ok(out) => out,
                    Err(e) => {
                        eprintln!("receive: {e:?}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let msgs = out.messages();
                if msgs.is_empty() {
                    continue;
                }
                // The no-op handler runs here.
                let entries = msgs
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(m.receipt_handle().unwrap_or_default())
                            .build()
                            .expect("entry")
                    })
                    .collect::<Vec<_>>();
                let count = entries.len() as u64;
                match client
                    .delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                {
                    Ok(out) => {
                        let bad = out.failed().len() as u64;
                        failed.fetch_add(bad, Relaxed);
                        if deleted.fetch_add(count - bad, Relaxed) + count - bad >= n {
                            done.notify_one();
                        }
                    }
                    Err(e) => {
                        eprintln!("delete: {e:?}");
                        failed.fetch_add(count, Relaxed);
                    }
                }
            }
        });
    }
    done.notified().await;
    set.abort_all();
    deleted.load(Relaxed)
}

/// The framework: a poller with a no-op handler (default settings unless
/// given), stopped once `n` messages were handled; returns its summary
/// (deletes flushed) as JSON.
pub(crate) async fn poller(
    client: &Client,
    url: &str,
    n: u64,
    concurrency: Option<usize>,
    receivers: Option<usize>,
) -> Value {
    let handled = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let start = Instant::now();
    let drained = Arc::new(std::sync::OnceLock::new());
    let (h, d, dr) = (handled.clone(), done.clone(), drained.clone());
    let handler = move |_m: Message| {
        if h.fetch_add(1, Relaxed) + 1 == n {
            let _ = dr.set(start.elapsed());
            d.notify_one();
        }
        async { Ok::<(), Error>(()) }
    };
    let mut b = Poller::builder(url, handler)
        .client(client.clone())
        .shutdown_signal(async move { done.notified().await });
    // For comparing runs with and without receive ahead.
    if let Some(n) = std::env::var("SQS_WORKER_RECEIVE_AHEAD")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        b = b.receive_ahead(n);
    }
    if let Some(c) = concurrency {
        b = b.concurrency(c);
    }
    if let Some(r) = receivers {
        b = b.receivers(r);
    }
    let summary = b.build().expect("poller").run().await.expect("poller run");
    json!({
        // Until the last message was handled; the run's wall time adds the
        // shutdown (the last long poll is given up to 1 s to answer).
        "drained_s": drained.get().map_or(f64::NAN, Duration::as_secs_f64),
        "received": summary.received,
        "succeeded": summary.succeeded,
        "deleted": summary.deleted,
        "settlement_failures": summary.settlement_failures,
        "sdk_errors": summary.sdk_errors,
        "poller_requests": summary.requests,
    })
}

/// One measured drain in this process: `which` is `raw` or `poller`.
pub(crate) async fn run(
    endpoint: &str,
    url: &str,
    which: &str,
    n: u64,
    concurrency: Option<usize>,
    receivers: Option<usize>,
) -> Value {
    let counter = Counter::default();
    let client = crate::sqs::client(endpoint, &counter).await;
    let rss_before = procfs::status_kib("VmRSS");
    counter.reset();
    let (cpu0, tick0, t0) = (procfs::cpu_ns(), procfs::stat_ns(), Instant::now());
    let extra = match which {
        "raw" => json!({ "deleted": raw(&client, url, n, 4).await }),
        "poller" => poller(&client, url, n, concurrency, receivers).await,
        other => panic!("unknown drain implementation {other:?}"),
    };
    let (cpu1, tick1, wall) = (procfs::cpu_ns(), procfs::stat_ns(), t0.elapsed());
    // The raw loop returns as soon as the last delete is answered.
    let drained = extra["drained_s"].as_f64().unwrap_or(wall.as_secs_f64());
    let reqs: serde_json::Map<String, Value> = counter
        .snapshot()
        .into_iter()
        .map(|(a, c)| (a.to_owned(), json!(c)))
        .collect();
    json!({
        "workload": "drain",
        "impl": which,
        "n": n,
        "wall_s": wall.as_secs_f64(),
        "drained_s": drained,
        "cpu_us_per_msg": cpu1.saturating_sub(cpu0) as f64 / 1e3 / n as f64,
        "cpu_us_per_msg_ticks": tick1.saturating_sub(tick0) as f64 / 1e3 / n as f64,
        "requests": counter.total(),
        "requests_per_msg": counter.total() as f64 / n as f64,
        "by_action": reqs,
        "rss_before_kib": rss_before,
        "vm_hwm_kib": procfs::status_kib("VmHWM"),
        "vm_rss_kib": procfs::status_kib("VmRSS"),
        "result": extra,
    })
}

/// Workload 5, idle: the consumer started on an empty queue, RSS after `secs`.
pub(crate) async fn idle(endpoint: &str, url: &str, which: &str, secs: u64) -> Value {
    let counter = Counter::default();
    let client = crate::sqs::client(endpoint, &counter).await;
    let cpu0 = procfs::cpu_ns();
    let task = {
        let (client, url, which) = (client.clone(), url.to_owned(), which.to_owned());
        tokio::spawn(async move {
            match which.as_str() {
                "raw" => {
                    raw(&client, &url, u64::MAX, 4).await;
                }
                _ => {
                    poller(&client, &url, u64::MAX, None, None).await;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let cpu = procfs::cpu_ns().saturating_sub(cpu0);
    let out = json!({
        "workload": "idle",
        "impl": which,
        "secs": secs,
        "vm_rss_kib": procfs::status_kib("VmRSS"),
        "vm_hwm_kib": procfs::status_kib("VmHWM"),
        "cpu_ms": cpu as f64 / 1e6,
        "requests": counter.total(),
    });
    task.abort();
    out
}
