//! Spans, logs and metrics shared by both runners: the same names whichever
//! way the handler is deployed.
//!
//! Metrics go through the [`metrics`] facade: install any recorder
//! (Prometheus, CloudWatch EMF, …) to export them; without one they cost an
//! atomic load. Names:
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `sqs_worker_messages_received_total` | counter | |
//! | `sqs_worker_messages_succeeded_total` | counter | |
//! | `sqs_worker_messages_failed_total` | counter | `kind` ([`FailureKind::as_str`](crate::runner::FailureKind::as_str)) |
//! | `sqs_worker_messages_retried_total` | counter | |
//! | `sqs_worker_messages_dead_lettered_total` | counter | |
//! | `sqs_worker_messages_acknowledged_total` | counter | `reason` ([`AckReason::as_str`](crate::AckReason::as_str)) |
//! | `sqs_worker_visibility_extensions_total` | counter | |
//! | `sqs_worker_settlement_failures_total` | counter | `action` |
//! | `sqs_worker_sqs_requests_total` | counter | `action` (poller) |
//! | `sqs_worker_handler_duration_seconds` | histogram | |
//! | `sqs_worker_message_age_seconds` | histogram | |
//! | `sqs_worker_receive_count` | histogram | |
//! | `sqs_worker_receive_errors_total` | counter | `kind` (poller) |
//! | `sqs_worker_lambda_cold_starts_total` | counter | (Lambda, once per container) |
//!
//! Message bodies and receipt handles never go into spans, fields or logs.

pub mod emf;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::{Span, field};

use crate::engine::{Failure, FailureKind, Outcome};
use crate::message::Message;

/// Metric names, for exporters and dashboards.
pub mod names {
    /// Messages handed to the engine.
    pub const RECEIVED: &str = "sqs_worker_messages_received_total";
    /// Messages whose handler succeeded.
    pub const SUCCEEDED: &str = "sqs_worker_messages_succeeded_total";
    /// Messages that failed, by `kind`.
    pub const FAILED: &str = "sqs_worker_messages_failed_total";
    /// Failed messages made visible again for a retry.
    pub const RETRIED: &str = "sqs_worker_messages_retried_total";
    /// Messages sent to the dead-letter queue by the runner.
    pub const DEAD_LETTERED: &str = "sqs_worker_messages_dead_lettered_total";
    /// Messages deleted as successes without running a handler (S3 test
    /// events, unrouted messages a router acknowledges), by `reason`. Also
    /// counted in [`SUCCEEDED`].
    pub const ACKNOWLEDGED: &str = "sqs_worker_messages_acknowledged_total";
    /// Visibility extensions (heartbeat or handler-requested).
    pub const EXTENSIONS: &str = "sqs_worker_visibility_extensions_total";
    /// Delete / visibility / dead-letter calls that failed for good, by `action`.
    pub const SETTLEMENT_FAILURES: &str = "sqs_worker_settlement_failures_total";
    /// HTTP requests a runner sent to SQS (retries included), by `action`.
    pub const SQS_REQUESTS: &str = "sqs_worker_sqs_requests_total";
    /// Handler wall time. Handlers that finish without ever waiting (no
    /// `.await` that pends) are timed together per round of starts: each gets
    /// the round's time, an upper bound on its own.
    pub const HANDLER_DURATION: &str = "sqs_worker_handler_duration_seconds";
    /// Now − `SentTimestamp` when the message is handed to the engine.
    pub const MESSAGE_AGE: &str = "sqs_worker_message_age_seconds";
    /// `ApproximateReceiveCount` at receive.
    pub const RECEIVE_COUNT: &str = "sqs_worker_receive_count";
    /// Receive calls that failed and were retried after a backoff, by `kind`:
    /// `over_limit` (the queue's in-flight limit), `credentials` (credentials
    /// or permissions failing after start-up), `transient` (throttling,
    /// network, 5xx).
    pub const RECEIVE_ERRORS: &str = "sqs_worker_receive_errors_total";
    /// Lambda cold starts: 1 on a container's first invocation, never again.
    pub const COLD_STARTS: &str = "sqs_worker_lambda_cold_starts_total";
    /// Messages of a fair-queue tenant at its `max_in_flight_per_group`
    /// limit, released unstarted with a short delay (no tenant label: its
    /// cardinality is unbounded).
    pub const GROUP_LIMITED: &str = "sqs_worker_group_limited_total";
    /// The circuit breaker's state (gauge): 0 closed, 1 open, 2 half-open.
    pub const CIRCUIT_STATE: &str = "sqs_worker_circuit_state";
}

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
    tracing::info_span!(
        "sqs.message",
        messaging.system = "aws_sqs",
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

/// The health of a runner's receive path, for health checks (`/healthz`).
///
/// Runners call [`receive_succeeded`](Health::receive_succeeded) and
/// [`receive_failed`](Health::receive_failed); a health endpoint asks
/// [`check`](Health::check).
#[derive(Debug, Default)]
pub struct Health {
    /// Milliseconds since the Unix epoch when receives started failing; 0 when they are not.
    failing_since_ms: AtomicU64,
    /// Milliseconds since the Unix epoch when SQS started refusing receives
    /// for a limit; 0 when it is not.
    limited_since_ms: AtomicU64,
    last_ok_ms: AtomicU64,
    failures: AtomicU64,
    /// The circuit breaker's state (`CircuitState as u8`); 0 without one.
    circuit: std::sync::atomic::AtomicU8,
}

/// What [`Health::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    /// Receiving works (or has not failed for long).
    Healthy,
    /// Every receive has failed for this long.
    Unhealthy {
        /// For how long.
        failing_for: Duration,
    },
    /// SQS refuses receives for a limit (the queue's in-flight limit): the
    /// runner backs off and goes on; restarting it would not help.
    Degraded {
        /// For how long.
        limited_for: Duration,
    },
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Health {
    /// A receive call succeeded.
    pub fn receive_succeeded(&self) {
        self.failing_since_ms.store(0, Ordering::Relaxed);
        self.limited_since_ms.store(0, Ordering::Relaxed);
        self.last_ok_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A receive call failed.
    pub fn receive_failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let _ = self.failing_since_ms.compare_exchange(
            0,
            now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// A receive call was refused for a limit (SQS `OverLimit`): degraded
    /// until a receive succeeds.
    pub fn receive_limited(&self) {
        let _ = self.limited_since_ms.compare_exchange(
            0,
            now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Unhealthy when every receive has failed for at least `threshold`;
    /// degraded while receives are refused for a limit.
    pub fn check(&self, threshold: Duration) -> HealthStatus {
        match self.failing_since_ms.load(Ordering::Relaxed) {
            0 => match self.limited_since_ms.load(Ordering::Relaxed) {
                0 => HealthStatus::Healthy,
                since => HealthStatus::Degraded {
                    limited_for: Duration::from_millis(now_ms().saturating_sub(since)),
                },
            },
            since => {
                let failing_for = Duration::from_millis(now_ms().saturating_sub(since));
                if failing_for >= threshold {
                    HealthStatus::Unhealthy { failing_for }
                } else {
                    HealthStatus::Healthy
                }
            }
        }
    }

    /// The circuit breaker changed state (its transitions call this).
    pub fn set_circuit(&self, state: crate::flow::CircuitState) {
        self.circuit.store(state as u8, Ordering::Relaxed);
    }

    /// The circuit breaker's state (closed without one).
    pub fn circuit(&self) -> crate::flow::CircuitState {
        use crate::flow::CircuitState;
        match self.circuit.load(Ordering::Relaxed) {
            1 => CircuitState::Open,
            2 => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }

    /// Receive failures so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// The process-wide receive health.
pub fn health() -> &'static Health {
    static HEALTH: std::sync::OnceLock<Health> = std::sync::OnceLock::new();
    HEALTH.get_or_init(Health::default)
}

/// Records messages handed to the engine (runners call this once per batch).
pub fn received(batch: &[Message]) {
    metrics::counter!(names::RECEIVED).increment(batch.len() as u64);
    let age = metrics::histogram!(names::MESSAGE_AGE);
    let count = metrics::histogram!(names::RECEIVE_COUNT);
    // One clock read for the batch.
    let now_ms = now_ms();
    for m in batch {
        if let Some(sent) = m.attributes().sent_timestamp {
            age.record(now_ms.saturating_sub(sent) as f64 / 1000.0);
        }
        count.record(f64::from(m.receive_count()));
    }
}

/// Per-batch metric tally: counters are emitted once per batch (on drop), not
/// once per message, so the hot path builds no metric keys per message.
#[derive(Default)]
pub(crate) struct Tally {
    succeeded: u64,
    failed: [u64; FailureKind::ALL.len()],
    durations: Option<metrics::Histogram>,
}

impl Tally {
    /// Records the same handler time for `n` messages.
    pub(crate) fn handler_times(&mut self, t: Duration, n: usize) {
        self.durations
            .get_or_insert_with(|| metrics::histogram!(names::HANDLER_DURATION))
            .record_many(t.as_secs_f64(), n);
    }

    /// Records a settled message, and logs a failure (message id, kind,
    /// cause; never the body).
    pub(crate) fn record(
        &mut self,
        msg: &Message,
        outcome: &Outcome,
        handler_time: Option<Duration>,
    ) {
        if let Some(t) = handler_time {
            self.durations
                .get_or_insert_with(|| metrics::histogram!(names::HANDLER_DURATION))
                .record(t.as_secs_f64());
        }
        match outcome {
            Outcome::Succeeded => self.succeeded += 1,
            Outcome::Failed(f) => {
                self.failed[f.kind as usize] += 1;
                log_failure(msg, f);
            }
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        if self.succeeded > 0 {
            metrics::counter!(names::SUCCEEDED).increment(self.succeeded);
        }
        for (kind, n) in FailureKind::ALL.iter().zip(self.failed) {
            if n > 0 {
                metrics::counter!(names::FAILED, "kind" => kind.as_str()).increment(n);
            }
        }
    }
}

/// Logs a failed message at WARN (message id, receive count, group, kind,
/// retry delay and the error chain; never the body or receipt handle).
pub fn log_failure(msg: &Message, f: &Failure) {
    tracing::warn!(
        messaging.message.id = msg.id(),
        messaging.sqs.receive_count = msg.receive_count(),
        messaging.sqs.message_group_id = msg.group_id(),
        kind = f.kind.as_str(),
        retry_delay_ms = f.retry_delay.as_millis() as u64,
        error = %f.error,
        "message failed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_turns_unhealthy_only_after_the_threshold() {
        let h = Health::default();
        assert_eq!(h.check(Duration::ZERO), HealthStatus::Healthy);
        h.receive_failed();
        assert!(matches!(
            h.check(Duration::ZERO),
            HealthStatus::Unhealthy { .. }
        ));
        assert_eq!(h.check(Duration::from_secs(60)), HealthStatus::Healthy);
        h.receive_succeeded();
        assert_eq!(h.check(Duration::ZERO), HealthStatus::Healthy);
        assert_eq!(h.failures(), 1);
    }
}
