//! Producer throughput: `Sender::send_batch` against a plain
//! `SendMessageBatch` loop (10 entries per request, the same 8 requests in
//! flight), alternating in the same process, on moto or the in-memory fake
//! (run as a child process, so its CPU is not counted). Per round: messages
//! per second, requests per message, this process's CPU per message, and how
//! often its threads were switched onto a CPU per request (wake-ups of
//! parked runtime workers show there, not in instruction counts).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use serde_json::{Value, json};
use sqs_worker_producer::{Outgoing, Sender};
use tokio::io::AsyncBufReadExt;

use crate::count::Counter;
use crate::{Args, procfs, sqs};

/// Requests in flight, as the producer's `send_batch` keeps them.
const PARALLEL: usize = 8;

fn body(i: usize, len: usize) -> String {
    let mut s = format!("{{\"i\":{i},\"pad\":\"");
    s.extend(std::iter::repeat_n('x', len.saturating_sub(s.len() + 2)));
    s.push_str("\"}");
    s
}

/// `produce --endpoint URL [--servers fake,moto] [--n 10000] [--moto-n N]
/// [--rounds 3] [--body 256] [--only raw|sender]`: `--moto-n` (default `--n`)
/// for moto, which accepts tens to hundreds of messages per second; `--only`
/// runs one side (for an instruction count under callgrind, one side per run).
pub(crate) async fn run(args: &Args) {
    let fake_n: usize = args.num("n", 10_000);
    let moto_n: usize = args.num("moto-n", fake_n);
    let rounds: usize = args.num("rounds", 3);
    let len: usize = args.num("body", 256);
    let servers: String = args.num("servers", "fake,moto".to_owned());
    let only: String = args.num("only", String::new());
    for server in servers.split(',') {
        let n = if server == "fake" { fake_n } else { moto_n };
        let (endpoint, _fake) = if server == "fake" {
            let (ep, child) = start_fake().await;
            (ep, Some(child))
        } else {
            (args.str("endpoint").to_owned(), None)
        };
        println!("\n## producer on {server}, N = {n}, {len}-byte bodies, {rounds} rounds");
        let mut runs: Vec<(&str, Value)> = Vec::new();
        for r in 0..rounds {
            let order: [&str; 2] = if r % 2 == 0 {
                ["raw", "sender"]
            } else {
                ["sender", "raw"]
            };
            for which in order {
                if !only.is_empty() && only != which {
                    continue;
                }
                let v = round(server, &endpoint, which, n, len).await;
                println!("round {r} {which}: {v}");
                runs.push((which, v));
            }
        }
        report(&runs);
    }
}

/// Starts `sqs-worker-bench fake-sqs` as a child; it serves until dropped
/// (its stdin closes).
async fn start_fake() -> (String, tokio::process::Child) {
    let exe = std::env::current_exe().expect("own path");
    let mut child = tokio::process::Command::new(exe)
        .args(["fake-sqs", "--n", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the fake SQS");
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::io::BufReader::new(out)
        .read_line(&mut line)
        .await
        .expect("the fake's URL");
    (line.trim().to_owned(), child)
}

async fn round(server: &str, endpoint: &str, which: &str, n: usize, len: usize) -> Value {
    let counter = Counter::default();
    let client = sqs::client(endpoint, &counter).await;
    let url = if server == "fake" {
        format!("{endpoint}/123456789012/fake")
    } else {
        sqs::create_queue(&client, "bench-produce", &[]).await
    };
    let sender = Sender::new(client.clone(), &url).await.expect("sender");
    let bodies: Vec<String> = (0..n).map(|i| body(i, len)).collect();
    counter.reset();
    let (cpu0, slices0, t0) = (procfs::cpu_ns(), procfs::timeslices(), Instant::now());
    let sent = if which == "raw" {
        raw(&client, &url, bodies).await
    } else {
        let results = sender
            .send_batch(bodies.into_iter().map(Outgoing::new).collect::<Vec<_>>())
            .await;
        results.iter().filter(|r| r.is_ok()).count()
    };
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), procfs::cpu_ns() - cpu0);
    let slices = procfs::timeslices() - slices0;
    let requests = counter.total();
    if server != "fake" {
        sqs::delete_queue(&client, &url).await;
    }
    assert_eq!(sent, n, "{which}: every message accepted");
    json!({
        "msgs_per_s": n as f64 / wall,
        "requests_per_msg": requests as f64 / n as f64,
        "cpu_us_per_msg": cpu as f64 / 1000.0 / n as f64,
        "wall_s": wall,
        "switches_per_request": slices as f64 / requests.max(1) as f64,
    })
}

/// The baseline: `SendMessageBatch` of 10, `PARALLEL` tasks each sending
/// the next request when its last one is answered. Each body is moved into
/// its entry, as a plain loop that owns its bodies and never retries does
/// (the sender keeps a copy of each entry for its per-entry retries).
async fn raw(client: &aws_sdk_sqs::Client, url: &str, bodies: Vec<String>) -> usize {
    let mut bodies = bodies.into_iter();
    let chunks: Vec<Vec<String>> = std::iter::from_fn(|| {
        let c: Vec<String> = bodies.by_ref().take(10).collect();
        (!c.is_empty()).then_some(c)
    })
    .collect();
    let chunks = Arc::new(Mutex::new(chunks.into_iter()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..PARALLEL {
        let (client, url, chunks) = (client.clone(), url.to_owned(), chunks.clone());
        tasks.spawn(async move {
            let mut ok = 0;
            loop {
                let Some(chunk) = chunks.lock().expect("lock").next() else {
                    break;
                };
                let entries = chunk.into_iter().enumerate().map(|(i, b)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(b)
                        .build()
                        .expect("entry")
                });
                let out = client
                    .send_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries.collect()))
                    .send()
                    .await
                    .expect("SendMessageBatch");
                ok += out.successful().len();
            }
            ok
        });
    }
    tasks.join_all().await.into_iter().sum()
}

fn report(runs: &[(&str, Value)]) {
    let med = |which: &str, key: &str| {
        let v: Vec<f64> = runs
            .iter()
            .filter(|(w, _)| *w == which)
            .filter_map(|(_, r)| r[key].as_f64())
            .collect();
        crate::suite::median(v)
    };
    println!(
        "| impl | messages/s | requests/message | CPU µs/message | thread switch-ins/request |"
    );
    println!("|---|---|---|---|---|");
    for which in ["raw", "sender"] {
        println!(
            "| {which} | {:.0} | {:.3} | {:.1} | {:.2} |",
            med(which, "msgs_per_s"),
            med(which, "requests_per_msg"),
            med(which, "cpu_us_per_msg"),
            med(which, "switches_per_request")
        );
    }
    println!(
        "CPU ratio sender/raw (medians): {:.3}",
        med("sender", "cpu_us_per_msg") / med("raw", "cpu_us_per_msg")
    );
    // Each round ran both sides back to back.
    let per_round: Vec<f64> = runs
        .chunks(2)
        .filter_map(|pair| {
            let cpu = |which: &str| {
                let (_, v) = pair.iter().find(|(w, _)| *w == which)?;
                v["cpu_us_per_msg"].as_f64()
            };
            Some(cpu("sender")? / cpu("raw")?)
        })
        .collect();
    if !per_round.is_empty() {
        let shown: Vec<String> = per_round.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "CPU ratio per round: {} (median {:.3})",
            shown.join(", "),
            crate::suite::median(per_round)
        );
    }
}
