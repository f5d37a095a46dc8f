//! Shared setup for the integration tests: a real SQS/DynamoDB server on
//! loopback (moto's standalone server), started once per test binary, and a
//! fresh queue per test so tests run in parallel.
//!
//! Set `SQS_WORKER_TEST_ENDPOINT=http://127.0.0.1:PORT` to use a server you
//! started yourself (`scripts/local-sqs.sh`).
#![allow(dead_code, unused_imports, unreachable_pub, missing_docs)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};

mod binaries;
pub mod proxy;
mod running;
pub mod sqs_proxy;

pub use binaries::{example, tool};
pub use running::{Running, run_until, until, until_async};

pub struct LocalServer {
    pub endpoint: String,
    _child: Option<Child>,
}

const HOW_TO_INSTALL: &str = "the integration tests need moto's server on loopback: run \
    `bash scripts/setup.sh` (or `pip install 'moto[server]'`), or point \
    SQS_WORKER_TEST_ENDPOINT at a running server";

/// The server, started on first use (the process exit closes its stdin, which
/// stops it).
pub fn server() -> &'static LocalServer {
    static SERVER: OnceLock<LocalServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Ok(endpoint) = std::env::var("SQS_WORKER_TEST_ENDPOINT") {
            return LocalServer {
                endpoint,
                _child: None,
            };
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/moto_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 {script}: {e}; {HOW_TO_INSTALL}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let endpoint = line.trim().to_owned();
        if read.is_err() || !endpoint.starts_with("http://") {
            let status = child.try_wait().ok().flatten();
            panic!(
                "moto's server did not start (exit {status:?}, said {endpoint:?}); {HOW_TO_INSTALL}"
            );
        }
        LocalServer {
            endpoint,
            _child: Some(child),
        }
    })
}

/// An SDK config pointing at the local server with dummy credentials.
pub async fn sdk_config() -> aws_config::SdkConfig {
    sdk_config_for(&server().endpoint).await
}

/// An SDK config pointing at `endpoint` (e.g. a fault-injecting proxy).
pub async fn sdk_config_for(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .load()
        .await
}

pub async fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&sdk_config().await)
}

/// A name no other test (or test run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a fresh standard queue and returns its URL.
pub async fn queue(client: &aws_sdk_sqs::Client, prefix: &str) -> String {
    create_queue(client, &unique(prefix), &[]).await
}

/// Creates a queue with attributes (e.g. `("VisibilityTimeout", "5")`).
pub async fn create_queue(
    client: &aws_sdk_sqs::Client,
    name: &str,
    attrs: &[(&str, &str)],
) -> String {
    use aws_sdk_sqs::types::QueueAttributeName;
    let mut req = client.create_queue().queue_name(name);
    for (k, v) in attrs {
        req = req.attributes(QueueAttributeName::from(*k), *v);
    }
    let out = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("create_queue {name} on {}: {e:?}", server().endpoint));
    out.queue_url().expect("queue url").to_owned()
}

/// (visible, in flight) message counts of a queue.
pub async fn depth(client: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("get_queue_attributes");
    let attrs = out.attributes().cloned().unwrap_or_default();
    let get = |k: A| attrs.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
    (
        get(A::ApproximateNumberOfMessages),
        get(A::ApproximateNumberOfMessagesNotVisible),
    )
}

/// Sends `bodies` in batches of 10; returns the message ids.
pub async fn send(client: &aws_sdk_sqs::Client, url: &str, bodies: &[String]) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(b)
                    .build()
                    .expect("entry")
            })
            .collect();
        let out = client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("send_message_batch");
        assert!(out.failed().is_empty(), "{:?}", out.failed());
        ids.extend(out.successful().iter().map(|s| s.message_id().to_owned()));
    }
    ids
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

/// The queue's ARN.
pub async fn queue_arn(client: &aws_sdk_sqs::Client, url: &str) -> String {
    use aws_sdk_sqs::types::QueueAttributeName;
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("get_queue_attributes");
    out.attributes().expect("attributes")[&QueueAttributeName::QueueArn].clone()
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
