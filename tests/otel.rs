//! OpenTelemetry: each message span continues its producer's trace (W3C
//! `traceparent` attribute, else X-Ray `AWSTraceHeader`) and is exported
//! through the tracer the user installs.
#![allow(clippy::unwrap_used, missing_docs)]

// This binary sets process-global state (the tracing subscriber and the
// message span hook), so it stays apart from `tests/it`; its one test
// against the local server borrows `it`'s helpers by path (the only such
// include).
#[cfg(all(feature = "producer", feature = "poller"))]
#[path = "it/common/mod.rs"]
mod common;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use sqs_worker::{Error, Message, MessageAttribute};
use sqs_worker_core::runner::{Engine, Processor};
use tracing_subscriber::prelude::*;

/// The span hook is process-wide: installed by the first test that needs it
/// (and installing it must succeed then).
fn link_producer_traces_once() {
    static LINKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    assert!(*LINKED.get_or_init(sqs_worker::telemetry::otel::link_producer_traces));
}

#[tokio::test]
async fn message_spans_are_children_of_the_producers_span_and_exported() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(sqs_worker::telemetry::otel::layer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);
    link_producer_traces_once();

    let batch = vec![
        Message::builder("w3c", "{}")
            .message_attribute(
                "traceparent",
                MessageAttribute::string("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            )
            .build(),
        Message::builder("xray", "{}")
            .system_attribute(
                "AWSTraceHeader",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            )
            .build(),
        Message::builder("none", "{}").build(),
    ];
    let report = Engine::new(|_m: Message| async { Ok::<(), Error>(()) })
        .run(batch, None)
        .await;
    assert!(report.all_succeeded());
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let span_of = |id: &str| {
        spans
            .iter()
            .find(|s| {
                s.name == "sqs.message"
                    && s.attributes.iter().any(|kv| {
                        kv.key.as_str() == "messaging.message.id" && kv.value.as_str() == id
                    })
            })
            .unwrap_or_else(|| panic!("no exported span for {id}: {spans:#?}"))
    };
    let w3c = span_of("w3c");
    assert_eq!(
        format!("{:032x}", w3c.span_context.trace_id()),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(format!("{:016x}", w3c.parent_span_id), "00f067aa0ba902b7");
    let xray = span_of("xray");
    assert_eq!(
        format!("{:032x}", xray.span_context.trace_id()),
        "5759e988bd862e3fe1be46a994272793"
    );
    assert_eq!(format!("{:016x}", xray.parent_span_id), "53995c3f42cd8ad8");
    // Without a producer context the span starts a trace of its own.
    let none = span_of("none");
    assert_ne!(none.span_context.trace_id(), w3c.span_context.trace_id());
    assert_ne!(none.span_context.trace_id(), xray.span_context.trace_id());
}

/// A message sent by the producer inside a span is handled in a span that is
/// that span's child: `propagate_send_traces` fills the producer's trace
/// hook, the poller's message span continues the `traceparent` it finds.
#[cfg(all(feature = "producer", feature = "poller"))]
#[tokio::test]
async fn a_consumer_span_is_a_child_of_the_producer_span() {
    use std::time::Duration;

    use sqs_worker::poller::Poller;
    use sqs_worker::producer::{Outgoing, Sender};
    use tracing::Instrument as _;

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(sqs_worker::telemetry::otel::layer(provider.tracer("test")));
    // The poller runs its tasks on this (current-thread) runtime, so this
    // thread's subscriber sees every span.
    let _guard = tracing::subscriber::set_default(subscriber);
    link_producer_traces_once();
    assert!(sqs_worker::telemetry::otel::propagate_send_traces());

    let client = common::sqs().await;
    let url = common::queue(&client, "otel-propagate").await;
    let sender = Sender::new(client.clone(), &url).await.unwrap();
    let sent = sender
        .send_message(Outgoing::new("traced"))
        .instrument(tracing::info_span!("checkout.publish"))
        .await
        .unwrap();
    let handled = Poller::builder(url.as_str(), |_m: Message| async { Ok::<(), Error>(()) })
        .client(client.clone())
        .wait_time(Duration::from_secs(1))
        .idle_exit(Duration::from_secs(2))
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(handled.succeeded, 1, "{handled}");
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let publish = spans
        .iter()
        .find(|s| s.name == "checkout.publish")
        .unwrap_or_else(|| panic!("no producer span: {spans:#?}"));
    let consumer = spans
        .iter()
        .find(|s| {
            s.name == "sqs.message"
                && s.attributes.iter().any(|kv| {
                    kv.key.as_str() == "messaging.message.id"
                        && kv.value.as_str() == sent.message_id.as_str()
                })
        })
        .unwrap_or_else(|| panic!("no consumer span for the message: {spans:#?}"));
    assert_eq!(
        consumer.span_context.trace_id(),
        publish.span_context.trace_id(),
        "one trace"
    );
    assert_eq!(
        consumer.parent_span_id,
        publish.span_context.span_id(),
        "the consumer span is the producer span's child"
    );
}
