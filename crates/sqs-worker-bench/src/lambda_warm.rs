//! Workload 5, warm invocations: one process of a Lambda function serves
//! `events` invocations in a row from the fake Runtime API of
//! [`lambda_start`](crate::lambda_start), each the same 10-record event, all
//! succeeding (a failing record would have `orders` call SQS, which the bench
//! has no server for), with no pause in the handler (`ORDERS_CHARGE_MS=0`, which the `orders`
//! example and `plain-lambda` both read). Measured from the first response
//! posted to the last (the cold start left out): wall time per invocation,
//! and CPU time of all the process's threads per invocation (what Lambda
//! bills is the wall time; the CPU time is the work). The whole path an
//! invocation takes in a deployed function: the runtime client's HTTP
//! requests, the event's deserialization, the handler, the response, and
//! for `orders` the framework's logs and metrics (CloudWatch EMF lines on
//! stdout, here discarded; `RUST_LOG` is `off` unless `--lambda-warm-log`
//! says otherwise: at `info` each message also gets its span). The floor, alternating with it round by round,
//! is `plain-lambda`.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::lambda_start::{Seen, conn, median, spawn_function, stripped};

/// CPU time so far of every thread of process `pid` (the first field of
/// each `/proc/PID/task/TID/schedstat`, in nanoseconds).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// One run: per invocation after the first, (wall µs, CPU µs).
async fn once(exe: &str, events: usize, log: &str) -> (f64, f64) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let t0 = Instant::now();
    let mut child = spawn_function(exe, addr, &[("RUST_LOG", log), ("ORDERS_CHARGE_MS", "0")]);
    let pid = child.id().unwrap_or(0);
    let served = Arc::new(AtomicUsize::new(0));
    let server = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(conn(sock, t0, (served.clone(), events), tx.clone(), false));
        }
    });
    let mut first = None;
    let mut posted = 0;
    let measured = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(seen) = rx.recv().await {
            if let Seen::Posted(t, _) = seen {
                posted += 1;
                if posted == 1 {
                    first = Some((t, cpu_ns(pid)));
                } else if posted == events {
                    return Some((t, cpu_ns(pid)));
                }
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    let _ = child.kill().await;
    server.abort();
    let ((t1, c1), (tn, cn)) = first
        .zip(measured)
        .expect("the function did not answer every event within 120 s");
    let n = (events - 1) as f64;
    (
        (tn - t1).as_secs_f64() * 1e6 / n,
        cn.saturating_sub(c1) as f64 / 1e3 / n,
    )
}

/// `runs` rounds of `events` warm invocations of each of `exes` (stripped
/// copies), alternating, with `RUST_LOG` set to `log`; prints each, returns
/// per binary the medians as JSON.
pub(crate) async fn run(exes: &[&str], (runs, events): (usize, usize), log: &str) -> Vec<Value> {
    let dir = std::env::temp_dir().join(format!("sqs-worker-lambda-warm-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let copies: Vec<String> = exes
        .iter()
        .enumerate()
        .map(|(i, e)| stripped(e, &dir.join(i.to_string())))
        .collect();
    let mut got: Vec<Vec<(f64, f64)>> = exes.iter().map(|_| Vec::new()).collect();
    let events = events.max(2);
    for round in 0..runs {
        for k in 0..copies.len() {
            let i = (k + round) % copies.len();
            let (wall, cpu) = once(&copies[i], events, log).await;
            println!(
                "lambda warm, {}: {wall:.1} µs per invocation, {cpu:.1} µs CPU",
                exes[i]
            );
            got[i].push((wall, cpu));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    exes.iter()
        .zip(got)
        .map(|(exe, g)| {
            json!({
                "workload": "lambda-warm",
                "exe": exe,
                "runs": runs,
                "events": events,
                "rust_log": log,
                "wall_us_median": median(g.iter().map(|g| g.0).collect()),
                "cpu_us_median": median(g.iter().map(|g| g.1).collect()),
            })
        })
        .collect()
}
