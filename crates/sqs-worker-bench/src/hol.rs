//! Workload 2, head-of-line blocking: handlers sleep 5 ms, every 100th
//! message 1,000 ms; throughput against the ideal at concurrency `c`
//! (ideal = N × mean handler time ÷ c).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use serde_json::{Value, json};
use sqs_worker_core::{Error, Message};
use sqs_worker_poller::Poller;
use tokio::sync::Notify;

use crate::count::Counter;
use crate::sqs::index;

/// The handler time of message `i`: 1,000 ms for every 100th, else 5 ms.
pub(crate) fn work(i: u64) -> Duration {
    if i % 100 == 99 {
        Duration::from_millis(1000)
    } else {
        Duration::from_millis(5)
    }
}

/// Shared progress: handled count, and each handler's (start, end).
struct Progress {
    n: u64,
    handled: AtomicU64,
    done: Notify,
    spans: Mutex<Vec<(Instant, Instant)>>,
}

impl Progress {
    fn new(n: u64) -> Arc<Self> {
        Arc::new(Self {
            n,
            handled: AtomicU64::new(0),
            done: Notify::new(),
            spans: Mutex::new(Vec::with_capacity(n as usize)),
        })
    }

    async fn handle(&self, body: &str) {
        let start = Instant::now();
        tokio::time::sleep(work(index(body))).await;
        let end = Instant::now();
        self.spans.lock().expect("lock").push((start, end));
        if self.handled.fetch_add(1, Relaxed) + 1 == self.n {
            self.done.notify_one();
        }
    }

    /// Slot utilization while work was waiting: the handler time spent in
    /// [t0, last start] over `c` × that window. The end of a finite run
    /// (the last 1 s message finishing while other slots have nothing left)
    /// is left out, so this is the throughput against the ideal of an
    /// endless stream.
    fn steady_utilization(&self, t0: Instant, c: usize) -> f64 {
        let spans = self.spans.lock().expect("lock");
        let Some(last_start) = spans.iter().map(|s| s.0).max() else {
            return 0.0;
        };
        let busy: f64 = spans
            .iter()
            .map(|&(s, e)| {
                let (s, e) = (s.max(t0), e.min(last_start));
                e.saturating_duration_since(s).as_secs_f64()
            })
            .sum();
        busy / (c as f64 * last_start.duration_since(t0).as_secs_f64())
    }
}

/// The framework: a poller at concurrency `c`.
async fn poller(client: &Client, url: &str, p: Arc<Progress>, c: usize) -> Instant {
    let stop = Arc::new(Notify::new());
    let (p2, stop2) = (p.clone(), stop.clone());
    let handler = move |m: Message| {
        let p = p2.clone();
        async move {
            p.handle(m.body()).await;
            Ok::<(), Error>(())
        }
    };
    let mut b = Poller::builder(url, handler);
    // For comparing runs with other receive-ahead bounds.
    if let Some(n) = std::env::var("SQS_WORKER_RECEIVE_AHEAD")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        b = b.receive_ahead(n);
    }
    let run = b
        .client(client.clone())
        .concurrency(c)
        .shutdown_signal(async move { stop2.notified().await })
        .build()
        .expect("poller")
        .run();
    let task = tokio::spawn(run);
    p.done.notified().await;
    let end = Instant::now();
    stop.notify_one();
    let _ = task.await;
    end
}

/// Wait-for-the-whole-batch baseline: receive 10, run them concurrently,
/// wait for all, delete the batch, repeat (one loop: concurrency 10).
async fn whole_batch(client: &Client, url: &str, p: Arc<Progress>) -> Instant {
    let (client, url, p2) = (client.clone(), url.to_owned(), p.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok(out) = client
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .wait_time_seconds(20)
                .send()
                .await
            else {
                continue;
            };
            let msgs = out.messages().to_vec();
            if msgs.is_empty() {
                continue;
            }
            let mut set = tokio::task::JoinSet::new();
            for m in &msgs {
                let (p, body) = (p2.clone(), m.body().unwrap_or_default().to_owned());
                set.spawn(async move { p.handle(&body).await });
            }
            set.join_all().await;
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
            let _ = client
                .delete_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await;
        }
    });
    p.done.notified().await;
    let end = Instant::now();
    task.abort();
    end
}

/// Plain `c`-task loop: each task receives one message, handles it, deletes it.
async fn tasks(client: &Client, url: &str, p: Arc<Progress>, c: usize) -> Instant {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..c {
        let (client, url, p) = (client.clone(), url.to_owned(), p.clone());
        set.spawn(async move {
            loop {
                let Ok(out) = client
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(1)
                    .wait_time_seconds(20)
                    .send()
                    .await
                else {
                    continue;
                };
                for m in out.messages() {
                    p.handle(m.body().unwrap_or_default()).await;
                    let _ = client
                        .delete_message()
                        .queue_url(&url)
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .send()
                        .await;
                }
            }
        });
    }
    p.done.notified().await;
    let end = Instant::now();
    set.abort_all();
    end
}

/// One measured run in this process: `which` is `poller`, `batch` or `tasks`.
pub(crate) async fn run(endpoint: &str, url: &str, which: &str, n: u64, c: usize) -> Value {
    let counter = Counter::default();
    let client = crate::sqs::client(endpoint, &counter).await;
    let p = Progress::new(n);
    let t0 = Instant::now();
    let end = match which {
        "poller" => poller(&client, url, p.clone(), c).await,
        "batch" => whole_batch(&client, url, p.clone()).await,
        "tasks" => tasks(&client, url, p.clone(), c).await,
        other => panic!("unknown head-of-line implementation {other:?}"),
    };
    let makespan = end.duration_since(t0).as_secs_f64();
    let total_work: f64 = (0..n).map(|i| work(i).as_secs_f64()).sum();
    let ideal = total_work / c as f64;
    json!({
        "workload": "hol",
        "impl": which,
        "n": n,
        "concurrency": c,
        "makespan_s": makespan,
        "ideal_s": ideal,
        "of_ideal": ideal / makespan,
        "steady_utilization": p.steady_utilization(t0, c),
        "requests": counter.total(),
        "receives": counter.get("ReceiveMessage"),
    })
}
