//! The coordinator: creates and fills the queues (so the producer is never
//! in a measured process), runs each measurement as a child process,
//! alternating framework and baseline, and prints the medians.

use std::process::Stdio;
use std::time::Instant;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::Args;
use crate::count::Counter;
use crate::sqs;

/// Runs this binary with `args`; returns its `RESULT` line's JSON.
async fn child(args: &[&str]) -> Value {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut c = cmd.spawn().expect("spawn child");
    let mut lines = BufReader::new(c.stdout.take().expect("stdout")).lines();
    let mut result = None;
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(json) = line.strip_prefix("RESULT ") {
            result = Some(serde_json::from_str(json).expect("child JSON"));
        }
    }
    let status = c.wait().await.expect("wait child");
    assert!(status.success(), "child {args:?} failed: {status}");
    result.expect("child printed no RESULT")
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn col(runs: &[Value], key: &str) -> Vec<f64> {
    runs.iter().map(|r| f(r, key)).collect()
}

/// A server's name in the tables: the fake one with its latency.
fn label(server: &str, latency_ms: u64) -> String {
    if server == "fake" {
        format!("fake ({latency_ms} ms per call)")
    } else {
        server.to_owned()
    }
}

/// The whole suite.
pub(crate) async fn run(args: &Args) {
    let endpoint = args.str("endpoint").to_owned();
    let rounds: usize = args.num("rounds", 5);
    let only: String = args.num("only", "drain,idle,hol,lambda,vis".to_owned());
    let servers = servers(args);
    let counter = Counter::default();
    let client = sqs::client(&endpoint, &counter).await;
    println!("# sqs-worker-bench against {endpoint}, {rounds} rounds");
    let suite = Suite {
        args,
        endpoint,
        rounds,
        client,
    };
    if only.contains("drain") {
        for &(server, latency_ms) in &servers {
            drain(&suite, server, latency_ms).await;
        }
    }
    if only.contains("idle") {
        idle(&suite).await;
    }
    if only.contains("hol") {
        for &(server, latency_ms) in &servers {
            hol(&suite, server, latency_ms).await;
        }
    }
    if only.contains("lambda") {
        lambda(args).await;
    }
    if only.contains("vis") {
        vis(&suite).await;
    }
}

/// What the workloads of a run share.
struct Suite<'a> {
    args: &'a Args,
    /// The SQS endpoint (moto's server) for the workloads that are not on the fake server.
    endpoint: String,
    rounds: usize,
    /// A client of `endpoint`, to create, fill and delete queues.
    client: aws_sdk_sqs::Client,
}

/// `--servers` and `--latencies`: the fake server once per latency (ms),
/// moto as it is.
fn servers(args: &Args) -> Vec<(&'static str, u64)> {
    let servers_arg: String = args.num("servers", "fake,moto".to_owned());
    let latencies_arg: String = args.num("latencies", "0,15".to_owned());
    let latencies: Vec<u64> = latencies_arg
        .split(',')
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    servers_arg
        .split(',')
        .flat_map(|s| match s.trim() {
            "fake" => latencies.iter().map(|&l| ("fake", l)).collect::<Vec<_>>(),
            "moto" => vec![("moto", 0)],
            other => panic!("unknown server {other:?} in --servers (fake, moto)"),
        })
        .collect()
}

/// A fake server holding `n` messages, answering after `latency`: its
/// endpoint and its one queue's URL.
async fn fake_queue(n: u64, latency: std::time::Duration) -> (String, String) {
    let ep = crate::fake::start(n, latency).await;
    let url = format!("{ep}/123456789012/fake");
    (ep, url)
}

/// One measured child: `workload` with implementation `which` on `n`
/// messages of the queue at `url` on `endpoint`.
async fn measure(workload: &str, (endpoint, url): (&str, &str), which: &str, n: u64) -> Value {
    let n = n.to_string();
    child(&[
        workload,
        "--endpoint",
        endpoint,
        "--queue",
        url,
        "--impl",
        which,
        "--n",
        &n,
    ])
    .await
}

/// Workload 1: drain a queue, the raw loop and the poller alternating.
async fn drain(suite: &Suite<'_>, server: &str, latency_ms: u64) {
    let latency = std::time::Duration::from_millis(latency_ms);
    let label = label(server, latency_ms);
    let n: u64 = if server == "fake" {
        suite.args.num("fake-drain-n", 20_000)
    } else {
        suite.args.num("drain-n", 3000)
    };
    let prefill = suite.args.num("prefill", 0u8) == 1;
    let (low, high): (u64, u64) = (suite.args.num("low", 50), suite.args.num("high", 100));
    if server == "fake" {
        println!("drain on the in-memory fake SQS ({latency_ms} ms per call): {n} messages ready");
    } else if prefill {
        println!("drain: queue pre-filled with {n} messages");
    } else {
        println!("drain: produced while consuming (parent process), queue depth kept {low}-{high}");
    }
    let mut by: [(String, Vec<Value>); 2] =
        [("raw".into(), Vec::new()), ("poller".into(), Vec::new())];
    for r in 0..suite.rounds {
        for k in 0..2 {
            let which = if (r + k) % 2 == 0 { "raw" } else { "poller" };
            let (endpoint, url) = if server == "fake" {
                fake_queue(n, latency).await
            } else {
                let url = sqs::create_queue(&suite.client, "bench-drain", &[]).await;
                (suite.endpoint.clone(), url)
            };
            let t = Instant::now();
            let feeder = if server == "fake" {
                None
            } else if prefill {
                sqs::fill(&suite.client, &url, 0, n).await;
                None
            } else {
                Some(tokio::spawn(sqs::feed(
                    suite.client.clone(),
                    url.clone(),
                    n,
                    low,
                    high,
                )))
            };
            let fill_s = t.elapsed().as_secs_f64();
            let v = measure("drain", (&endpoint, &url), which, n).await;
            if let Some(f) = feeder {
                f.await.expect("feeder");
            }
            let left = if server == "fake" {
                (0, 0)
            } else {
                let left = sqs::depth(&suite.client, &url).await;
                sqs::delete_queue(&suite.client, &url).await;
                left
            };
            println!(
                "drain {label} round {r} {which:<6} fill {fill_s:.1}s  drained {:.2}s  wall {:.2}s  cpu {:.1} µs/msg  \
                 req/msg {:.4}  hwm {} KiB  left {left:?}  {}",
                f(&v, "drained_s"),
                f(&v, "wall_s"),
                f(&v, "cpu_us_per_msg"),
                f(&v, "requests_per_msg"),
                v["vm_hwm_kib"],
                v["by_action"]
            );
            by[usize::from(which == "poller")].1.push(v);
        }
    }
    print_drain(&label, n, suite.rounds, &by);
}

/// The drain table of one server, and the CPU ratio.
fn print_drain(label: &str, n: u64, rounds: usize, by: &[(String, Vec<Value>); 2]) {
    let (raw, pol) = (&by[0].1, &by[1].1);
    let ratios: Vec<f64> = raw
        .iter()
        .zip(pol)
        .map(|(a, b)| f(b, "cpu_us_per_msg") / f(a, "cpu_us_per_msg"))
        .collect();
    println!("\n## drain on {label}, N = {n}, medians of {rounds}");
    println!(
        "| consumer | drained s | msgs/s | wall s (with shutdown) | CPU µs/msg | req/msg | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, runs) in by {
        let drained = median(col(runs, "drained_s"));
        println!(
            "| {name} | {drained:.2} | {:.0} | {:.2} | {:.1} | {:.4} | {:.1} |",
            n as f64 / drained,
            median(col(runs, "wall_s")),
            median(col(runs, "cpu_us_per_msg")),
            median(col(runs, "requests_per_msg")),
            median(col(runs, "vm_hwm_kib")) / 1024.0
        );
    }
    println!(
        "CPU ratio poller/raw (median of per-round ratios): {:.3} (runs {:?})",
        median(ratios.clone()),
        ratios
            .iter()
            .map(|r| (r * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>()
    );
}

/// Workload 2: an idle worker's memory and CPU on an empty queue.
async fn idle(suite: &Suite<'_>) {
    let mut rows = Vec::new();
    for which in ["raw", "poller"] {
        let url = sqs::create_queue(&suite.client, "bench-idle", &[]).await;
        let v = child(&[
            "idle",
            "--endpoint",
            &suite.endpoint,
            "--queue",
            &url,
            "--impl",
            which,
        ])
        .await;
        sqs::delete_queue(&suite.client, &url).await;
        println!(
            "idle {which:<6} rss {} KiB  hwm {} KiB  cpu {:.1} ms in {}s  requests {}",
            v["vm_rss_kib"],
            v["vm_hwm_kib"],
            f(&v, "cpu_ms"),
            v["secs"],
            v["requests"]
        );
        rows.push(v);
    }
}

/// Workload 3: head-of-line blocking, the poller against a whole-batch loop
/// and a plain loop of tasks.
async fn hol(suite: &Suite<'_>, server: &str, latency_ms: u64) {
    let latency = std::time::Duration::from_millis(latency_ms);
    let label = label(server, latency_ms);
    let n: u64 = if server == "fake" {
        suite.args.num("fake-hol-n", 6000)
    } else {
        suite.args.num("hol-n", 1000)
    };
    let hol_rounds: usize = suite.args.num("hol-rounds", suite.rounds.min(3));
    let impls = ["poller", "batch", "tasks"];
    let mut by: Vec<Vec<Value>> = vec![Vec::new(); impls.len()];
    for r in 0..hol_rounds {
        for k in 0..impls.len() {
            let idx = (r + k) % impls.len();
            let which = impls[idx];
            let (endpoint, url, feeder) = if server == "fake" {
                let (ep, url) = fake_queue(n, latency).await;
                (ep, url, None)
            } else {
                let url = sqs::create_queue(&suite.client, "bench-hol", &[]).await;
                let f = tokio::spawn(sqs::feed(suite.client.clone(), url.clone(), n, 50, 100));
                (suite.endpoint.clone(), url, Some(f))
            };
            let v = measure("hol", (&endpoint, &url), which, n).await;
            if let Some(f) = feeder {
                f.await.expect("feeder");
                sqs::delete_queue(&suite.client, &url).await;
            }
            println!(
                "hol {label} round {r} {which:<6} makespan {:.2}s  ideal {:.2}s  {:.1}% of ideal  \
                 steady {:.1}%  receives {}  requests {}",
                f(&v, "makespan_s"),
                f(&v, "ideal_s"),
                100.0 * f(&v, "of_ideal"),
                100.0 * f(&v, "steady_utilization"),
                v["receives"],
                v["requests"]
            );
            by[idx].push(v);
        }
    }
    println!("\n## head-of-line on {label}, N = {n}, concurrency 10, medians of {hol_rounds}");
    println!(
        "| consumer | makespan s | ideal s | % of ideal | steady-state % of ideal | requests/msg |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, runs) in impls.iter().zip(&by) {
        println!(
            "| {name} | {:.2} | {:.2} | {:.1}% | {:.1}% | {:.3} |",
            median(col(runs, "makespan_s")),
            median(col(runs, "ideal_s")),
            100.0 * median(col(runs, "of_ideal")),
            100.0 * median(col(runs, "steady_utilization")),
            median(col(runs, "requests")) / n as f64
        );
    }
}

/// Workload 6: visibility extension of long handlers by two pollers.
async fn vis(suite: &Suite<'_>) {
    let n: u64 = suite.args.num("vis-n", 20);
    let url = sqs::create_queue(&suite.client, "bench-vis", &[("VisibilityTimeout", "5")]).await;
    sqs::fill(&suite.client, &url, 0, n).await;
    let ns = n.to_string();
    let v = child(&[
        "vis",
        "--endpoint",
        &suite.endpoint,
        "--queue",
        &url,
        "--n",
        &ns,
    ])
    .await;
    sqs::delete_queue(&suite.client, &url).await;
    println!("\n## visibility extension, {n} messages, 12 s handlers, 5 s visibility, 2 pollers");
    println!(
        "distinct handled {}  deliveries {}  duplicates {}  ChangeMessageVisibilityBatch {}  \
         ChangeMessageVisibility {}  left (visible, in flight) ({}, {})  all handled after {:.1}s",
        v["distinct_handled"],
        v["deliveries"],
        v["duplicates"],
        v["change_visibility_batch"],
        v["change_visibility"],
        v["left_visible"],
        v["left_in_flight"],
        f(&v, "handled_after_s")
    );
    println!("pollers: {}", v["pollers"]);
}

/// Workloads 4 and 5: the Lambda function's cold start and warm
/// invocations, each build given to `--orders` against `plain-lambda`.
async fn lambda(args: &Args) {
    // Comma-separated: several builds of the function alternate with the floor.
    let orders: String = args.num("orders", "target/release/examples/orders".to_owned());
    let plain: String = args.num("plain-lambda", sibling("plain-lambda"));
    let mut exes: Vec<&str> = orders
        .split(',')
        .filter(|e| std::path::Path::new(e).exists())
        .collect();
    if exes.is_empty() {
        println!(
            "\nLambda cold start skipped: {orders} not built (cargo build --release --example orders)"
        );
    } else {
        let runs: usize = args.num("lambda-runs", 7);
        // 1 (default): record 3 fails (no amount); 0: all succeed.
        let failing = args.num("lambda-failing", 1u8) == 1;
        let functions = exes.len();
        if std::path::Path::new(&plain).exists() {
            exes.push(plain.as_str());
        } else {
            println!("\nLambda cold-start floor skipped: {plain} not built");
        }
        let v = crate::lambda_start::run(&exes, runs, failing).await;
        let which = if failing {
            "record 3 failing"
        } else {
            "all succeeding"
        };
        println!(
            "\n## Lambda cold start, 10 records, {which}, median of {runs} alternating \
             rounds (stripped copies)"
        );
        println!("| function | first /next ms | first response ms | peak RSS MiB |");
        println!("|---|---|---|---|");
        for r in &v {
            println!(
                "| {} | {:.1} | {:.1} | {:.1} |",
                r["exe"].as_str().unwrap_or_default(),
                f(r, "first_next_ms_median"),
                f(r, "first_response_ms_median"),
                f(r, "peak_rss_mib_median")
            );
        }
        if v.len() > functions {
            let floor = &v[functions];
            for r in &v[..functions] {
                let rss = f(r, "peak_rss_mib_median") - f(floor, "peak_rss_mib_median");
                println!(
                    "{} - plain: first response {:+.1} ms, peak RSS {:+.2} MiB ({:+.2} MB)",
                    r["exe"].as_str().unwrap_or_default(),
                    f(r, "first_response_ms_median") - f(floor, "first_response_ms_median"),
                    rss,
                    rss * 1.048_576
                );
            }
        }
        for r in &v {
            println!("response of {}: {}", r["exe"], r["response"]);
        }
        // Warm invocations: `--lambda-warm 0` skips them.
        let events: usize = args.num("lambda-warm", 1000);
        if events > 0 {
            let runs: usize = args.num("lambda-warm-runs", 5);
            let log: String = args.num("lambda-warm-log", "off".to_owned());
            let v = crate::lambda_warm::run(&exes, (runs, events), &log).await;
            println!(
                "\n## Lambda warm invocations, 10 records, all succeeding, no pause in the handler, \
                 RUST_LOG={log}, {events} in a row per process, median of {runs} alternating rounds"
            );
            println!("| function | wall µs per invocation | CPU µs per invocation |");
            println!("|---|---|---|");
            for r in &v {
                println!(
                    "| {} | {:.1} | {:.1} |",
                    r["exe"].as_str().unwrap_or_default(),
                    f(r, "wall_us_median"),
                    f(r, "cpu_us_median")
                );
            }
            if v.len() > functions {
                let floor = &v[functions];
                for r in &v[..functions] {
                    println!(
                        "{} ÷ plain: wall {:.2}x ({:+.1} µs), CPU {:.2}x ({:+.1} µs)",
                        r["exe"].as_str().unwrap_or_default(),
                        f(r, "wall_us_median") / f(floor, "wall_us_median"),
                        f(r, "wall_us_median") - f(floor, "wall_us_median"),
                        f(r, "cpu_us_median") / f(floor, "cpu_us_median"),
                        f(r, "cpu_us_median") - f(floor, "cpu_us_median")
                    );
                }
            }
        }
    }
}

/// The path of binary `name` next to this one (the bench crate's other
/// binaries).
fn sibling(name: &str) -> String {
    std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.join(name)))
        .map_or_else(|| name.to_owned(), |p| p.to_string_lossy().into_owned())
}
