//! Shared setup for the integration tests: the local server and queue
//! helpers of `sqs-worker-testkit` (moto's standalone server on loopback,
//! started once per test binary), a fresh queue per test so tests run in
//! parallel, and what only these tests need (proxies, pollers, fixtures, S3).
#![allow(dead_code, unused_imports, unreachable_pub, missing_docs)]

mod binaries;
pub mod fair_queue;
pub mod proxy;
mod running;
pub mod sqs_proxy;

pub use binaries::{example, example_command, tool};
pub use running::{Running, run_until, until, until_async};

pub use sqs_worker_testkit::{
    LocalServer, create_queue, depth, queue_arn, sdk_config, sdk_config_for, send, server, sqs,
    unique,
};

/// Creates a fresh standard queue and returns its URL.
pub async fn queue(client: &aws_sdk_sqs::Client, prefix: &str) -> String {
    create_queue(client, &unique(prefix), &[]).await
}

/// Logs to the test's output (`RUST_LOG`, default warnings and the poller's
/// info), once per process.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,sqs_worker_poller=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A JSON fixture of `tests/fixtures`.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// --- S3 (large payloads; owner: producer) ---

/// An S3 client on the local server (path-style addressing, as moto needs).
pub async fn s3() -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(&sdk_config().await)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Creates a fresh bucket and returns its name.
pub async fn bucket(client: &aws_sdk_s3::Client, prefix: &str) -> String {
    let name = unique(prefix).to_ascii_lowercase();
    client
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create_bucket {name}: {e:?}"));
    name
}

/// Whether an object exists.
pub async fn object_exists(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> bool {
    client
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .is_ok()
}

/// A new SNS topic with the queue of `queue_arn` subscribed to it (raw
/// message delivery or the SNS envelope); returns the topic ARN.
pub async fn sns_topic_to(sns: &aws_sdk_sns::Client, queue_arn: &str, raw: bool) -> String {
    let topic = sns
        .create_topic()
        .name(unique(if raw { "raw" } else { "wrapped" }))
        .send()
        .await
        .unwrap();
    let topic = topic.topic_arn().unwrap().to_owned();
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(queue_arn)
        .attributes("RawMessageDelivery", raw.to_string())
        .send()
        .await
        .unwrap();
    topic
}

/// Sends `signal` (`TERM`, `STOP`, `CONT`) to process `pid`, as ECS, systemd
/// or a shell would.
pub fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{signal} {pid}");
}
