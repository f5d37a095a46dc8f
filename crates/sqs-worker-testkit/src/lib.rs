//! Test support shared by the workspace's test suites (`tests/it`, the
//! command line's `tests/cli`) and the benchmarks: a real SQS/SNS/S3/DynamoDB
//! server on loopback (moto's standalone server, `scripts/moto_server.py`),
//! started once per process, SDK configuration for it, and queues.
//!
//! Set `SQS_WORKER_TEST_ENDPOINT=http://127.0.0.1:PORT` to use a server you
//! started yourself (`scripts/local-sqs.sh`).
//!
//! These helpers panic with a clear message instead of returning errors: they
//! are for tests.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};

/// The local server.
#[derive(Debug)]
pub struct LocalServer {
    /// Its URL, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _child: Option<Child>,
}

const HOW_TO_INSTALL: &str = "the tests need moto's server on loopback: run \
    `bash scripts/setup.sh` (or `pip install 'moto[server]'`), or point \
    SQS_WORKER_TEST_ENDPOINT at a running server";

/// The server, started on first use; it exits with this process (its stdin,
/// a pipe held by this process, closes).
pub fn server() -> &'static LocalServer {
    static SERVER: OnceLock<LocalServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Ok(endpoint) = std::env::var("SQS_WORKER_TEST_ENDPOINT") {
            return LocalServer {
                endpoint,
                _child: None,
            };
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/moto_server.py");
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

/// An SDK config for the local server, with dummy credentials.
pub async fn sdk_config() -> aws_config::SdkConfig {
    sdk_config_for(&server().endpoint).await
}

/// An SDK config for `endpoint` (the local server, or a proxy in front of
/// it), with dummy credentials.
pub async fn sdk_config_for(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .load()
        .await
}

/// An SQS client for the local server.
pub async fn sqs() -> Client {
    Client::new(&sdk_config().await)
}

/// An SQS client for `endpoint`.
pub async fn sqs_for(endpoint: &str) -> Client {
    Client::new(&sdk_config_for(endpoint).await)
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

/// Creates a queue with attributes (e.g. `("VisibilityTimeout", "5")`);
/// returns its URL.
pub async fn create_queue(client: &Client, name: &str, attrs: &[(&str, &str)]) -> String {
    let mut req = client.create_queue().queue_name(name);
    for (k, v) in attrs {
        req = req.attributes(QueueAttributeName::from(*k), *v);
    }
    let out = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("create_queue {name}: {e:?}"));
    out.queue_url().expect("queue url").to_owned()
}

/// A queue's ARN.
pub async fn queue_arn(client: &Client, url: &str) -> String {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("get_queue_attributes");
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .expect("QueueArn")
        .clone()
}

/// (visible, in flight) message counts of a queue.
pub async fn depth(client: &Client, url: &str) -> (u64, u64) {
    use QueueAttributeName as A;
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

/// Sends `bodies` in batches of 10, every entry checked; returns the message ids.
pub async fn send(client: &Client, url: &str, bodies: &[String]) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| {
                SendMessageBatchRequestEntry::builder()
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
