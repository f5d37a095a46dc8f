//! The sqs-worker benchmark suite: the framework against the plainest
//! aws-sdk-sqs loops, measured in the same run on a local SQS server.
//!
//! `scripts/bench.sh` runs everything (it starts moto's server and calls
//! `sqs-worker-bench suite --endpoint URL`). Each measured consumer runs in a
//! child process of its own (`sqs-worker-bench drain|hol|vis|idle …`), so its
//! CPU time and peak RSS are its own and the producer (the parent) is not
//! counted. Results are medians over alternating rounds; see BENCHMARKS.md.

mod count;
mod drain;
mod fake;
mod hol;
mod lambda_start;
mod lambda_warm;
mod procfs;
mod produce;
mod sqs;
mod suite;
mod vis;

use std::collections::HashMap;
use std::time::Duration;

const USAGE: &str = "usage:
  sqs-worker-bench suite --endpoint URL [--rounds 5] [--only drain,idle,hol,lambda,vis]
                         [--servers fake,moto] [--drain-n 3000] [--fake-drain-n 20000]
                         [--hol-n 1000] [--fake-hol-n 6000] [--hol-rounds 3] [--vis-n 20]
                         [--latencies 0,15]  (the fake server's per-call latencies, ms)
                         [--prefill 1] [--low 50] [--high 100]
                         [--orders target/release/examples/orders[,OTHER_BUILD...]] [--lambda-runs 7]
                         [--lambda-failing 1 (record 3 fails) | 0 (all succeed)]
                         [--lambda-warm 1000 (warm invocations per process; 0 skips)] [--lambda-warm-runs 5]
                         [--lambda-warm-log off (RUST_LOG of the warm runs)]
                         [--plain-lambda PATH (default: plain-lambda next to this binary)]
  sqs-worker-bench drain --endpoint URL --queue URL --impl raw|poller --n N
                         [--concurrency C] [--receivers R]
  sqs-worker-bench hol   --endpoint URL --queue URL --impl poller|batch|tasks --n N [--concurrency 10]
  sqs-worker-bench vis   --endpoint URL --queue URL --n 20 [--hold-secs 12] [--concurrency 16]
  sqs-worker-bench idle  --endpoint URL --queue URL --impl raw|poller [--secs 5]
  sqs-worker-bench produce --endpoint URL [--servers fake,moto] [--n 10000] [--moto-n N]
                         [--rounds 3] [--body 256]
                         (producer throughput: Sender::send_batch against a SendMessageBatch loop)
  sqs-worker-bench fake-sqs --n N [--latency-ms 0] (serves N messages at URL/123456789012/fake until stdin closes)
Children print one line `RESULT {json}`.";

/// `--key value` pairs.
pub(crate) struct Args(HashMap<String, String>);

impl Args {
    fn parse(args: &[String]) -> Self {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let Some(key) = k.strip_prefix("--") else {
                die(&format!("unexpected argument {k:?}"));
            };
            let Some(v) = it.next() else {
                die(&format!("--{key} needs a value"));
            };
            map.insert(key.to_owned(), v.clone());
        }
        Self(map)
    }

    pub(crate) fn str(&self, key: &str) -> &str {
        self.0
            .get(key)
            .map_or_else(|| die(&format!("--{key} is required")), String::as_str)
    }

    pub(crate) fn opt<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.0.get(key).map(|v| {
            v.parse()
                .unwrap_or_else(|_| die(&format!("--{key}: bad value {v:?}")))
        })
    }

    pub(crate) fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        self.opt(key).unwrap_or(default)
    }
}

fn die(msg: &str) -> ! {
    eprintln!("sqs-worker-bench: {msg}\n{USAGE}");
    std::process::exit(2)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        die("a subcommand is required");
    };
    let args = Args::parse(rest);
    // SQS_WORKER_BENCH_WORKERS: tokio worker threads (default: one per CPU).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("SQS_WORKER_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        builder.worker_threads(n.max(1));
    }
    let rt = builder.enable_all().build().expect("tokio runtime");
    let result = rt.block_on(async {
        match cmd.as_str() {
            "suite" => {
                suite::run(&args).await;
                None
            }
            "drain" => Some(
                drain::run(
                    args.str("endpoint"),
                    args.str("queue"),
                    args.str("impl"),
                    args.num("n", 10_000),
                    args.opt("concurrency"),
                    args.opt("receivers"),
                )
                .await,
            ),
            "hol" => Some(
                hol::run(
                    args.str("endpoint"),
                    args.str("queue"),
                    args.str("impl"),
                    args.num("n", 3000),
                    args.num("concurrency", 10),
                )
                .await,
            ),
            "vis" => Some(
                vis::run(
                    args.str("endpoint"),
                    args.str("queue"),
                    args.num("n", 20),
                    Duration::from_secs_f64(args.num("hold-secs", 12.0)),
                    args.num("concurrency", 16),
                )
                .await,
            ),
            "produce" => {
                produce::run(&args).await;
                None
            }
            "fake-sqs" => {
                // For profiling a consumer by hand: serve until stdin closes.
                let latency = std::time::Duration::from_millis(args.num("latency-ms", 0));
                let url = fake::start(args.num("n", 10_000), latency).await;
                println!("{url}");
                let mut sink = Vec::new();
                let _ =
                    tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut sink).await;
                None
            }
            "idle" => Some(
                drain::idle(
                    args.str("endpoint"),
                    args.str("queue"),
                    args.str("impl"),
                    args.num("secs", 5),
                )
                .await,
            ),
            other => die(&format!("unknown subcommand {other:?}")),
        }
    });
    if let Some(v) = result {
        println!("RESULT {v}");
    }
    // Don't wait for aborted long polls to wind down.
    rt.shutdown_background();
}
