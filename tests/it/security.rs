//! Security: a poller run with failures against the local server (moto),
//! its logs captured with the default subscriber (`telemetry::log_subscriber`,
//! default level `info`, JSON and text), must not contain a message body, a
//! receipt handle or a credential. The SDK is given marker credentials.
//!
//! Covered elsewhere: the same check for the engine alone
//! (tests/observability.rs); the template (`template.yaml`: no `*` action on
//! SQS/DynamoDB, encryption on queues and table) by `scripts/check_template.py`
//! (run by `scripts/test.sh` and CI); the dependency tree by `scripts/deny.sh`.
#![allow(clippy::unwrap_used)] // tests may unwrap

use crate::common;
use crate::common::proxy;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use sqs_worker::poller::Poller;
use sqs_worker::telemetry::{LogFormat, log_subscriber};
use sqs_worker::{Error, Json, Message};
use tokio::sync::oneshot;

const ACCESS_KEY: &str = "AKIAMARKERACCESSKEY7";
const SECRET_KEY: &str = "SECRET-MARKER-wJalrXUtnFEMI-K7MDENG";
const SESSION_TOKEN: &str = "SESSION-MARKER-FwoGZXIvYXdzEJr";
const BODY_SECRET: &str = "4111-1111-1111-1111";

#[derive(serde::Deserialize)]
struct Order {
    order_id: u64,
    #[allow(dead_code)]
    card: String,
}

async fn client_for(endpoint: &str) -> aws_sdk_sqs::Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            Some(SESSION_TOKEN.to_owned()),
            None,
            "marker",
        ))
        .load()
        .await;
    aws_sdk_sqs::Client::new(&config)
}

/// A run with every kind of failure: retried, permanent (to a DLQ),
/// panicking, undecodable bodies, and a 3 s server outage. Returns the
/// receipt handles the handler saw.
async fn run_with_failures() -> Vec<String> {
    let direct = common::sqs().await;
    let url = common::queue(&direct, "sec").await;
    let dlq = common::queue(&direct, "sec-dlq").await;
    let proxy = proxy::Proxy::start(&common::server().endpoint).await;
    let client = client_for(&proxy.endpoint).await;
    let handles: Arc<Mutex<Vec<String>>> = Arc::default();
    let h = handles.clone();
    let handler = move |Json(order): Json<Order>, msg: Message| {
        let h = h.clone();
        async move {
            h.lock().unwrap().push(msg.receipt_handle().to_owned());
            match order.order_id % 4 {
                1 => Err(Error::msg("payment service unavailable")),
                2 => Err(Error::permanent("card declined")),
                3 => panic!("handler bug on order {}", order.order_id),
                _ => Ok(()),
            }
        }
    };
    let (tx, rx) = oneshot::channel::<()>();
    let poller = Poller::builder(url.as_str(), handler)
        .client(client)
        .dead_letter_queue(dlq.as_str())
        .wait_time(Duration::from_secs(1))
        .retry_policy(sqs_worker::FixedDelay(Duration::from_secs(30)))
        .stats_interval(Duration::from_millis(500))
        .shutdown_signal(async move {
            let _ = rx.await;
        })
        .build()
        .unwrap();
    let task = tokio::spawn(poller.run());
    let mut bodies: Vec<String> = (0..12)
        .map(|i| format!(r#"{{"order_id": {i}, "card": "{BODY_SECRET}"}}"#))
        .collect();
    bodies.push(format!(r#"{{"order_id": "{BODY_SECRET}", "card": "x"}}"#));
    bodies.push(format!("card={BODY_SECRET}"));
    for b in &bodies {
        direct
            .send_message()
            .queue_url(&url)
            .message_body(b)
            .send()
            .await
            .unwrap();
    }
    // Every message settled before the outage: the decodable ones reached the
    // handler, and the dead-letter queue holds the three declined cards and
    // the two undecodable bodies (which never reach the handler).
    let start = Instant::now();
    while handles.lock().unwrap().len() < bodies.len() - 2
        || common::depth(&direct, &dlq).await.0 < 5
    {
        assert!(start.elapsed() < Duration::from_secs(30), "not all handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = tx.send(());
    let summary = task.await.unwrap().unwrap();
    assert!(summary.failed >= 6, "{summary}");
    assert!(summary.dead_lettered >= 3, "{summary}");
    let mut guard = handles.lock().unwrap();
    std::mem::take(&mut *guard)
}

fn assert_clean(logs: &str, handles: &[String]) {
    for secret in [BODY_SECRET, ACCESS_KEY, SECRET_KEY, SESSION_TOKEN] {
        assert!(!logs.contains(secret), "logs leak {secret:?}:\n{logs}");
    }
    for h in handles {
        assert!(!h.is_empty());
        assert!(
            !logs.contains(h.as_str()),
            "logs leak a receipt handle {h:?}:\n{logs}"
        );
    }
}

/// Whether `RUST_LOG` leaves the default level in place.
fn default_level() -> bool {
    match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() && v.trim() != "info" => {
            eprintln!("RUST_LOG={v:?}: this test checks the default level; unset RUST_LOG");
            false
        }
        _ => true,
    }
}

#[test]
fn a_poller_run_with_failures_logs_no_body_receipt_handle_or_credential() {
    if !default_level() {
        return;
    }
    for format in [LogFormat::Json, LogFormat::Text] {
        // `&File` writes: the subscriber appends, the test reads the file.
        let path = std::env::temp_dir().join(common::unique("security-logs"));
        let capture = Arc::new(std::fs::File::create(&path).unwrap());
        let subscriber = log_subscriber(format, capture, false);
        let _guard = tracing::subscriber::set_default(subscriber);
        // One thread: every task the poller spawns logs through this subscriber.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handles = rt.block_on(run_with_failures());
        drop(rt);
        let logs = std::fs::read_to_string(&path).unwrap();
        // The run was logged: failures with their causes, the outage, ids.
        for expected in [
            "payment service unavailable",
            "card declined",
            "handler bug on order",
            "not a valid Order",
            "poller stopped",
        ] {
            assert!(
                logs.contains(expected),
                "{format:?}: {expected:?} missing:\n{logs}"
            );
        }
        assert!(
            logs.contains("ReceiveMessage failed") || logs.contains("failed; retrying"),
            "{format:?}: the outage is logged:\n{logs}"
        );
        assert_clean(&logs, &handles);
    }
}
