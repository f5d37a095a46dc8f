//! SQS clients (with the request counter) and queue set-up.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::count::Counter;

/// A client for the server at `endpoint`, with dummy credentials, counting
/// its requests in `counter`.
pub(crate) async fn client(endpoint: &str, counter: &Counter) -> Client {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("bench", "bench", None, None, "bench"))
        .load()
        .await;
    let conf = aws_sdk_sqs::config::Builder::from(&sdk)
        .interceptor(counter.clone())
        .build();
    Client::from_conf(conf)
}

/// Creates a queue named `prefix-<pid>-<n>-<nanos>` with `attrs`; returns its URL.
pub(crate) async fn create_queue(client: &Client, prefix: &str, attrs: &[(&str, &str)]) -> String {
    sqs_worker_testkit::create_queue(client, &sqs_worker_testkit::unique(prefix), attrs).await
}

/// Deletes a queue (best effort).
pub(crate) async fn delete_queue(client: &Client, url: &str) {
    let _ = client.delete_queue().queue_url(url).send().await;
}

/// Sends messages `from..to` (body `{"i":N}`) in batches of 10, 4 at a time.
pub(crate) async fn fill(client: &Client, url: &str, from: u64, to: u64) {
    let mut tasks = tokio::task::JoinSet::new();
    let starts: Vec<u64> = (from..to).step_by(10).collect();
    for chunk in starts.chunks(starts.len().div_ceil(4).max(1)) {
        let (client, url, chunk) = (client.clone(), url.to_owned(), chunk.to_vec());
        tasks.spawn(async move {
            for start in chunk {
                let entries = (start..(start + 10).min(to))
                    .map(|i| {
                        SendMessageBatchRequestEntry::builder()
                            .id(format!("m{}", i - start))
                            .message_body(format!("{{\"i\":{i}}}"))
                            .build()
                            .expect("entry")
                    })
                    .collect::<Vec<_>>();
                let out = client
                    .send_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .expect("send_message_batch");
                assert!(out.failed().is_empty(), "send failures: {:?}", out.failed());
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("fill task");
    }
}

pub(crate) use sqs_worker_testkit::depth;

/// The index `N` of a `{"i":N}` body.
pub(crate) fn index(body: &str) -> u64 {
    body.trim_start_matches("{\"i\":")
        .trim_end_matches('}')
        .parse()
        .unwrap_or(0)
}

/// Produces messages `0..n` while a consumer drains them, keeping the queue
/// shallow: tops the visible count back up to `high` whenever it fell below
/// `low` (moto's server spends time proportional to the queue depth on every
/// call). Returns the time spent waiting for the consumer to catch up.
pub(crate) async fn feed(client: Client, url: String, n: u64, low: u64, high: u64) {
    let mut sent = high.min(n);
    fill(&client, &url, 0, sent).await;
    while sent < n {
        let (visible, _) = depth(&client, &url).await;
        if visible >= low {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        }
        let to = (sent + high - visible).min(n);
        fill(&client, &url, sent, to).await;
        sent = to;
    }
}
