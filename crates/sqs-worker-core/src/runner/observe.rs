//! Spans, logs and metrics shared by both runners: the same names whichever
//! way the handler is deployed.
//!
//! Metrics go through the [`metrics`] facade: install any recorder
//! (Prometheus, CloudWatch EMF, …) to export them; without one they cost an
//! atomic load. Their names, and the mapping of two of them to the
//! OpenTelemetry messaging conventions, are in [`names`] ([`names::ALL`]).
//!
//! Spans follow the OpenTelemetry messaging conventions for SQS: a batch
//! span (`sqs.batch`, [`batch_span`] in the poller) and a span per message
//! (`sqs.message`, [`message_span`]), both `process` operations of a consumer
//! (`messaging.system = aws_sqs`, `messaging.operation.name`,
//! `messaging.operation.type`, `messaging.destination.name`,
//! `aws.sqs.queue.url` when the queue URL is known). Hooks
//! ([`set_message_span_hook`], [`set_batch_span_hook`]) let the facade's
//! `opentelemetry` feature parent each message span on its producer's span
//! and link the batch span to every producer.
//!
//! Message bodies and receipt handles never go into spans, fields or logs.

pub mod emf;
mod health;
mod keys;
pub mod names;
mod record;

pub use health::{Health, HealthStatus, health};
pub(crate) use record::Tally;
pub use record::{log_failure, received};

use tracing::{Span, field};

use crate::message::Message;

/// The span a message's handler runs in. It carries the producer's trace
/// context, so traces connect across the queue: the `AWSTraceHeader` system
/// attribute (X-Ray) and a W3C `traceparent` message attribute, when present.
pub fn message_span(msg: &Message) -> Span {
    if info_spans_off() {
        return Span::none();
    }
    let span = message_span_fields(msg);
    if let Some(hook) = SPAN_HOOK.get() {
        hook(&span, msg);
    }
    span
}

fn message_span_fields(msg: &Message) -> Span {
    let traceparent = msg
        .message_attribute("traceparent")
        .and_then(|a| a.as_str());
    let source = msg.source();
    tracing::info_span!(
        "sqs.message",
        otel.kind = "consumer",
        messaging.system = "aws_sqs",
        messaging.operation.name = "process",
        messaging.operation.type = "process",
        messaging.destination.name = source.map(names::destination_name),
        aws.sqs.queue.url = source.filter(|s| s.starts_with("http")),
        messaging.message.id = msg.id(),
        messaging.sqs.receive_count = msg.receive_count(),
        messaging.sqs.message_group_id = msg.group_id(),
        aws.xray.trace_header = msg.trace_header(),
        traceparent = traceparent,
        outcome = field::Empty,
    )
}

/// Whether no subscriber takes INFO spans (none is installed, or all filter
/// at a stricter level): runners then skip building their spans. (The
/// macros' disabled path would still evaluate every field for the `log`
/// crate fallback, which `lambda_runtime` switches on, on every message;
/// without a subscriber those spans lead nowhere.)
#[inline]
pub fn info_spans_off() -> bool {
    tracing::Level::INFO > tracing::level_filters::LevelFilter::current()
}

/// A function called with each message span as it is created (e.g. to set
/// its OpenTelemetry parent from the producer's trace context).
pub type SpanHook = fn(&Span, &Message);

static SPAN_HOOK: std::sync::OnceLock<SpanHook> = std::sync::OnceLock::new();

/// Installs the process-wide [`SpanHook`]; `false` if one is installed already.
/// `sqs_worker::telemetry::otel::link_producer_traces` uses it.
pub fn set_message_span_hook(hook: SpanHook) -> bool {
    SPAN_HOOK.set(hook).is_ok()
}

/// A function called with each batch span as it is created and the batch's
/// messages (e.g. to link the span to every producer's trace context).
pub type BatchSpanHook = fn(&Span, &[Message]);

static BATCH_HOOK: std::sync::OnceLock<BatchSpanHook> = std::sync::OnceLock::new();

/// Installs the process-wide [`BatchSpanHook`]; `false` if one is installed
/// already. `sqs_worker::telemetry::otel::link_producer_traces` uses it.
pub fn set_batch_span_hook(hook: BatchSpanHook) -> bool {
    BATCH_HOOK.set(hook).is_ok()
}

/// Runners call this with each batch span they create (after creating it,
/// before entering it): runs the [`BatchSpanHook`], if any. Nothing when the
/// span is disabled.
pub fn batch_span_created(span: &Span, batch: &[Message]) {
    if span.is_none() {
        return;
    }
    if let Some(hook) = BATCH_HOOK.get() {
        hook(span, batch);
    }
}

/// The poller's span for a received batch (none when no subscriber takes
/// INFO spans): a `process` operation on `queue_url` (the queue
/// `queue_name`), with [`batch_span_created`] already called.
pub fn batch_span(queue_name: &str, queue_url: &str, batch: &[Message]) -> Span {
    if info_spans_off() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "sqs.batch",
        otel.kind = "consumer",
        messaging.system = "aws_sqs",
        messaging.operation.name = "process",
        messaging.operation.type = "process",
        messaging.destination.name = queue_name,
        aws.sqs.queue.url = queue_url,
        messaging.batch.message_count = batch.len(),
    );
    batch_span_created(&span, batch);
    span
}
