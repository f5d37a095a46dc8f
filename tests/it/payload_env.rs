//! Large payloads from the environment: `SQS_WORKER_PAYLOAD_BUCKETS` turns
//! them on in `sqs_worker::run`. The worker runs as a child process of this
//! test binary (environment variables are per process, and setting them in
//! a running test is `unsafe`).

use crate::common;

use std::process::Command;

use sqs_worker::producer::payload::{LargePayloads, S3Pointer};
use sqs_worker::producer::{Outgoing, Sender};
use sqs_worker::{Error, Message};

/// The child test by its path in the `it` binary.
const CHILD: &str = "payload_env::worker_child_run_from_the_environment";

fn payload() -> String {
    (0..2 * 1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

/// The worker: `sqs_worker::run` with a handler that accepts only the
/// resolved payload. Started by the test below, with its environment.
#[tokio::test]
#[ignore = "the worker process of `run_resolves_pointers_when_payload_buckets_are_set`, which starts it"]
async fn worker_child_run_from_the_environment() {
    sqs_worker::run(|m: Message| async move {
        match m.payload_origin() {
            Some(o) if m.body() == payload() && o.size == m.body().len() as u64 => Ok(()),
            _ => Err(Error::permanent(std::io::Error::other(format!(
                "message {} did not arrive resolved",
                m.id()
            )))),
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_resolves_pointers_when_payload_buckets_are_set() {
    let (sqs, s3) = (common::sqs().await, common::s3().await);
    let url = common::queue(&sqs, "payload-env").await;
    let dlq = common::queue(&sqs, "payload-env-dlq").await;
    let bucket = common::bucket(&s3, "payload-env").await;
    let sender = Sender::new(sqs.clone(), &url)
        .await
        .unwrap()
        .large_payloads(LargePayloads::new(s3.clone(), &bucket));
    sender.send_message(Outgoing::new(payload())).await.unwrap();
    let peek = sqs
        .receive_message()
        .queue_url(&url)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    let key = S3Pointer::parse(peek.messages()[0].body().unwrap())
        .unwrap()
        .key;

    let endpoint = common::sdk_config()
        .await
        .endpoint_url()
        .unwrap()
        .to_owned();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", CHILD, "--nocapture"])
        .env("SQS_QUEUE_URL", &url)
        .env("SQS_WORKER_DLQ_URL", &dlq)
        .env(
            "SQS_WORKER_PAYLOAD_BUCKETS",
            format!("other-bucket, {bucket}"),
        )
        .env("SQS_WORKER_WAIT_SECONDS", "1")
        .env("SQS_WORKER_IDLE_EXIT_SECONDS", "2")
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the worker failed:\n{said}");
    assert!(said.contains("1 passed"), "the worker ran:\n{said}");
    assert_eq!(common::depth(&sqs, &url).await, (0, 0), "{said}");
    assert_eq!(common::depth(&sqs, &dlq).await, (0, 0), "{said}");
    assert!(
        !common::object_exists(&s3, &bucket, &key).await,
        "deleted after the handler succeeded"
    );
}
