//! Start-up errors: a wrong queue, a missing region and refused credentials
//! each end the run with a sentence that says what to fix.

use crate::common;
use sqs_worker::poller::{Poller, PollerError};
use sqs_worker::{Error, Message};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ------------------------------------------------------------ start-up

/// A stand-in for SQS that refuses every request's credentials as SQS does.
async fn refusing_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = conn.read(&mut buf).await;
                let body = r#"{"__type":"com.amazon.coral.service#UnrecognizedClientException","message":"The security token included in the request is invalid."}"#;
                let resp = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\n\
                     x-amzn-query-error: InvalidClientTokenId;Sender\r\n\
                     x-amzn-requestid: 00000000-0000-0000-0000-000000000000\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    endpoint
}

async fn start_error(client: aws_sdk_sqs::Client, queue: &str) -> PollerError {
    let handler = |_m: Message| async { Ok::<_, Error>(()) };
    tokio::time::timeout(
        Duration::from_secs(60),
        Poller::builder(queue, handler)
            .client(client)
            .build()
            .unwrap()
            .run(),
    )
    .await
    .expect("start-up fails, it does not hang")
    .expect_err("start-up fails")
}

#[tokio::test]
async fn start_up_errors_say_what_is_wrong() {
    let endpoint = &common::server().endpoint;
    // Wrong queue URL.
    let url = format!("{endpoint}/123456789012/no-such-orders");
    let err = start_error(common::sqs().await, &url).await;
    assert_eq!(
        err.to_string(),
        format!(
            "queue {url} does not exist (check the queue URL or name, the region and the endpoint)"
        )
    );
    // Refused credentials.
    let refusing = refusing_server().await;
    let client = aws_sdk_sqs::Client::new(&common::sdk_config_for(&refusing).await);
    let url = format!("{refusing}/123456789012/orders");
    let err = start_error(client, &url).await;
    assert_eq!(
        err.to_string(),
        format!(
            "access to queue {url} was refused during GetQueueAttributes (check the credentials \
             and the IAM policy)"
        )
    );
    // Missing region: the SDK cannot sign. What the poller says today:
    // "GetQueueAttributes on queue URL failed", the cause only in the source
    // chain ("missing signing region"), after five retries as if transient.
    let conf = aws_sdk_sqs::config::Builder::from(&common::sdk_config().await)
        .region(None)
        .build();
    let url = format!("{endpoint}/123456789012/orders");
    let err = start_error(aws_sdk_sqs::Client::from_conf(conf), &url).await;
    let chain = error_chain(&err);
    println!("missing region: {chain}");
    assert!(err.to_string().contains(&url), "{chain}");
    assert!(chain.to_lowercase().contains("region"), "{chain}");
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// What a worker binary prints when it cannot start: `examples/orders.rs`
/// returns `sqs_worker::run`'s error from `main`, which Rust prints with
/// `Debug`; `run` wraps errors in `RunError`, whose `Debug` is the readable
/// cause chain. A wrong queue, a missing region and missing credentials each
/// end the run with a sentence that says what to fix, not SDK internals.
#[tokio::test]
async fn a_worker_binary_prints_start_up_errors_without_sdk_internals() {
    let bin = common::example("orders");
    let endpoint = &common::server().endpoint;
    let url = format!("{endpoint}/123456789012/no-such-orders");
    let run = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(&bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SQS_QUEUE_URL", &url)
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "error");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let region = ("AWS_REGION", "us-east-1");
    let (key, secret) = (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    );
    let cases = [
        (run(&[region, key, secret]), "does not exist"),
        (run(&[key, secret]), "AWS_REGION"),
        (run(&[region]), "credentials"),
        // A malformed setting names its variable (one ConfigError for both runners).
        (
            run(&[region, key, secret, ("SQS_WORKER_WAIT_SECONDS", "1.5")]),
            "SQS_WORKER_WAIT_SECONDS",
        ),
    ];
    for (stderr, clear) in &cases {
        assert!(stderr.contains(clear), "{clear:?} missing from:\n{stderr}");
        for internal in [
            "ServiceError",
            "DispatchFailure",
            "ConnectorError",
            "ProviderChainError",
            "raw: Response",
            " { ",
        ] {
            assert!(!stderr.contains(internal), "{internal} in:\n{stderr}");
        }
    }
}
