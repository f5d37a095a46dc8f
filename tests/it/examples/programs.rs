//! The examples that run to completion on their own: the producer, and the
//! poller built in code with its own client.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeSet;

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;

use super::{Example, assert_logs, receive, run, settled_depth};
use crate::common;

/// `examples/producer.rs`: 100 orders on the queue (the 2 MiB one as a
/// pointer to its object in S3) and the reminder delayed.
///
/// The server is given by host name, as LocalStack's `http://localhost:4566`
/// is: S3 must then be addressed path-style, since `BUCKET.localhost` does
/// not resolve (the example's own S3 client failed so before
/// `LargePayloads::from_env`).
#[cfg(all(feature = "producer", feature = "large-payloads"))]
#[tokio::test]
async fn producer_example_sends_every_order_and_offloads_the_large_one() {
    use sqs_worker::producer::payload::S3Pointer;
    let (sqs, s3) = (common::sqs().await, common::s3().await);
    let url = common::queue(&sqs, "ex-producer").await;
    let bucket = common::bucket(&s3, "ex-producer").await;
    let endpoint = sqs_worker_testkit::server()
        .endpoint
        .replace("127.0.0.1", "localhost");
    assert!(
        endpoint.contains("//localhost:"),
        "a test server on 127.0.0.1: {endpoint}"
    );

    let out = run(
        "producer",
        &[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("SQS_QUEUE_URL", &url),
            ("SQS_WORKER_OFFLOAD_BUCKET", &bucket),
        ],
    )
    .await;
    out.assert_success();
    for line in ["sent order 1 as ", "sent 99 orders in a batch, 0 failed"] {
        assert!(out.stdout.contains(line), "no `{line}`: {}", out.report());
    }

    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attr = |a: QueueAttributeName| attrs.attributes().unwrap()[&a].clone();
    assert_eq!(attr(QueueAttributeName::ApproximateNumberOfMessages), "100");
    assert_eq!(
        attr(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        "1",
        "the reminder, delayed 5 minutes"
    );

    let objects = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    let keys: Vec<&str> = objects.contents().iter().filter_map(|o| o.key()).collect();
    assert!(
        keys.len() == 1 && keys[0].starts_with("orders/"),
        "one object, under orders/: {keys:?}"
    );
    let object = s3
        .get_object()
        .bucket(&bucket)
        .key(keys[0])
        .send()
        .await
        .unwrap();
    let object = object.body.collect().await.unwrap().into_bytes();
    let large: Value = serde_json::from_slice(&object).unwrap();
    assert_eq!(large["order_id"], 100);
    assert_eq!(large["notes"].as_str().unwrap().len(), 2 * 1024 * 1024);

    // Orders 1 to 100, each once; order 100 as a pointer to that object.
    let mut ids = BTreeSet::new();
    for m in receive(&sqs, &url, 100).await {
        let body = m.body().unwrap();
        match S3Pointer::parse(body) {
            Some(p) => {
                assert_eq!(
                    (p.bucket.as_str(), p.key.as_str()),
                    (bucket.as_str(), keys[0])
                );
                assert!(ids.insert(100), "order 100 twice");
            }
            None => {
                let order: Value = serde_json::from_str(body).unwrap();
                assert!(
                    ids.insert(order["order_id"].as_u64().unwrap()),
                    "{body} twice"
                );
            }
        }
    }
    assert_eq!(ids, (1..=100).collect::<BTreeSet<u64>>());
}

/// `examples/injected_client.rs`: its own client on `SQS_ENDPOINT` (no
/// `AWS_ENDPOINT_URL`), its own queue, three messages handled, an idle exit.
#[tokio::test]
async fn injected_client_example_handles_its_three_messages_and_exits_when_idle() {
    let mut cmd = common::example_command("injected_client");
    cmd.env_remove("AWS_ENDPOINT_URL")
        .env("SQS_ENDPOINT", &common::server().endpoint);
    let out = Example::spawn("injected_client", cmd).finish().await;
    out.assert_success();
    let mut handled: Vec<&str> = (out.stdout.lines())
        .filter_map(|l| l.strip_prefix("handled ")?.split_once(": "))
        .map(|(_, body)| body)
        .collect();
    handled.sort_unstable();
    let want = ["message 1", "message 2", "message 3"];
    assert_eq!(handled, want, "each once: {}", out.report());
    assert_eq!(out.summary("succeeded"), 3, "{}", out.report());
    assert_logs(&out);
    let sqs = common::sqs().await;
    let url = sqs
        .get_queue_url()
        .queue_name("injected")
        .send()
        .await
        .unwrap();
    assert_eq!(settled_depth(&sqs, url.queue_url().unwrap()).await, (0, 0));
}
