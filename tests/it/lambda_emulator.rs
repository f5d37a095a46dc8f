//! End to end against a real Lambda Runtime API emulator: `cargo lambda
//! watch --only-lambda-apis` serves the Runtime API, the `orders` example
//! binary (built by `cargo test`) polls it exactly as it would in AWS Lambda,
//! and `cargo lambda invoke` sends it a standard and a FIFO SQS event.
//!
//! Needs cargo-lambda 1.9.2: `bash scripts/setup.sh`, or
//! `pip install cargo-lambda==1.9.2`. Without it the test fails (it never
//! skips).

// Test-only helpers: a failed setup step should panic with its error.
#![allow(clippy::unwrap_used)]

use crate::common;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const HOW_TO_INSTALL: &str = "this test needs the Lambda Runtime API emulator of cargo-lambda \
    1.9.2: run `bash scripts/setup.sh`, or `pip install cargo-lambda==1.9.2` (the PyPI wheel puts \
    `cargo-lambda` on PATH)";

/// Kills and reaps the child on drop, so no emulator or function outlives
/// the test.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn temp_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "sqs-worker-emulator-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a command to completion, killing it after `limit`.
fn run_with_limit(cmd: &mut Command, limit: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}; {HOW_TO_INSTALL}"));
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} did not finish within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_of(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// Starts the emulator; returns it, the Runtime API environment it printed,
/// and its log path.
fn start_emulator(dir: &Path, port: u16) -> (Killed, Vec<(String, String)>, PathBuf) {
    let version = Command::new("cargo").args(["lambda", "--version"]).output();
    match version {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`cargo lambda --version` failed ({}): {}; {HOW_TO_INSTALL}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("cannot run `cargo lambda`: {e}; {HOW_TO_INSTALL}"),
    }
    // `cargo lambda watch` reads a Cargo manifest in its directory: give it
    // an empty package rather than the workspace (no lock taken on it).
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"emulator\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
         [[bin]]\nname = \"emulator\"\npath = \"main.rs\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("main.rs"), "fn main() {}\n").unwrap();
    let log = dir.join("emulator.log");
    let child = Command::new("cargo")
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "-A",
            "127.0.0.1",
            "-P",
        ])
        .arg(port.to_string())
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("emulator.err")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `cargo lambda watch`: {e}; {HOW_TO_INSTALL}"));
    let mut emulator = Killed(child);
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = emulator.0.try_wait().unwrap() {
            panic!(
                "`cargo lambda watch` exited ({status}) before serving: {}{}; {HOW_TO_INSTALL}",
                log_of(&log),
                log_of(&dir.join("emulator.err"))
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "`cargo lambda watch` did not listen on 127.0.0.1:{port} within 15 s: {}{}",
            log_of(&log),
            log_of(&dir.join("emulator.err"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The environment it prints ("AWS_LAMBDA_RUNTIME_API=http://…/.rt", …).
    let printed = format!("{}\n{}", log_of(&log), log_of(&dir.join("emulator.err")));
    let mut env: Vec<(String, String)> = printed
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("AWS_LAMBDA_")))
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for (k, v) in [
        ("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}/.rt")),
        ("AWS_LAMBDA_FUNCTION_NAME", "_".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "1".to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
    ] {
        if !env.iter().any(|(name, _)| name == k) {
            env.push((k.to_owned(), v));
        }
    }
    (emulator, env, log)
}

/// Invokes the function with `event`; the response JSON, or the error text.
fn invoke(
    dir: &Path,
    port: u16,
    name: &str,
    event: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let file = dir.join(name);
    std::fs::write(&file, serde_json::to_vec(event).unwrap()).unwrap();
    let out = run_with_limit(
        Command::new("cargo")
            .args(["lambda", "invoke", "-A", "127.0.0.1", "--invoke-port"])
            .arg(port.to_string())
            .arg("--data-file")
            .arg(&file)
            .arg("_")
            .env("NO_COLOR", "1"),
        Duration::from_secs(20),
        "cargo lambda invoke",
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_str(stdout.trim()).map_err(|e| format!("not JSON ({e}): {stdout}"))
}

fn failed_ids(resp: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = resp["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("no batchItemFailures in {resp}"))
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn record(id: &str, body: &str, group: Option<&str>) -> serde_json::Value {
    let queue = if group.is_some() {
        "orders.fifo"
    } else {
        "orders"
    };
    let mut attributes = serde_json::json!({
        "ApproximateReceiveCount": "1",
        "SentTimestamp": "1545082649183",
        "SenderId": "AIDAIENQZJOLO23YVJ4VO",
        "ApproximateFirstReceiveTimestamp": "1545082649185"
    });
    if let Some(g) = group {
        attributes["MessageGroupId"] = g.into();
        attributes["MessageDeduplicationId"] = id.into();
        attributes["SequenceNumber"] = "18849496460467696128".into();
    }
    serde_json::json!({
        "messageId": id,
        "receiptHandle": format!("AQEB-{id}"),
        "body": body,
        "attributes": attributes,
        "messageAttributes": {
            "tenant": {"stringValue": "acme", "stringListValues": [], "binaryListValues": [], "dataType": "String"}
        },
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{queue}"),
        "awsRegion": "us-east-1"
    })
}

fn order(id: u64) -> String {
    format!(r#"{{"order_id": {id}, "customer": "c-{id}", "amount_cents": 1999}}"#)
}

#[test]
fn the_orders_example_answers_batch_item_failures_through_the_runtime_api() {
    let started = Instant::now();
    let bin = common::example("orders");
    let dir = temp_dir();
    let port = free_port();
    let (_emulator, lambda_env, emulator_log) = start_emulator(&dir, port);

    let function_log = dir.join("function.log");
    let mut cmd = Command::new(&bin);
    cmd.envs(lambda_env)
        // No DLQ: a permanent failure is reported (the redrive policy applies).
        .env_remove("SQS_WORKER_DLQ_URL")
        .env_remove("SQS_QUEUE_URL")
        .env_remove("ORDERS_FAIL_EVERY")
        // With the sqs-client feature the function also tries to apply retry
        // delays; point it at a closed local port so that call fails at once
        // (logged, the record still reported) instead of reaching for AWS.
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&function_log).unwrap())
        .stderr(std::fs::File::create(dir.join("function.err")).unwrap());
    let function = Killed(cmd.spawn().unwrap());
    let logs = || {
        format!(
            "\n--- function ---\n{}{}\n--- emulator ---\n{}",
            log_of(&function_log),
            log_of(&dir.join("function.err")),
            log_of(&emulator_log)
        )
    };

    let standard = serde_json::json!({"Records": [
        record("std-1", &order(1), None),
        record("std-2", "this is not an order", None),
        record("std-3", &order(3), None),
    ]});
    let resp = invoke(&dir, port, "standard.json", &standard)
        .unwrap_or_else(|e| panic!("standard event: {e}{}", logs()));
    assert_eq!(failed_ids(&resp), ["std-2"], "{resp}{}", logs());

    // FIFO: a2's body is not an order, so a3 (same group, later) must not
    // run; group B is unaffected.
    let fifo = serde_json::json!({"Records": [
        record("a1", &order(11), Some("A")),
        record("b1", &order(21), Some("B")),
        record("a2", "{\"order_id\": \"twelve\"}", Some("A")),
        record("a3", &order(13), Some("A")),
        record("b2", &order(22), Some("B")),
    ]});
    let resp = invoke(&dir, port, "fifo.json", &fifo)
        .unwrap_or_else(|e| panic!("FIFO event: {e}{}", logs()));
    assert_eq!(failed_ids(&resp), ["a2", "a3"], "{resp}{}", logs());

    // Not an SQS event: a function error with a clear message.
    let err = invoke(
        &dir,
        port,
        "other.json",
        &serde_json::json!({"detail-type": "Scheduled Event"}),
    )
    .expect_err("a non-SQS event must be a function error");
    // `cargo lambda invoke` wraps the message in a box: compare its words.
    let words = err
        .split(|c: char| c.is_whitespace() || c == '│')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        words.contains("expects an Amazon SQS event") && words.contains("SqsWorker.MalformedEvent"),
        "{err}{}",
        logs()
    );

    let log = log_of(&function_log);
    assert!(
        log.contains("std-2") && log.contains("permanent"),
        "the failure is logged{}",
        logs()
    );
    assert!(
        !log.contains("this is not an order"),
        "bodies are never logged{}",
        logs()
    );
    // CloudWatch EMF: after each invocation the function writes its metrics
    // as EMF lines on stdout (installed by `sqs_worker::run` inside Lambda).
    let emf: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    let total = |name: &str, kind: Option<&str>| -> u64 {
        emf.iter()
            .filter(|v| kind.is_none_or(|k| v["kind"] == k))
            .filter_map(|v| v[name].as_u64())
            .sum()
    };
    assert_eq!(
        total("sqs_worker_messages_succeeded_total", None),
        5,
        "EMF{}",
        logs()
    );
    assert_eq!(
        total("sqs_worker_messages_failed_total", Some("permanent")),
        2,
        "EMF{}",
        logs()
    );
    assert_eq!(
        total("sqs_worker_messages_failed_total", Some("group_blocked")),
        1,
        "EMF{}",
        logs()
    );
    assert!(
        emf.iter()
            .all(|v| v["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "sqs-worker"),
        "EMF{}",
        logs()
    );
    drop(function);
    eprintln!("emulator test took {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}
