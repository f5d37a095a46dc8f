//! OpenTelemetry (feature `opentelemetry`): message spans that continue the
//! producer's trace, exported through any `tracing-opentelemetry` tracer.
//!
//! ```no_run
//! # fn tracer() -> opentelemetry::trace::noop::NoopTracer { opentelemetry::trace::noop::NoopTracer::new() }
//! use tracing_subscriber::prelude::*;
//!
//! // Your exporter's tracer (OTLP, X-Ray, stdout, …):
//! let tracer = tracer();
//! tracing_subscriber::registry()
//!     .with(sqs_worker::telemetry::otel::layer(tracer))
//!     .init();
//! sqs_worker::telemetry::otel::link_producer_traces();
//! ```
//!
//! The producer's context comes from the W3C `traceparent` message attribute
//! when present, else from the `AWSTraceHeader` system attribute (X-Ray's
//! `Root=1-…;Parent=…;Sampled=…`, which SQS sets when the producer is traced by
//! X-Ray). Each `sqs.message` span then has the producer's span as its parent,
//! so one trace runs from the send to the handler ([`MessageSpans::Child`];
//! [`link_producer_traces_as`]`(`[`MessageSpans::Link`]`)` links instead), and
//! each batch span (`sqs.batch`) links to the producers of all its messages,
//! as the OpenTelemetry messaging conventions do for batches.

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::Message;

pub use tracing_opentelemetry::OpenTelemetryLayer;

/// The `tracing` layer that exports spans through `tracer`.
pub fn layer<S, T>(tracer: T) -> OpenTelemetryLayer<S, T>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    T: opentelemetry::trace::Tracer + 'static,
    T::Span: Send + Sync,
{
    tracing_opentelemetry::layer().with_tracer(tracer)
}

/// How a message span refers to its producer's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageSpans {
    /// The message span is the producer span's child: one trace from the
    /// send to the handler (the default).
    #[default]
    Child,
    /// The message span starts a trace of its own (or continues the
    /// current one) and links to the producer's span, as the messaging
    /// conventions do for the batch span.
    Link,
}

/// Connects consumer spans to their producers' traces (see the module docs):
/// each `sqs.message` span becomes its producer's child, and each batch span
/// (`sqs.batch`) links to every producer of its messages. Returns `false` if
/// another message-span hook is installed already.
pub fn link_producer_traces() -> bool {
    link_producer_traces_as(MessageSpans::Child)
}

/// [`link_producer_traces`], choosing how message spans refer to their
/// producer: as its child or with a link. Batch spans always link. Returns
/// `false` if another message-span hook is installed already.
pub fn link_producer_traces_as(message_spans: MessageSpans) -> bool {
    use sqs_worker_core::runner::observe;
    let linked = observe::set_message_span_hook(match message_spans {
        MessageSpans::Child => |span, msg| {
            if let Some(parent) = producer_context(msg) {
                let _ = span.set_parent(Context::new().with_remote_span_context(parent));
            }
        },
        MessageSpans::Link => |span, msg| {
            if let Some(producer) = producer_context(msg) {
                span.add_link(producer);
            }
        },
    });
    // A batch hook installed by someone else is left alone.
    let _ = observe::set_batch_span_hook(link_batch);
    linked
}

/// Links a batch span to the producer of each of its messages (the
/// messaging conventions' way for a span about many messages). Messages
/// from one producer span give one link.
fn link_batch(span: &tracing::Span, batch: &[Message]) {
    let mut linked: Vec<SpanId> = Vec::new();
    for msg in batch {
        if let Some(producer) = producer_context(msg)
            && !linked.contains(&producer.span_id())
        {
            linked.push(producer.span_id());
            span.add_link(producer);
        }
    }
}

/// The producer's span context carried by `msg`, if any (a malformed header
/// is ignored).
pub fn producer_context(msg: &Message) -> Option<SpanContext> {
    msg.message_attribute("traceparent")
        .and_then(|a| a.as_str())
        .and_then(parse_traceparent)
        .or_else(|| msg.trace_header().and_then(parse_xray))
}

/// W3C `traceparent`: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    remote(trace, span, flags & 1 == 1)
}

/// X-Ray `AWSTraceHeader`: `Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=<0|1>`.
pub fn parse_xray(value: &str) -> Option<SpanContext> {
    let (mut root, mut parent, mut sampled) = (None, None, false);
    for field in value.split(';') {
        match field.trim().split_once('=')? {
            ("Root", v) => root = Some(v),
            ("Parent", v) => parent = Some(v),
            ("Sampled", v) => sampled = v == "1",
            _ => {}
        }
    }
    let mut root = root?.split('-');
    let (version, time, id) = (root.next()?, root.next()?, root.next()?);
    if version != "1" || time.len() != 8 || id.len() != 24 {
        return None;
    }
    remote(&format!("{time}{id}"), parent?, sampled)
}

fn remote(trace: &str, span: &str, sampled: bool) -> Option<SpanContext> {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(trace) || !hex(span) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Some(SpanContext::new(
        trace_id,
        span_id,
        flags,
        true,
        TraceState::default(),
    ))
}

/// Makes the producer (`sqs_worker::producer::Sender`, feature `producer`)
/// send the current `tracing` span's OpenTelemetry context as a W3C
/// `traceparent` message attribute, so the consumer's message span becomes
/// its child. Returns `false` if another send hook is installed already.
#[cfg(feature = "producer")]
pub fn propagate_send_traces() -> bool {
    sqs_worker_producer::set_trace_hook(|| sqs_worker_producer::TraceContext {
        traceparent: current_traceparent(),
        xray: None,
    })
}

/// The current `tracing` span's OpenTelemetry context as a W3C
/// `traceparent`, if it has a valid one.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `MessageSpans::Link`, a message span starts its own trace and
    /// links to its producer instead of becoming its child. (The only test
    /// of this binary that installs the process-wide hooks.)
    #[test]
    fn message_spans_can_link_to_their_producer_instead() {
        use opentelemetry::trace::TracerProvider as _;
        use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
        use tracing_subscriber::prelude::*;

        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry().with(layer(provider.tracer("test")));
        let _guard = tracing::subscriber::set_default(subscriber);
        assert!(link_producer_traces_as(MessageSpans::Link));

        let msg = Message::builder("m", "{}")
            .message_attribute(
                "traceparent",
                crate::MessageAttribute::string(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            )
            .build();
        drop(sqs_worker_core::runner::observe::message_span(&msg));
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        let span = spans.iter().find(|s| s.name == "sqs.message").unwrap();
        assert_eq!(span.parent_span_id, SpanId::INVALID, "a trace of its own");
        assert_ne!(
            format!("{:032x}", span.span_context.trace_id()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let links: Vec<String> = span
            .links
            .links
            .iter()
            .map(|l| format!("{:016x}", l.span_context.span_id()))
            .collect();
        assert_eq!(links, ["00f067aa0ba902b7"]);
    }

    #[test]
    fn parses_w3c_and_xray_headers() {
        let c =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            format!("{:032x}", c.trace_id()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(format!("{:016x}", c.span_id()), "00f067aa0ba902b7");
        assert!(c.is_sampled() && c.is_remote());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        let x = parse_xray(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .unwrap();
        assert_eq!(
            format!("{:032x}", x.trace_id()),
            "5759e988bd862e3fe1be46a994272793"
        );
        assert_eq!(format!("{:016x}", x.span_id()), "53995c3f42cd8ad8");
        assert!(x.is_sampled());
        assert!(parse_xray("Root=1-5759e988-bd862e3fe1be46a994272793").is_none());
        assert!(parse_xray("garbage").is_none());
    }
}
