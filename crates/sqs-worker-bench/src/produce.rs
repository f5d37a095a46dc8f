//! Producer throughput: `Sender::send_batch` against a plain
//! `SendMessageBatch` loop (10 entries per request, the same 8 requests in
//! flight), alternating in the same process, on moto or the in-memory fake
//! (run as a child process, so its CPU is not counted). Per round: messages
//! per second, requests per message, and this process's CPU per message.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
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
    let (cpu0, t0) = (procfs::cpu_ns(), Instant::now());
    let sent = if which == "raw" {
        raw(&client, &url, bodies).await
    } else {
        let results = sender
            .send_batch(bodies.into_iter().map(Outgoing::new).collect::<Vec<_>>())
            .await;
        results.iter().filter(|r| r.is_ok()).count()
    };
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), procfs::cpu_ns() - cpu0);
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
    })
}

/// The baseline: `SendMessageBatch` of 10, `PARALLEL` requests in flight.
async fn raw(client: &aws_sdk_sqs::Client, url: &str, bodies: Vec<String>) -> usize {
    let chunks: Arc<Vec<Vec<String>>> = Arc::new(bodies.chunks(10).map(<[_]>::to_vec).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..PARALLEL {
        let (client, url, chunks, next) =
            (client.clone(), url.to_owned(), chunks.clone(), next.clone());
        tasks.spawn(async move {
            let mut ok = 0;
            while let Some(chunk) = chunks.get(next.fetch_add(1, Relaxed)) {
                let entries = chunk.iter().enumerate().map(|(i, b)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(b.clone())
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
    println!("| impl | messages/s | requests/message | CPU µs/message |");
    println!("|---|---|---|---|");
    for which in ["raw", "sender"] {
        println!(
            "| {which} | {:.0} | {:.3} | {:.1} |",
            med(which, "msgs_per_s"),
            med(which, "requests_per_msg"),
            med(which, "cpu_us_per_msg")
        );
    }
    println!(
        "CPU ratio sender/raw (medians): {:.3}",
        med("sender", "cpu_us_per_msg") / med("raw", "cpu_us_per_msg")
    );
}
