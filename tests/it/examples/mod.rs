//! The examples users copy, run as they run them: each program under
//! `examples/` as a child process against the local server, configured from
//! its environment, and checked by what it did (log lines, messages in
//! queues, items in a table, objects in a bucket), not only by its exit.
//! `examples/orders.rs` is covered by `orders_example` and `demo`,
//! `examples/lambda_function.rs` by its own unit tests.
//!
//! The programs are built by `cargo test --all-features`; with `--test it`
//! alone, build them first: `cargo build --all-features --examples`.
#![allow(clippy::unwrap_used, missing_docs)]

use crate::common;

mod programs;
mod workers;

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

/// The longest any example may run (or take to reach a state) before its
/// test fails with its output.
const LIMIT: Duration = Duration::from_secs(60);
/// Lines of each output stream shown when a test fails.
const TAIL: usize = 40;

// ---------------------------------------------------------------- helpers

/// A running example; its output is collected while it runs.
pub(crate) struct Example {
    name: String,
    child: tokio::process::Child,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

/// What an example did once it exited.
pub(crate) struct Output {
    name: String,
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    stderr: String,
}

fn collect(
    stream: Option<impl tokio::io::AsyncRead + Unpin + Send + 'static>,
) -> JoinHandle<String> {
    let mut stream = stream.unwrap();
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes).await;
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL)..].join("\n")
}

impl Example {
    pub(crate) fn spawn(name: &str, mut cmd: tokio::process::Command) -> Self {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start example {name}: {e}"));
        Self {
            name: name.to_owned(),
            stdout: collect(child.stdout.take()),
            stderr: collect(child.stderr.take()),
            child,
        }
    }

    /// Waits for `cond` (asked every 250 ms); kills the example and fails
    /// with its output when it exits first or `LIMIT` passes.
    pub(crate) async fn wait_until(&mut self, what: &str, mut cond: impl AsyncFnMut() -> bool) {
        let start = Instant::now();
        while !cond().await {
            let exited = self.child.try_wait().unwrap();
            if exited.is_some() || start.elapsed() > LIMIT {
                let out = self.kill().await;
                panic!("never saw {what}: {}", out.report());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// SIGTERM, as ECS or systemd stop a worker.
    pub(crate) fn sigterm(&self) {
        common::signal(self.child.id().expect("the example is running"), "TERM");
    }

    /// Waits for the exit, at most `LIMIT`; then kills it and fails.
    pub(crate) async fn finish(mut self) -> Output {
        match tokio::time::timeout(LIMIT, self.child.wait()).await {
            Ok(status) => self.output(status.unwrap()).await,
            Err(_) => {
                let out = self.kill().await;
                panic!("still running after {LIMIT:?}, killed: {}", out.report());
            }
        }
    }

    async fn kill(&mut self) -> Output {
        let _ = self.child.start_kill();
        let status = self.child.wait().await.unwrap();
        self.output(status).await
    }

    async fn output(&mut self, status: ExitStatus) -> Output {
        Output {
            name: self.name.clone(),
            status,
            stdout: (&mut self.stdout).await.unwrap(),
            stderr: (&mut self.stderr).await.unwrap(),
        }
    }
}

/// Runs example `name` with the common environment and `env` to its exit.
pub(crate) async fn run(name: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = common::example_command(name);
    cmd.envs(env.iter().copied());
    Example::spawn(name, cmd).finish().await
}

impl Output {
    /// The exit status and the last lines of both streams.
    pub(crate) fn report(&self) -> String {
        format!(
            "example {} exited with {}\n--- stdout (last {TAIL} lines):\n{}\n--- stderr (last {TAIL} lines):\n{}",
            self.name,
            self.status,
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }

    pub(crate) fn assert_success(&self) {
        assert!(self.status.success(), "{}", self.report());
    }

    /// The JSON log events (`SQS_WORKER_LOG_FORMAT=json`: stdout, fields
    /// flattened) whose message is `message`.
    pub(crate) fn events(&self, message: &str) -> Vec<Value> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["message"] == message)
            .collect()
    }

    /// A field of the `RunSummary { .. }` line the programs that build
    /// their poller in code print at the end.
    pub(crate) fn summary(&self, field: &str) -> u64 {
        let line = self
            .stdout
            .lines()
            .find(|l| l.starts_with("RunSummary {"))
            .unwrap_or_else(|| panic!("no RunSummary line: {}", self.report()));
        let value = line
            .split_once(&format!(" {field}: "))
            .and_then(|(_, rest)| rest.split([',', ' ']).next()?.parse().ok());
        value.unwrap_or_else(|| panic!("no `{field}` in {line}"))
    }
}

/// A program that builds its poller in code sets up logging itself
/// (`telemetry::init`): its poller's start and stop are logged.
pub(crate) fn assert_logs(out: &Output) {
    for message in ["poller started", "poller stopped"] {
        assert_eq!(
            out.events(message).len(),
            1,
            "`{message}` logged once: {}",
            out.report()
        );
    }
}

/// The queue's depth once every delete has landed (the exit flushes them;
/// the server may take a moment to show it): (visible, in flight).
pub(crate) async fn settled_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    let mut depth = common::depth(sqs, url).await;
    for _ in 0..20 {
        if depth == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        depth = common::depth(sqs, url).await;
    }
    depth
}

/// Receives `n` messages (kept in flight, so each is received once), at
/// most 20 receives; fewer if the queue has fewer.
pub(crate) async fn receive(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    n: usize,
) -> Vec<aws_sdk_sqs::types::Message> {
    let mut got = Vec::new();
    for _ in 0..20 {
        if got.len() >= n {
            break;
        }
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(300)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        got.extend(out.messages().iter().cloned());
    }
    got
}

pub(crate) fn bodies(messages: &[aws_sdk_sqs::types::Message]) -> BTreeSet<String> {
    messages
        .iter()
        .map(|m| m.body().unwrap_or_default().to_owned())
        .collect()
}

/// The field `name` of the events, counted per value (`"7" → 1`).
pub(crate) fn counts(events: &[Value], name: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for e in events {
        *counts.entry(e[name].to_string()).or_default() += 1;
    }
    counts
}
