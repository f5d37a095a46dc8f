//! Metric names, for exporters and dashboards, and their mapping to the
//! OpenTelemetry messaging semantic conventions.
//!
//! Two of the framework's metrics have an OpenTelemetry counterpart:
//! [`RECEIVED`] is [`CONSUMED_MESSAGES`] and [`HANDLER_DURATION`] is
//! [`PROCESS_DURATION`]. Both names are emitted by default; the
//! `sqs_worker_*` one is an alias kept for one release
//! ([`MetricNames`], `SQS_WORKER_METRIC_NAMES`). Every other metric is
//! framework-specific and keeps its one name. [`ALL`] lists them all: adding
//! a metric is a constant here, a row in [`ALL`] and one in the README's
//! table (a test checks the two tables agree).

use std::sync::atomic::{AtomicU8, Ordering};

use crate::config::{ConfigError, Env, var};

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
/// The adaptive concurrency limit now (gauge; poller with
/// `adaptive_concurrency`): how many messages may be in flight.
pub const CONCURRENCY_LIMIT: &str = "sqs_worker_concurrency_limit";

/// OpenTelemetry `messaging.client.consumed.messages`: counter, unit
/// `{message}`; the counterpart of [`RECEIVED`]. Attributes
/// `messaging.system = aws_sqs`, `messaging.operation.name = receive`,
/// `messaging.destination.name` (the queue name, when known).
pub const CONSUMED_MESSAGES: &str = "messaging.client.consumed.messages";
/// OpenTelemetry `messaging.process.duration`: histogram, unit `s`; the
/// counterpart of [`HANDLER_DURATION`] (the same values). Attributes
/// `messaging.system = aws_sqs`, `messaging.operation.name = process`,
/// `messaging.destination.name` (when known), and `error.type` (the failure
/// kind, [`FailureKind::as_str`](crate::runner::FailureKind::as_str)) when the
/// handler failed.
pub const PROCESS_DURATION: &str = "messaging.process.duration";

/// OpenTelemetry attribute names (metric labels and span fields) and values.
pub mod attr {
    /// `messaging.system`.
    pub const SYSTEM: &str = "messaging.system";
    /// The value of [`SYSTEM`] for SQS.
    pub const AWS_SQS: &str = "aws_sqs";
    /// `messaging.operation.name`: `receive` on the consumed-messages counter,
    /// `process` on the process duration and the batch and message spans.
    pub const OPERATION_NAME: &str = "messaging.operation.name";
    /// `messaging.operation.type` (spans): `process`.
    pub const OPERATION_TYPE: &str = "messaging.operation.type";
    /// `messaging.destination.name`: the queue name.
    pub const DESTINATION_NAME: &str = "messaging.destination.name";
    /// `aws.sqs.queue.url` (spans, poller): the queue URL.
    pub const QUEUE_URL: &str = "aws.sqs.queue.url";
    /// `messaging.message.id` (message spans).
    pub const MESSAGE_ID: &str = "messaging.message.id";
    /// `messaging.batch.message_count` (batch spans).
    pub const BATCH_MESSAGE_COUNT: &str = "messaging.batch.message_count";
    /// `error.type`: the failure kind, on failures.
    pub const ERROR_TYPE: &str = "error.type";
}

/// An instrument kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instrument {
    /// A monotonic counter.
    Counter,
    /// A histogram.
    Histogram,
    /// A gauge.
    Gauge,
}

impl Instrument {
    /// `counter`, `histogram` or `gauge`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Histogram => "histogram",
            Self::Gauge => "gauge",
        }
    }
}

/// The OpenTelemetry counterpart of a framework metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtelName {
    /// The OpenTelemetry metric name.
    pub name: &'static str,
    /// Its unit (UCUM, as the conventions give it).
    pub unit: &'static str,
    /// The attributes it carries.
    pub attributes: &'static [&'static str],
}

/// One metric: its name, instrument, unit, labels and OpenTelemetry
/// counterpart (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// The framework's name (`sqs_worker_*`).
    pub name: &'static str,
    /// The instrument.
    pub instrument: Instrument,
    /// The unit (`{message}`, `s`, `1`, ...).
    pub unit: &'static str,
    /// Its labels.
    pub labels: &'static [&'static str],
    /// The OpenTelemetry messaging metric it aliases, if any.
    pub otel: Option<OtelName>,
}

const fn own(
    name: &'static str,
    instrument: Instrument,
    unit: &'static str,
    labels: &'static [&'static str],
) -> Metric {
    Metric {
        name,
        instrument,
        unit,
        labels,
        otel: None,
    }
}

use Instrument::{Counter, Gauge, Histogram};

/// Every metric the framework emits, in the README's order.
pub const ALL: &[Metric] = &[
    Metric {
        otel: Some(OtelName {
            name: CONSUMED_MESSAGES,
            unit: "{message}",
            attributes: &[attr::SYSTEM, attr::OPERATION_NAME, attr::DESTINATION_NAME],
        }),
        ..own(RECEIVED, Counter, "{message}", &[])
    },
    own(SUCCEEDED, Counter, "{message}", &[]),
    own(FAILED, Counter, "{message}", &["kind"]),
    own(RETRIED, Counter, "{message}", &[]),
    own(DEAD_LETTERED, Counter, "{message}", &[]),
    own(ACKNOWLEDGED, Counter, "{message}", &["reason"]),
    own(EXTENSIONS, Counter, "{extension}", &[]),
    own(SETTLEMENT_FAILURES, Counter, "{call}", &["action"]),
    own(SQS_REQUESTS, Counter, "{request}", &["action"]),
    own(RECEIVE_ERRORS, Counter, "{call}", &["kind"]),
    Metric {
        otel: Some(OtelName {
            name: PROCESS_DURATION,
            unit: "s",
            attributes: &[
                attr::SYSTEM,
                attr::OPERATION_NAME,
                attr::DESTINATION_NAME,
                attr::ERROR_TYPE,
            ],
        }),
        ..own(HANDLER_DURATION, Histogram, "s", &[])
    },
    own(MESSAGE_AGE, Histogram, "s", &[]),
    own(RECEIVE_COUNT, Histogram, "{receive}", &[]),
    own(COLD_STARTS, Counter, "{start}", &[]),
    own(CIRCUIT_STATE, Gauge, "1", &[]),
    own(GROUP_LIMITED, Counter, "{message}", &[]),
    own(CONCURRENCY_LIMIT, Gauge, "{message}", &[]),
    own(
        crate::idempotency::names::DUPLICATES,
        Counter,
        "{message}",
        &[],
    ),
    own(
        crate::idempotency::names::IN_PROGRESS,
        Counter,
        "{message}",
        &[],
    ),
];

/// The OpenTelemetry name of a framework metric, if it has one.
pub fn otel_name(name: &str) -> Option<&'static str> {
    ALL.iter()
        .find(|m| m.name == name)
        .and_then(|m| m.otel)
        .map(|o| o.name)
}

/// Which names the metrics with an OpenTelemetry counterpart are emitted
/// under (`SQS_WORKER_METRIC_NAMES`). Metrics without one always keep their
/// `sqs_worker_*` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricNames {
    /// Both (the default for this release): the OpenTelemetry name and the
    /// `sqs_worker_*` alias.
    #[default]
    Both,
    /// Only the OpenTelemetry name.
    Otel,
    /// Only the `sqs_worker_*` name (the aliases go away in the next release).
    Legacy,
}

impl MetricNames {
    /// `both`, `otel` or `legacy` (any case).
    pub fn parse(value: &str) -> Option<Self> {
        [
            ("both", Self::Both),
            ("otel", Self::Otel),
            ("legacy", Self::Legacy),
        ]
        .into_iter()
        .find_map(|(name, m)| value.trim().eq_ignore_ascii_case(name).then_some(m))
    }

    /// From `SQS_WORKER_METRIC_NAMES` ([`Both`](Self::Both) when unset).
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        match env.string(var::METRIC_NAMES) {
            None => Ok(Self::Both),
            Some(value) => Self::parse(&value).ok_or(ConfigError::InvalidEnv {
                var: var::METRIC_NAMES,
                value,
                reason: "expected `both`, `otel` or `legacy`".into(),
            }),
        }
    }

    /// Whether the OpenTelemetry names are emitted.
    #[inline]
    pub fn otel(self) -> bool {
        self != Self::Legacy
    }

    /// Whether the `sqs_worker_*` names are emitted.
    #[inline]
    pub fn legacy(self) -> bool {
        self != Self::Otel
    }
}

static MODE: AtomicU8 = AtomicU8::new(MetricNames::Both as u8);

/// Chooses the metric names for the process. `sqs_worker::telemetry::init`
/// sets them from `SQS_WORKER_METRIC_NAMES` (core reads no variable itself);
/// without it, [`MetricNames::Both`].
pub fn set_metric_names(names: MetricNames) {
    MODE.store(names as u8, Ordering::Relaxed);
}

/// The metric names in use (one atomic load).
#[inline]
pub fn metric_names() -> MetricNames {
    match MODE.load(Ordering::Relaxed) {
        v if v == MetricNames::Otel as u8 => MetricNames::Otel,
        v if v == MetricNames::Legacy as u8 => MetricNames::Legacy,
        _ => MetricNames::Both,
    }
}

/// The queue name in a queue URL or ARN (its last path or ARN segment).
pub fn destination_name(source: &str) -> &str {
    source.rsplit(['/', ':']).next().unwrap_or(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_one_name_and_the_aliases_map_to_otel_messaging_names() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(m.name.starts_with("sqs_worker_"), "{}", m.name);
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            if let Some(o) = m.otel {
                assert!(o.name.starts_with("messaging."), "{}", o.name);
                assert!(seen.insert(o.name), "{} listed twice", o.name);
                assert_eq!(o.unit, m.unit, "{}: an alias keeps the unit", m.name);
                assert!(o.attributes.contains(&attr::SYSTEM));
                assert!(o.attributes.contains(&attr::OPERATION_NAME));
            }
        }
        assert_eq!(
            otel_name(RECEIVED),
            Some("messaging.client.consumed.messages")
        );
        assert_eq!(
            otel_name(HANDLER_DURATION),
            Some("messaging.process.duration")
        );
        let consumed = ALL.iter().find(|m| m.name == RECEIVED).and_then(|m| m.otel);
        assert_eq!(consumed.map(|o| o.unit), Some("{message}"));
        let duration = ALL.iter().find(|m| m.name == HANDLER_DURATION);
        assert_eq!(duration.map(|m| m.instrument), Some(Instrument::Histogram));
        assert_eq!(duration.and_then(|m| m.otel).map(|o| o.unit), Some("s"));
        // Framework-specific metrics have no counterpart.
        for name in [
            SUCCEEDED,
            FAILED,
            RETRIED,
            DEAD_LETTERED,
            SQS_REQUESTS,
            MESSAGE_AGE,
        ] {
            assert_eq!(otel_name(name), None, "{name}");
        }
        assert_eq!(otel_name("sqs_worker_unknown_total"), None);
    }

    #[test]
    fn metric_names_come_from_the_environment() {
        let env = |v: &'static str| Env::from_fn(move |_: &str| Some(v.to_owned()));
        assert_eq!(
            MetricNames::from_env(&env("")).ok(),
            Some(MetricNames::Both)
        );
        assert_eq!(
            MetricNames::from_env(&env("OTEL")).ok(),
            Some(MetricNames::Otel)
        );
        assert_eq!(
            MetricNames::from_env(&env(" legacy ")).ok(),
            Some(MetricNames::Legacy)
        );
        assert_eq!(
            MetricNames::from_env(&env("both")).ok(),
            Some(MetricNames::Both)
        );
        let err = MetricNames::from_env(&env("prometheus"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SQS_WORKER_METRIC_NAMES"), "{err}");
        assert!(MetricNames::Both.otel() && MetricNames::Both.legacy());
        assert!(MetricNames::Otel.otel() && !MetricNames::Otel.legacy());
        assert!(!MetricNames::Legacy.otel() && MetricNames::Legacy.legacy());
    }

    #[test]
    fn the_destination_is_the_queue_name_of_a_url_or_arn() {
        assert_eq!(
            destination_name("https://sqs.us-east-1.amazonaws.com/123456789012/orders"),
            "orders"
        );
        assert_eq!(
            destination_name("arn:aws:sqs:us-east-1:123456789012:orders.fifo"),
            "orders.fifo"
        );
        assert_eq!(
            destination_name("http://localhost:4566/000000000000/q"),
            "q"
        );
    }
}
