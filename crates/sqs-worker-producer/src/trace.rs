//! Trace propagation: the current trace context goes out with each message.

use std::sync::OnceLock;

/// The trace context of the current span, as the consumer side reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// A W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), sent as the
    /// `traceparent` message attribute.
    pub traceparent: Option<String>,
    /// An X-Ray trace header, sent as the `AWSTraceHeader` system attribute.
    pub xray: Option<String>,
}

/// Returns the current span's trace context.
pub type TraceHook = fn() -> TraceContext;

static HOOK: OnceLock<TraceHook> = OnceLock::new();

/// Installs the function that reads the current trace context (the facade's
/// `telemetry::otel::propagate_send_traces` installs one reading the current
/// `tracing` span's OpenTelemetry context). Returns `false` if one was
/// installed already.
pub fn set_trace_hook(hook: TraceHook) -> bool {
    HOOK.set(hook).is_ok()
}

/// The context to send: the hook's, and X-Ray's `_X_AMZN_TRACE_ID` (set by
/// Lambda per invocation) when the hook gives no X-Ray header.
pub(crate) fn current() -> TraceContext {
    let mut ctx = HOOK.get().map(|h| h()).unwrap_or_default();
    if ctx.xray.is_none() {
        ctx.xray = std::env::var("_X_AMZN_TRACE_ID")
            .ok()
            .filter(|v| v.starts_with("Root="));
    }
    ctx
}
