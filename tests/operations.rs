//! Operations (issue 19): Lambda logs and metrics that join up — every line
//! logged while a record is handled names its invocation, the cold start is
//! marked and counted once, and `batchItemFailures` lists an id once.
#![allow(clippy::unwrap_used)]

#[path = "common/capture.rs"]
mod capture;

use std::time::Duration;

use capture::Capture;
use sqs_worker::telemetry::{LogFormat, log_subscriber};
use sqs_worker::{Error, Message};
use sqs_worker_core::runner::Engine;
use sqs_worker_core::runner::observe::emf::EmfRecorder;
use sqs_worker_lambda::LambdaService;
use sqs_worker_lambda::testing::{context, event, failed_ids, record};

const TIMEOUT: Duration = Duration::from_secs(60);

async fn always_fails(_m: Message) -> Result<(), Error> {
    Err(Error::msg("downstream unavailable"))
}

#[tokio::test]
async fn a_record_delivered_twice_in_one_event_is_listed_once() {
    let svc = LambdaService::new(Engine::new(always_fails));
    let ev = event([record("dup", "a"), record("other", "b"), record("dup", "a")]);
    let response = svc.handle(ev, &context(TIMEOUT)).await.unwrap();
    let mut ids = failed_ids(&response);
    ids.sort_unstable();
    assert_eq!(ids, ["dup", "other"]);
}

/// The JSON lines `capture` holds whose message is `message`.
fn lines_saying(capture: &Capture, message: &str) -> Vec<serde_json::Value> {
    capture
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == message)
        .collect()
}

/// The value of `field` in the first span of `line`'s span list that has it.
fn span_field<'a>(line: &'a serde_json::Value, field: &str) -> Option<&'a serde_json::Value> {
    line["spans"].as_array()?.iter().find_map(|s| s.get(field))
}

#[tokio::test]
async fn handler_lines_carry_the_request_id_trace_id_and_cold_start() {
    let capture = Capture::default();
    let _logs =
        tracing::subscriber::set_default(log_subscriber(LogFormat::Json, capture.clone(), false));
    let emf = EmfRecorder::with_service("ns", "orders");
    let _metrics = metrics::set_default_local_recorder(&emf);

    let svc = LambdaService::new(Engine::new(|m: Message| async move {
        tracing::info!(id = m.id(), "handling");
        Ok::<(), Error>(())
    }));
    let mut cold = context(TIMEOUT);
    cold.xray_trace_id = Some("Root=1-5759e988-bd862e3fe1be46a994272793".to_owned());
    let warm = context(TIMEOUT);
    for (ctx, id) in [(&cold, "first"), (&warm, "second"), (&warm, "third")] {
        let response = svc.handle(event([record(id, "{}")]), ctx).await.unwrap();
        assert!(failed_ids(&response).is_empty());
    }

    let lines = lines_saying(&capture, "handling");
    assert_eq!(lines.len(), 3, "{}", capture.text());
    let first = &lines[0];
    assert_eq!(first["id"], "first");
    assert_eq!(
        span_field(first, "faas.invocation_id").unwrap(),
        cold.request_id.as_str()
    );
    assert_eq!(
        span_field(first, "xray_trace_id").unwrap(),
        "Root=1-5759e988-bd862e3fe1be46a994272793"
    );
    assert_eq!(span_field(first, "cold_start").unwrap(), true);
    // The message span is there too: the line joins to its message.
    assert_eq!(span_field(first, "messaging.message.id").unwrap(), "first");
    for warm_line in &lines[1..] {
        assert_eq!(
            span_field(warm_line, "faas.invocation_id").unwrap(),
            warm.request_id.as_str()
        );
        assert!(span_field(warm_line, "cold_start").is_none(), "{warm_line}");
        assert!(
            span_field(warm_line, "xray_trace_id").is_none(),
            "{warm_line}"
        );
    }

    // One cold start counted, whatever the number of invocations.
    let mut out = Vec::new();
    emf.flush_to(&mut out).unwrap();
    let counted: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|l| l.get("sqs_worker_lambda_cold_starts_total").cloned())
        .collect();
    assert_eq!(counted, [serde_json::json!(1)]);
}
