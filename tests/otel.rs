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

/// A `metrics` recorder keeping every update as (name, sorted `k=v` labels).
mod capture {
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
        SharedString, Unit,
    };

    /// Updates: metric name and its sorted labels.
    type Updates = Vec<(String, Vec<String>)>;

    #[derive(Default, Clone)]
    pub(crate) struct Capture(Arc<Mutex<Updates>>);

    struct Handle(Key, Capture);

    impl Handle {
        fn push(&self) {
            let mut labels: Vec<String> = self
                .0
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            (self.1)
                .0
                .lock()
                .unwrap()
                .push((self.0.name().to_owned(), labels));
        }
    }

    impl CounterFn for Handle {
        fn increment(&self, _: u64) {
            self.push();
        }
        fn absolute(&self, _: u64) {
            self.push();
        }
    }

    impl HistogramFn for Handle {
        fn record(&self, _: f64) {
            self.push();
        }
    }

    impl Capture {
        /// The label sets metric `name` was updated with.
        pub(crate) fn labels_of(&self, name: &str) -> Vec<Vec<String>> {
            let updates = self.0.lock().unwrap();
            updates
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, l)| l.clone())
                .collect()
        }
    }

    impl Recorder for Capture {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(Arc::new(Handle(key.clone(), self.clone())))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(Arc::new(Handle(key.clone(), self.clone())))
        }
    }
}

fn attr(span: &opentelemetry_sdk::trace::SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// One Lambda invocation of three records from two traced producers: the
/// batch span links to both producers (the conventions' way for batches),
/// each message span stays its producer's child, both carry the messaging
/// attributes, and the OpenTelemetry metric names come out next to the
/// `sqs_worker_*` aliases with their attributes.
#[tokio::test]
async fn a_batch_span_links_to_each_producer_and_the_otel_names_are_emitted() {
    use opentelemetry::trace::SpanKind;
    use sqs_worker_core::runner::observe::names;
    use sqs_worker_lambda::testing::{event, record, run_event};

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(sqs_worker::telemetry::otel::layer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);
    let recorder = capture::Capture::default();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    link_producer_traces_once();

    const ARN: &str = "arn:aws:sqs:eu-west-1:123456789012:orders";
    const W3C: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const XRAY: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
    let response = run_event(
        |m: Message| async move {
            match m.id() {
                "bad" => Err(Error::msg("refused")),
                _ => Ok(()),
            }
        },
        event([
            record("w3c", "{}")
                .queue_arn(ARN)
                .string_attribute("traceparent", W3C),
            record("xray", "{}").queue_arn(ARN).trace_header(XRAY),
            // A second message of the first producer: still one link to it.
            record("bad", "{}")
                .queue_arn(ARN)
                .string_attribute("traceparent", W3C),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(response.batch_item_failures.len(), 1);
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();

    let batch = spans
        .iter()
        .find(|s| s.name == "sqs.batch")
        .unwrap_or_else(|| panic!("no batch span: {spans:#?}"));
    assert_eq!(batch.span_kind, SpanKind::Consumer);
    for (key, value) in [
        ("messaging.system", "aws_sqs"),
        ("messaging.operation.name", "process"),
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", "orders"),
        ("messaging.batch.message_count", "3"),
    ] {
        assert_eq!(attr(batch, key).as_deref(), Some(value), "{key}");
    }
    let mut linked: Vec<String> = batch
        .links
        .links
        .iter()
        .map(|l| {
            format!(
                "{:032x}-{:016x}",
                l.span_context.trace_id(),
                l.span_context.span_id()
            )
        })
        .collect();
    linked.sort();
    assert_eq!(
        linked,
        [
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8",
        ],
        "one link per producer span"
    );
    // The per-message parent is kept: each message span is its producer's child.
    let message = spans
        .iter()
        .find(|s| {
            s.name == "sqs.message" && attr(s, "messaging.message.id").as_deref() == Some("xray")
        })
        .unwrap_or_else(|| panic!("no message span: {spans:#?}"));
    assert_eq!(
        format!("{:016x}", message.parent_span_id),
        "53995c3f42cd8ad8"
    );
    assert_eq!(message.span_kind, SpanKind::Consumer);
    for (key, value) in [
        ("messaging.system", "aws_sqs"),
        ("messaging.operation.name", "process"),
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", "orders"),
    ] {
        assert_eq!(attr(message, key).as_deref(), Some(value), "{key}");
    }

    // Metrics: the OTel names with their attributes, and the aliases.
    let labels = |pairs: &[&str]| pairs.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    assert_eq!(
        recorder.labels_of(names::CONSUMED_MESSAGES),
        [labels(&[
            "messaging.destination.name=orders",
            "messaging.operation.name=receive",
            "messaging.system=aws_sqs",
        ])]
    );
    let mut process = recorder.labels_of(names::PROCESS_DURATION);
    process.sort();
    process.dedup();
    assert_eq!(
        process,
        [
            labels(&[
                "error.type=retry",
                "messaging.destination.name=orders",
                "messaging.operation.name=process",
                "messaging.system=aws_sqs",
            ]),
            labels(&[
                "messaging.destination.name=orders",
                "messaging.operation.name=process",
                "messaging.system=aws_sqs",
            ]),
        ]
    );
    assert_eq!(recorder.labels_of(names::RECEIVED).len(), 1, "the alias");
    assert_eq!(
        recorder.labels_of(names::HANDLER_DURATION).len(),
        3,
        "the alias"
    );
}

/// The poller's batch span carries the queue URL (`aws.sqs.queue.url`).
#[test]
fn the_poller_batch_span_carries_the_queue_url() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(sqs_worker::telemetry::otel::layer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);
    let url = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders";
    let batch = [Message::builder("m", "{}").source(url).build()];
    drop(sqs_worker_core::runner::observe::batch_span(
        "orders", url, &batch,
    ));
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let span = spans.iter().find(|s| s.name == "sqs.batch").unwrap();
    assert_eq!(attr(span, "aws.sqs.queue.url").as_deref(), Some(url));
    assert_eq!(
        attr(span, "messaging.destination.name").as_deref(),
        Some("orders")
    );
    assert_eq!(
        attr(span, "messaging.batch.message_count").as_deref(),
        Some("1")
    );
}
