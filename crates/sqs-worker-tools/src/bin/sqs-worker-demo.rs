//! The driver behind README command 1: a local queue and dead-letter queue,
//! the `orders` example as a separate worker process, a producer, live
//! progress, one poison message, a clean SIGTERM, and a summary.
//!
//! ```sh
//! bash scripts/demo.sh   # starts the local server, builds, and runs this
//! ```
//!
//! Run by hand, it needs `SQS_WORKER_DEMO_ENDPOINT` (the local server, e.g.
//! `http://127.0.0.1:5000`) and `SQS_WORKER_DEMO_WORKER` (the built `orders`
//! example). `DEMO_ORDERS` (default 3000) and `ORDERS_FAIL_EVERY` (default 40)
//! size it.
//!
//! Every number shown comes from the worker's own metrics, scraped from its
//! Prometheus endpoint (`SQS_WORKER_METRICS_ADDR`, the same `/metrics` an
//! operator would scrape), or from the queues (`GetQueueAttributes`). "SQS
//! requests" are the worker's HTTP requests to SQS
//! (`sqs_worker_sqs_requests_total`); the producer's and this driver's own
//! requests are not included.

use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{QueueAttributeName as A, SendMessageBatchRequestEntry};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The worker's retry window (`SQS_WORKER_RETRY_WINDOW_SECONDS`): with the
/// demo queue's `maxReceiveCount` of 3, retry delays of 2–4, 4–8 and 8–16 s.
const RETRY_WINDOW_SECONDS: &str = "14";

/// The worker's counters, from its `/metrics` endpoint.
#[derive(Debug, Default, Clone)]
struct Progress {
    received: u64,
    succeeded: u64,
    retried: u64,
    dead_lettered: u64,
    in_flight: u64,
    requests: u64,
    settlement_failures: u64,
}

/// Sums every series of `name` (all label sets) in a Prometheus text page.
fn sum(page: &str, name: &str) -> u64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let base = series.split('{').next()?;
            (base == name).then(|| value.trim().parse::<f64>().ok())?
        })
        .sum::<f64>() as u64
}

/// Scrapes the worker's `/metrics`.
async fn scrape(addr: &str) -> Result<Progress, BoxError> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: demo\r\n\r\n")
        .await?;
    let mut page = String::new();
    s.read_to_string(&mut page).await?;
    let received = sum(&page, "sqs_worker_messages_received_total");
    let succeeded = sum(&page, "sqs_worker_messages_succeeded_total");
    let failed = sum(&page, "sqs_worker_messages_failed_total");
    Ok(Progress {
        received,
        succeeded,
        retried: sum(&page, "sqs_worker_messages_retried_total"),
        dead_lettered: sum(&page, "sqs_worker_messages_dead_lettered_total"),
        in_flight: received.saturating_sub(succeeded + failed),
        requests: sum(&page, "sqs_worker_sqs_requests_total"),
        settlement_failures: sum(&page, "sqs_worker_settlement_failures_total"),
    })
}

/// A free loopback port for the worker's metrics endpoint.
fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn env_or(var: &str, default: u64) -> Result<u64, BoxError> {
    match std::env::var(var) {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{var}={v:?} is not a number").into()),
        Err(_) => Ok(default),
    }
}

fn required(var: &str) -> Result<String, BoxError> {
    std::env::var(var).map_err(|_| format!("{var} is not set (run `bash scripts/demo.sh`)").into())
}

async fn depth(client: &aws_sdk_sqs::Client, url: &str) -> Result<(u64, u64), BoxError> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await?;
    let attrs = out.attributes.unwrap_or_default();
    let get = |k: A| attrs.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok((
        get(A::ApproximateNumberOfMessages),
        get(A::ApproximateNumberOfMessagesNotVisible),
    ))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let endpoint = required("SQS_WORKER_DEMO_ENDPOINT")?;
    let worker_bin = required("SQS_WORKER_DEMO_WORKER")?;
    let orders = env_or("DEMO_ORDERS", 3000)?;
    let fail_every = env_or("ORDERS_FAIL_EVERY", 40)?;

    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("demo", "demo", None, None, "demo"))
        .load()
        .await;
    let client = aws_sdk_sqs::Client::new(&config);
    let queues = create_queues(&client).await?;
    println!("queue       {}", queues.queue);
    println!(
        "dead-letter {} (redrive after 3 receives; the worker also dead-letters permanent failures at once)",
        queues.dlq
    );

    let metrics_addr = format!("127.0.0.1:{}", free_port()?);
    let mut worker = start_worker(&worker_bin, &endpoint, &queues, &metrics_addr, fail_every)?;
    let pid = worker.id().ok_or("the worker exited at once")?;
    println!(
        "worker      pid {pid}: examples/orders.rs, every {fail_every}th order fails once \
         (ORDERS_FAIL_EVERY) and is retried within seconds (a {RETRY_WINDOW_SECONDS} s retry window, \
         SQS_WORKER_RETRY_WINDOW_SECONDS; an hour unless set)"
    );
    let stdout = worker.stdout.take().ok_or("no worker stdout")?;
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            println!("worker: {line}");
        }
    });

    let started = Instant::now();
    let produced = Arc::new(AtomicU64::new(0));
    let producer = tokio::spawn(produce(
        client.clone(),
        queues.queue.clone(),
        orders,
        produced.clone(),
    ));
    watch(
        &client,
        &queues.queue,
        &metrics_addr,
        (started, orders),
        (producer, &produced),
    )
    .await?;

    // The final counters, then SIGTERM: the worker stops receiving, flushes, and exits 0.
    let p = scrape(&metrics_addr).await?;
    let killed = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()?;
    if !killed.success() {
        return Err("could not send SIGTERM to the worker".into());
    }
    let status = tokio::time::timeout(Duration::from_secs(45), worker.wait())
        .await
        .map_err(|_| "the worker did not stop within 45 s of SIGTERM")??;
    let _ = reader.await;
    let elapsed = started.elapsed();
    println!();
    println!("worker exited: {status} after SIGTERM");
    report(&client, &queues, &p, orders, elapsed, status.success()).await
}

/// The demo's queues: orders, and a dead-letter queue behind a redrive policy.
struct Queues {
    queue: String,
    dlq: String,
}

async fn create_queues(client: &aws_sdk_sqs::Client) -> Result<Queues, BoxError> {
    let suffix = std::process::id();
    let dlq = client
        .create_queue()
        .queue_name(format!("orders-dlq-{suffix}"))
        .send()
        .await?
        .queue_url
        .ok_or("no DLQ URL")?;
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(A::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|a| a.get(&A::QueueArn).cloned())
        .ok_or("no DLQ ARN")?;
    let queue = client
        .create_queue()
        .queue_name(format!("orders-{suffix}"))
        .attributes(A::VisibilityTimeout, "30")
        .attributes(
            A::RedrivePolicy,
            format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"3"}}"#),
        )
        .send()
        .await?
        .queue_url
        .ok_or("no queue URL")?;
    Ok(Queues { queue, dlq })
}

/// The worker: the orders example, configured only from the environment.
fn start_worker(
    worker_bin: &str,
    endpoint: &str,
    queues: &Queues,
    metrics_addr: &str,
    fail_every: u64,
) -> Result<tokio::process::Child, BoxError> {
    Ok(tokio::process::Command::new(worker_bin)
        .env("SQS_QUEUE_URL", &queues.queue)
        .env("SQS_WORKER_DLQ_URL", &queues.dlq)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "demo")
        .env("AWS_SECRET_ACCESS_KEY", "demo")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("ORDERS_FAIL_EVERY", fail_every.to_string())
        // The retries of a failing message are spread over the retry window
        // (an hour by default: with the demo queue's maxReceiveCount of 3, a
        // first retry after 8.5 to 17 minutes). A short window for the demo:
        // an order that fails once is back in 2 to 4 seconds.
        .env("SQS_WORKER_RETRY_WINDOW_SECONDS", RETRY_WINDOW_SECONDS)
        // One receive loop: moto's ReceiveMessage takes no lock, so two
        // concurrent receives can both get the same message (real SQS does
        // not do that), which would show as a duplicate here.
        .env("SQS_WORKER_RECEIVERS", "1")
        .env("SQS_WORKER_METRICS_ADDR", metrics_addr)
        .env(
            "RUST_LOG",
            std::env::var("DEMO_WORKER_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the worker {worker_bin}: {e}"))?)
}

/// The producer: `orders` orders in batches of 10, keeping the queue shallow
/// (the local server slows down with depth), and one poison message halfway.
async fn produce(
    client: aws_sdk_sqs::Client,
    queue: String,
    orders: u64,
    produced: Arc<AtomicU64>,
) -> Result<(), BoxError> {
    let mut next = 1u64;
    while next <= orders {
        if next % 50 == 1 {
            while depth(&client, &queue).await?.0 > 50 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let entries: Vec<_> = (next..(next + 10).min(orders + 1))
            .map(|id| {
                SendMessageBatchRequestEntry::builder()
                    .id(id.to_string())
                    .message_body(format!(
                        r#"{{"order_id": {id}, "customer": "c-{}", "amount_cents": {}}}"#,
                        id % 97,
                        100 + id % 5000
                    ))
                    .build()
            })
            .collect::<Result<_, _>>()?;
        let n = entries.len() as u64;
        let out = client
            .send_message_batch()
            .queue_url(&queue)
            .set_entries(Some(entries))
            .send()
            .await?;
        if !out.failed().is_empty() {
            return Err(format!("send failed: {:?}", out.failed()).into());
        }
        next += n;
        produced.fetch_add(n, Ordering::Relaxed);
        if next > orders / 2 && next <= orders / 2 + 10 {
            // One poison message: not an order at all.
            client
                .send_message()
                .queue_url(&queue)
                .message_body("this is not an order")
                .send()
                .await?;
        }
    }
    Ok(())
}

/// Live progress, once a second, until every order is processed, the poison
/// is dead-lettered and the queue is empty (at most 3 minutes).
async fn watch(
    client: &aws_sdk_sqs::Client,
    queue: &str,
    metrics_addr: &str,
    (started, orders): (Instant, u64),
    (producer, produced): (tokio::task::JoinHandle<Result<(), BoxError>>, &AtomicU64),
) -> Result<(), BoxError> {
    let progress = Arc::new(Mutex::new(Progress::default()));
    let scraper = {
        let (progress, addr) = (progress.clone(), metrics_addr.to_owned());
        tokio::spawn(async move {
            loop {
                if let Ok(p) = scrape(&addr).await {
                    *progress.lock().unwrap_or_else(|e| e.into_inner()) = p;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    // Stops scraping however this returns.
    let _scraper = AbortOnDrop(scraper);
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut last = (Instant::now(), 0u64);
    let mut producer = Some(producer);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(p) = producer.take_if(|p| p.is_finished()) {
            p.await??;
        }
        let p = progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let now = Instant::now();
        let rate = (p.succeeded - last.1.min(p.succeeded)) as f64 / (now - last.0).as_secs_f64();
        last = (now, p.succeeded);
        let per_msg = if p.received > 0 {
            p.requests as f64 / p.received as f64
        } else {
            0.0
        };
        print!(
            "{}[{:>4.0}s] produced {:>5}/{orders} | processed {:>5} ({:>5.0}/s) | in flight {:>3} | retried {:>3} | dead-lettered {} | SQS requests/msg {:.3}   {}",
            if tty { "\r" } else { "" },
            started.elapsed().as_secs_f64(),
            produced.load(Ordering::Relaxed),
            p.succeeded,
            rate,
            p.in_flight,
            p.retried,
            p.dead_lettered,
            per_msg,
            if tty { "" } else { "\n" },
        );
        let _ = std::io::stdout().flush();
        if producer.is_none()
            && p.succeeded >= orders
            && p.dead_lettered >= 1
            && depth(client, queue).await? == (0, 0)
        {
            if tty {
                println!();
            }
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(180) {
            println!();
            return Err("the demo did not finish within 3 minutes".into());
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The summary (the worker's final counters `p`, what the dead-letter queue
/// holds, what is left in the queue), then the checks the demo stands for.
async fn report(
    client: &aws_sdk_sqs::Client,
    queues: &Queues,
    p: &Progress,
    orders: u64,
    elapsed: Duration,
    exited_0: bool,
) -> Result<(), BoxError> {
    let dead = client
        .receive_message()
        .queue_url(&queues.dlq)
        .message_attribute_names("All")
        .max_number_of_messages(10)
        // A peek: the dead letters stay visible for `sqs-worker dlq inspect`,
        // which scripts/demo.sh runs next.
        .visibility_timeout(0)
        .send()
        .await?;
    let (visible, in_flight) = depth(client, &queues.queue).await?;
    println!("processed         {} orders", p.succeeded);
    println!(
        "retried           {} (failed once on purpose, then succeeded)",
        p.retried
    );
    println!("dead-lettered     {} (the poison message)", p.dead_lettered);
    for m in dead.messages() {
        let attr = |k: &str| {
            m.message_attributes()
                .and_then(|a| a.get(k))
                .and_then(|v| v.string_value())
                .unwrap_or("-")
                .to_owned()
        };
        println!(
            "  in the DLQ: {:?}: {} ({})",
            m.body().unwrap_or(""),
            attr(sqs_worker::poller::dead_letter::ERROR),
            attr(sqs_worker::poller::dead_letter::ERROR_KIND)
        );
    }
    println!(
        "SQS requests      {} by the worker for {} received messages: {:.3} per message",
        p.requests,
        p.received,
        p.requests as f64 / p.received.max(1) as f64
    );
    println!(
        "elapsed           {:.1} s ({:.0} orders/s)",
        elapsed.as_secs_f64(),
        p.succeeded as f64 / elapsed.as_secs_f64()
    );
    println!("queue left        {visible} visible, {in_flight} in flight");
    println!("settle failures   {}", p.settlement_failures);

    let checks = [
        (exited_0, "the worker exits 0 after SIGTERM"),
        (p.succeeded == orders, "every order processed once"),
        (
            p.dead_lettered == 1,
            "exactly the poison message dead-lettered",
        ),
        (
            p.settlement_failures == 0,
            "no delete or visibility change failed",
        ),
        ((visible, in_flight) == (0, 0), "the queue is empty"),
        (
            dead.messages().len() == 1,
            "the DLQ holds the poison message",
        ),
    ];
    let failed: Vec<&str> = checks
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, what)| *what)
        .collect();
    if !failed.is_empty() {
        return Err(format!("the demo went wrong: not true that {}", failed.join("; ")).into());
    }
    println!("demo OK");
    Ok(())
}
