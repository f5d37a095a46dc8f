//! Observability: what operators see. Logs at the default level carry message
//! ids and causes but never bodies, receipt handles or credentials; metrics
//! come out of the Prometheus endpoint with the documented names; `/healthz`
//! turns unhealthy when receiving keeps failing.
//!
//! A test binary of its own, apart from `tests/it`: it installs the
//! process-wide metrics recorder and flips the process-wide health, which
//! the tests there would change under it.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqs_worker::telemetry::{LogFormat, log_subscriber};
use sqs_worker::{Error, Json, Message};
use sqs_worker_core::runner::{Engine, Processor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(serde::Deserialize)]
struct Order {
    order_id: u64,
    #[allow(dead_code)]
    customer: String,
}

async fn handle(Json(order): Json<Order>, msg: Message) -> Result<(), Error> {
    match order.order_id {
        1 => Err(Error::msg("payment service unavailable")),
        2 => panic!("order 2 handler bug"),
        _ => {
            let _ = msg;
            Ok(())
        }
    }
}

const BODY_SECRET: &str = "4111-1111-1111-1111";
const RECEIPT_SECRET: &str = "RH-AQEBsecretreceipthandle";
const CREDENTIAL: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";

fn failing_batch() -> Vec<Message> {
    [
        (
            "ok-0",
            format!(r#"{{"order_id": 0, "customer": "{BODY_SECRET}"}}"#),
        ),
        (
            "retry-1",
            format!(r#"{{"order_id": 1, "customer": "{BODY_SECRET}"}}"#),
        ),
        (
            "panic-2",
            format!(r#"{{"order_id": 2, "customer": "{BODY_SECRET}"}}"#),
        ),
        (
            "badtype-3",
            format!(r#"{{"order_id": "{BODY_SECRET}", "customer": "x"}}"#),
        ),
        ("notjson-4", format!("card={BODY_SECRET}")),
    ]
    .into_iter()
    .map(|(id, body)| {
        Message::builder(id, body)
            .receipt_handle(RECEIPT_SECRET)
            .build()
    })
    .collect()
}

/// The tests of this file share the process-wide metrics recorder: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The sum of every series starting with `prefix` and containing `part`.
fn sum(body: &str, prefix: &str, part: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(part))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A fresh log file to give `log_subscriber` (`&File` writes), and its path
/// to read the logs back.
fn log_file(name: &str) -> (Arc<std::fs::File>, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!(
        "sqs-worker-observability-{}-{name}.log",
        std::process::id()
    ));
    (Arc::new(std::fs::File::create(&path).unwrap()), path)
}

fn assert_clean(logs: &str) {
    for secret in [BODY_SECRET, RECEIPT_SECRET, CREDENTIAL] {
        assert!(!logs.contains(secret), "logs leak {secret:?}:\n{logs}");
    }
}

#[test]
fn default_level_logs_name_failures_but_never_bodies_receipts_or_credentials() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for format in [LogFormat::Json, LogFormat::Text] {
        let (capture, path) = log_file(&format!("{format:?}"));
        let subscriber = log_subscriber(format, capture, false);
        let _guard = tracing::subscriber::set_default(subscriber);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let report = rt.block_on(Engine::new(handle).run(failing_batch(), None));
        assert_eq!(
            report.failed_ids(),
            ["retry-1", "panic-2", "badtype-3", "notjson-4"]
        );
        let logs = std::fs::read_to_string(&path).unwrap();
        // The logs are useful: every failing message id, its kind and cause.
        for needle in [
            "retry-1",
            "panic-2",
            "badtype-3",
            "notjson-4",
            "payment service unavailable",
            "order 2 handler bug",
            "permanent",
        ] {
            assert!(
                logs.contains(needle),
                "{format:?} logs lack {needle:?}:\n{logs}"
            );
        }
        assert_clean(&logs);
        if format == LogFormat::Json {
            for line in logs.lines() {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            }
        }
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[tokio::test]
#[allow(clippy::await_holding_lock)] // the lock only serializes this file's tests
async fn prometheus_endpoint_serves_the_engine_metrics_and_health() {
    let server = sqs_worker::telemetry::serve_metrics(
        "127.0.0.1:0".parse().unwrap(),
        Duration::from_millis(0),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (_, before) = http_get(addr, "/metrics").await;
    let report = Engine::new(handle).run(failing_batch(), None).await;
    assert_eq!(report.succeeded().count(), 1);

    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    for (series, delta) in [
        ("sqs_worker_messages_succeeded_total", 1.0),
        (r#"sqs_worker_messages_failed_total{kind="retry"}"#, 1.0),
        (r#"sqs_worker_messages_failed_total{kind="panicked"}"#, 1.0),
        (r#"sqs_worker_messages_failed_total{kind="permanent"}"#, 2.0),
        ("sqs_worker_handler_duration_seconds_count", 5.0),
    ] {
        assert_eq!(
            metric(&body, series) - metric(&before, series),
            delta,
            "{series}:\n{body}"
        );
    }
    // The OpenTelemetry name next to the alias (`.` written as `_`), by
    // outcome: `error.type` on the failures.
    let count = "messaging_process_duration_count{";
    for (part, delta) in [("", 5.0), ("error_type=", 4.0)] {
        assert_eq!(
            sum(&body, count, part) - sum(&before, count, part),
            delta,
            "{part}:\n{body}"
        );
    }
    assert!(
        body.contains(r#"messaging_process_duration_count{messaging_system="aws_sqs",messaging_operation_name="process",error_type="panicked"}"#),
        "{body}"
    );
    assert_clean(&body);

    let (status, _) = http_get(addr, "/healthz").await;
    assert_eq!(status, 200);
    sqs_worker_core::runner::observe::health().receive_failed();
    let (status, body) = http_get(addr, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("every SQS receive has failed"), "{body}");
    sqs_worker_core::runner::observe::health().receive_succeeded();
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/nope").await.0, 404);
}

/// With a subscriber, a handler's log lines carry the message's span (its
/// id), and the invocation's summary line the invocation's span (the request
/// id): the runners build their spans whenever a subscriber takes them.
#[test]
fn logs_carry_the_message_and_invocation_spans() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (capture, path) = log_file("spans");
    let subscriber = log_subscriber(LogFormat::Json, capture, false);
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let service = sqs_worker::lambda::LambdaService::new(Engine::new(|m: Message| async move {
        tracing::info!("charging the card");
        if m.id() == "span-msg-2" {
            return Err(Error::msg("card declined"));
        }
        Ok::<(), Error>(())
    }));
    let event = sqs_worker::lambda::testing::event(
        ["span-msg-1", "span-msg-2"].map(|id| sqs_worker::lambda::testing::record(id, "{}")),
    );
    let mut ctx = sqs_worker::lambda::testing::context(Duration::from_secs(60));
    ctx.request_id = "req-7f3a".into();
    let resp = rt.block_on(service.handle(event, &ctx)).unwrap();
    assert_eq!(resp.batch_item_failures.len(), 1);
    let logs = std::fs::read_to_string(&path).unwrap();
    let line = |what: &str| {
        logs.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} line in:\n{logs}"))
    };
    let handler = line("charging the card");
    for needle in ["sqs.message", "span-msg-1"] {
        assert!(
            handler.contains(needle),
            "handler line lacks {needle:?}: {handler}"
        );
    }
    let summary = line("batch done");
    for needle in ["sqs.batch", "req-7f3a"] {
        assert!(
            summary.contains(needle),
            "summary line lacks {needle:?}: {summary}"
        );
    }
}

/// The README's metrics table and `names::ALL` are one table: same names, in
/// the same order, with the same OpenTelemetry name, instrument and unit.
#[test]
fn the_readme_metrics_table_is_the_names_table() {
    use sqs_worker_core::runner::observe::names;
    let readme = include_str!("../README.md");
    let header = "| metric | OpenTelemetry name | instrument | unit |";
    let start = readme.find(header).expect("the README's metrics table");
    let rows: Vec<Vec<String>> = readme[start..]
        .lines()
        .skip(2)
        .map(str::trim)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect();
    let documented: Vec<[&str; 4]> = rows
        .iter()
        .map(|r| [r[0].as_str(), r[1].as_str(), r[2].as_str(), r[3].as_str()])
        .collect();
    let code: Vec<[&str; 4]> = names::ALL
        .iter()
        .map(|m| {
            [
                m.name,
                m.otel.map_or("—", |o| o.name),
                m.instrument.as_str(),
                m.unit,
            ]
        })
        .collect();
    assert_eq!(
        documented, code,
        "add a metric to both observe::names::ALL and the README table"
    );
}
