//! README command 1: the demo driver (`crates/sqs-worker-tools/src/bin/sqs-worker-demo.rs`,
//! what `scripts/demo.sh` runs) against the local server, with fewer orders.
//! It must finish with its own checks passed: every order processed once
//! (those that fail once on purpose included), the poison message
//! dead-lettered and left visible in the dead-letter queue, the worker out
//! with exit code 0 after SIGTERM.
#![allow(clippy::unwrap_used, missing_docs)]

use std::process::{Command, Stdio};

use crate::common;

#[tokio::test]
async fn the_demo_finishes_with_every_order_processed_and_the_poison_dead_lettered() {
    let out = tokio::task::spawn_blocking(|| {
        Command::new(common::tool("sqs-worker-demo"))
            .env("SQS_WORKER_DEMO_ENDPOINT", &common::server().endpoint)
            .env("SQS_WORKER_DEMO_WORKER", common::example("orders"))
            // 5 orders fail once (ids 40, 80, …, 200), then succeed.
            .env("DEMO_ORDERS", "200")
            .env("ORDERS_FAIL_EVERY", "40")
            .env_remove("SQS_WORKER_RETRY_WINDOW_SECONDS")
            // Inherited by the worker: 1 s receives, so that its exit after
            // SIGTERM does not wait out a 20 s long poll on an empty queue.
            .env("SQS_WORKER_WAIT_SECONDS", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stdout.lines().rev().take(20).collect();
    let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(
        out.status.success() && stdout.contains("demo OK"),
        "the demo failed ({}):\n{tail}\nstderr:\n{stderr}",
        out.status
    );
    let line = |label: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` line:\n{tail}"))
            .to_owned()
    };
    assert!(
        line("processed ").contains(" 200 orders"),
        "{}",
        line("processed ")
    );
    assert!(line("retried ").contains(" 5 "), "{}", line("retried "));
    assert!(
        line("dead-lettered ").contains(" 1 "),
        "{}",
        line("dead-lettered ")
    );
    // The driver only peeks at the dead-letter queue: the poison message is
    // still visible for `sqs-worker dlq inspect`, which scripts/demo.sh runs next.
    let dlq = line("dead-letter ");
    let dlq = dlq.split_whitespace().nth(1).unwrap();
    assert_eq!(common::depth(&common::sqs().await, dlq).await, (1, 0));
}
