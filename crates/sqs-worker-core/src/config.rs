//! The configuration vocabulary both runners share: one error type for bad
//! settings ([`ConfigError`]), one parser per unit ([`Env`]), and the names
//! of every environment variable ([`var`]).
//!
//! Units, everywhere: a duration is a variable ending in `_SECONDS` holding a
//! decimal number of seconds (`0.5`, `20`); the settings SQS takes in whole
//! seconds (the long-poll wait) refuse fractions. A count is a whole number,
//! at least 1. A switch is `true`/`false` (also `1`/`0`, `on`/`off`,
//! `yes`/`no`). An empty or blank variable counts as unset.

use std::time::Duration;

/// Every environment variable sqs-worker reads, in one place. The README's
/// configuration table lists each with its unit, default and the runner
/// that reads it.
pub mod var {
    /// The queue URL to poll (poller; required unless [`QUEUE_NAME`] is set),
    /// or to send to (`Sender::from_env` of `sqs-worker-producer`).
    pub const QUEUE_URL: &str = "SQS_QUEUE_URL";
    /// A queue name, resolved with `GetQueueUrl` (poller, producer).
    pub const QUEUE_NAME: &str = "SQS_QUEUE_NAME";
    /// Messages handled at once by this process (both runners).
    pub const CONCURRENCY: &str = "SQS_WORKER_CONCURRENCY";
    /// Receive loops (poller).
    pub const RECEIVERS: &str = "SQS_WORKER_RECEIVERS";
    /// Long-poll wait, whole seconds 1–20 (poller).
    pub const WAIT_SECONDS: &str = "SQS_WORKER_WAIT_SECONDS";
    /// Visibility timeout to receive with and extend by, seconds (poller).
    pub const VISIBILITY_TIMEOUT_SECONDS: &str = "SQS_WORKER_VISIBILITY_TIMEOUT_SECONDS";
    /// Heartbeat (visibility extension check) interval, seconds (poller).
    pub const HEARTBEAT_SECONDS: &str = "SQS_WORKER_HEARTBEAT_SECONDS";
    /// Longest processing time of one message from its receipt, seconds (poller).
    pub const MAX_PROCESSING_SECONDS: &str = "SQS_WORKER_MAX_PROCESSING_SECONDS";
    /// Dead-letter queue URL for permanent failures (both runners).
    pub const DLQ_URL: &str = "SQS_WORKER_DLQ_URL";
    /// Shutdown grace period, seconds (poller).
    pub const GRACE_SECONDS: &str = "SQS_WORKER_GRACE_SECONDS";
    /// Stop once the queue was idle this long, seconds (poller).
    pub const IDLE_EXIT_SECONDS: &str = "SQS_WORKER_IDLE_EXIT_SECONDS";
    /// Log progress counters this often, seconds (poller).
    pub const STATS_SECONDS: &str = "SQS_WORKER_STATS_SECONDS";
    /// Time kept before the invocation deadline, seconds (Lambda).
    pub const SAFETY_MARGIN_SECONDS: &str = "SQS_WORKER_SAFETY_MARGIN_SECONDS";
    /// No handler starts when less than this is left before the engine's
    /// deadline (the invocation deadline less [`SAFETY_MARGIN_SECONDS`]),
    /// seconds (Lambda; `EngineConfig::start_margin`).
    pub const START_MARGIN_SECONDS: &str = "SQS_WORKER_START_MARGIN_SECONDS";
    /// A switch (Lambda): a FIFO batch stops at its first failure and
    /// reports every record not started, as AWS documents for partial batch
    /// responses (`EngineConfig::fifo_stop_batch_on_failure`).
    pub const FIFO_STOP_BATCH_ON_FAILURE: &str = "SQS_WORKER_FIFO_STOP_BATCH_ON_FAILURE";
    /// Retry delays as visibility changes on or off (Lambda, `sqs-client`).
    pub const BACKOFF: &str = "SQS_WORKER_BACKOFF";
    /// Which metric names to emit: `both` (default: the OpenTelemetry
    /// messaging names and the `sqs_worker_*` aliases), `otel` or `legacy`
    /// (`observe::names::MetricNames`).
    pub const METRIC_NAMES: &str = "SQS_WORKER_METRIC_NAMES";
    /// `json` or `text` log lines (facade's telemetry).
    pub const LOG_FORMAT: &str = "SQS_WORKER_LOG_FORMAT";
    /// Address of the `/metrics` and `/healthz` endpoint (facade, poller).
    pub const METRICS_ADDR: &str = "SQS_WORKER_METRICS_ADDR";
    /// `/healthz` turns unhealthy after receives failed this long, seconds.
    pub const UNHEALTHY_AFTER_SECONDS: &str = "SQS_WORKER_UNHEALTHY_AFTER_SECONDS";
    /// The retry window (decimal seconds): a failing message's retries are
    /// spread over it (`RetryBudget`).
    pub const RETRY_WINDOW_SECONDS: &str = "SQS_WORKER_RETRY_WINDOW_SECONDS";
    /// The queue's `maxReceiveCount`, for Lambda without an SQS client to read it.
    pub const MAX_RECEIVE_COUNT: &str = "SQS_WORKER_MAX_RECEIVE_COUNT";
    /// At most this many messages of one fair-queue tenant (a `MessageGroupId`
    /// on a standard queue) run at once; the rest are released with a short
    /// delay (both runners; ignored on FIFO queues; `GroupLimit`).
    pub const MAX_IN_FLIGHT_PER_GROUP: &str = "SQS_WORKER_MAX_IN_FLIGHT_PER_GROUP";
    /// The most messages received ahead of a free handler slot, 0 to turn it
    /// off (poller; `PollerBuilder::receive_ahead`).
    pub const RECEIVE_AHEAD: &str = "SQS_WORKER_RECEIVE_AHEAD";
    /// A switch: a circuit breaker with its default settings (`CircuitBreaker`).
    pub const CIRCUIT_BREAKER: &str = "SQS_WORKER_CIRCUIT_BREAKER";
    /// Handler starts per second across the process, a decimal number
    /// (both runners; `RateLimit`).
    pub const RATE_LIMIT: &str = "SQS_WORKER_RATE_LIMIT";
    /// Adaptive concurrency between 1 and the concurrency, a switch (poller;
    /// `AdaptiveConcurrency`).
    pub const ADAPTIVE_CONCURRENCY: &str = "SQS_WORKER_ADAPTIVE_CONCURRENCY";
    /// A switch (Lambda): when every record of an invocation failed, fail the
    /// invocation so the event source mapping scales its polling down.
    pub const FAIL_INVOCATION_WHEN_ALL_FAILED: &str = "SQS_WORKER_FAIL_INVOCATION_WHEN_ALL_FAILED";
    /// The DynamoDB idempotency table (`sqs-worker-dynamodb`).
    pub const IDEMPOTENCY_TABLE: &str = "SQS_WORKER_IDEMPOTENCY_TABLE";
    /// The S3 buckets large payloads may be read from, comma-separated; set,
    /// it turns on resolving Extended Client pointers (facade's `run`,
    /// `PayloadLayer::from_env` of `sqs-worker-producer`).
    pub const PAYLOAD_BUCKETS: &str = "SQS_WORKER_PAYLOAD_BUCKETS";
    /// The S3 bucket a producer stores large bodies in; set, it turns on
    /// offloading (`Sender::from_env` and `LargePayloads::from_env` of
    /// `sqs-worker-producer`, feature `large-payloads`).
    pub const OFFLOAD_BUCKET: &str = "SQS_WORKER_OFFLOAD_BUCKET";
    /// CloudWatch namespace of the EMF metrics (Lambda; default `sqs-worker`).
    pub const METRICS_NAMESPACE: &str = "SQS_WORKER_METRICS_NAMESPACE";
    /// The `service` dimension of the EMF metrics (Lambda; default the
    /// function name, `AWS_LAMBDA_FUNCTION_NAME`).
    pub const SERVICE: &str = "SQS_WORKER_SERVICE";
    /// The function name (set by Lambda; the default [`SERVICE`]).
    pub const LAMBDA_FUNCTION_NAME: &str = "AWS_LAMBDA_FUNCTION_NAME";
    /// The Lambda Runtime API's address (set by Lambda): when set,
    /// `sqs_worker::run` runs the Lambda adapter, else the poller.
    pub const LAMBDA_RUNTIME_API: &str = "AWS_LAMBDA_RUNTIME_API";
    /// The log level chosen in Lambda's advanced logging controls (set by
    /// Lambda: `TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR` or `FATAL`); used
    /// when [`RUST_LOG`] is not set.
    pub const LAMBDA_LOG_LEVEL: &str = "AWS_LAMBDA_LOG_LEVEL";
    /// The log filter (`tracing-subscriber`'s `EnvFilter` syntax).
    pub const RUST_LOG: &str = "RUST_LOG";
    /// Task scale-in protection on ECS on or off (poller; default on when
    /// [`ECS_AGENT_URI`] is set).
    pub const SCALE_IN_PROTECTION: &str = "SQS_WORKER_SCALE_IN_PROTECTION";
    /// How long each scale-in protection lasts unless renewed, seconds
    /// (poller; sent to ECS in whole minutes).
    pub const SCALE_IN_PROTECTION_EXPIRY_SECONDS: &str =
        "SQS_WORKER_SCALE_IN_PROTECTION_EXPIRY_SECONDS";
    /// Unprotect the task once idle this long, seconds (poller).
    pub const SCALE_IN_PROTECTION_IDLE_SECONDS: &str =
        "SQS_WORKER_SCALE_IN_PROTECTION_IDLE_SECONDS";
    /// The ECS agent's endpoint (set by ECS; where scale-in protection is
    /// set).
    pub const ECS_AGENT_URI: &str = "ECS_AGENT_URI";
    /// ECS's stop timeout (set by the platform, read to warn when the grace
    /// period does not fit in it; a Go duration such as `30s` or `2m`).
    pub const ECS_CONTAINER_STOP_TIMEOUT: &str = "ECS_CONTAINER_STOP_TIMEOUT";

    /// Replaced by [`VISIBILITY_TIMEOUT_SECONDS`]; still read, with a warning.
    pub const OLD_VISIBILITY_TIMEOUT: &str = "SQS_WORKER_VISIBILITY_TIMEOUT";
    /// Replaced by [`SAFETY_MARGIN_SECONDS`] (milliseconds); still read, with
    /// a warning.
    pub const OLD_SAFETY_MARGIN_MS: &str = "SQS_WORKER_SAFETY_MARGIN_MS";
}

/// The largest [`SQS_WORKER_CONCURRENCY`](var::CONCURRENCY) (and builder
/// concurrency) accepted: SQS's in-flight limit of a standard queue is about
/// 120,000, so more would only meet `OverLimit`.
pub const MAX_CONCURRENCY: usize = 100_000;

/// The longest duration any setting accepts: 12 hours, SQS's limit on a
/// message's total visibility. Larger values are refused (they would
/// overflow the runners' clock arithmetic).
pub const MAX_DURATION: Duration = Duration::from_secs(12 * 60 * 60);

/// A setting that is missing, malformed, out of range or contradicts
/// another: found before the first message, naming the variable or setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required environment variable is not set.
    #[error("environment variable {var} is not set ({hint})")]
    MissingEnv {
        /// The variable.
        var: &'static str,
        /// What it should hold.
        hint: &'static str,
    },
    /// An environment variable holds a value that does not parse or is out
    /// of range.
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A builder setting is out of range or contradicts another.
    #[error("invalid setting `{setting}`: {reason}")]
    Invalid {
        /// The setting (the builder method's name).
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    /// A builder setting is invalid.
    pub fn invalid(setting: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            setting,
            reason: reason.into(),
        }
    }
}

/// Checks a duration setting is at most [`MAX_DURATION`].
pub fn check_duration(setting: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d > MAX_DURATION {
        return Err(ConfigError::invalid(
            setting,
            format!("{d:?} is above 12 h, the longest duration any setting accepts"),
        ));
    }
    Ok(())
}

/// Checks a concurrency setting is between 1 and [`MAX_CONCURRENCY`].
pub fn check_concurrency(setting: &'static str, n: usize) -> Result<(), ConfigError> {
    if n == 0 || n > MAX_CONCURRENCY {
        return Err(ConfigError::invalid(
            setting,
            format!("{n} is not between 1 and {MAX_CONCURRENCY}"),
        ));
    }
    Ok(())
}

/// A source of environment variables with one parser per unit. Blank values
/// count as unset; every error names the variable.
pub struct Env<F = fn(&str) -> Option<String>> {
    get: F,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").finish_non_exhaustive()
    }
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Self {
            get: |name| std::env::var(name).ok(),
        }
    }

    /// Exactly these variables (for tests and tools).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Env::from_fn(move |k: &str| map.get(k).cloned())
    }
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// Variables from `get` (tests pass a map).
    pub fn from_fn(get: F) -> Self {
        Self { get }
    }

    /// The trimmed value, when set and not blank.
    pub fn string(&self, var: &str) -> Option<String> {
        (self.get)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// The value of `var`, or `MissingEnv` with `hint`.
    pub fn required(&self, var: &'static str, hint: &'static str) -> Result<String, ConfigError> {
        self.string(var)
            .ok_or(ConfigError::MissingEnv { var, hint })
    }

    /// A whole number from 1 to [`MAX_CONCURRENCY`].
    pub fn count(&self, var: &'static str) -> Result<Option<usize>, ConfigError> {
        let Some(v) = self.string(var) else {
            return Ok(None);
        };
        match v.parse::<usize>() {
            Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => Ok(Some(n)),
            _ => Err(invalid(
                var,
                v,
                format!("expected a whole number from 1 to {MAX_CONCURRENCY}"),
            )),
        }
    }

    /// A decimal number of seconds, 0 to 43200 (12 h).
    pub fn seconds(&self, var: &'static str) -> Result<Option<Duration>, ConfigError> {
        let Some(v) = self.string(var) else {
            return Ok(None);
        };
        parse_seconds(&v)
            .map(Some)
            .ok_or_else(|| invalid(var, v, "expected a number of seconds, 0 to 43200"))
    }

    /// A rate per second: a decimal number above 0, at most 100,000.
    pub fn per_second(&self, var: &'static str) -> Result<Option<f64>, ConfigError> {
        let Some(v) = self.string(var) else {
            return Ok(None);
        };
        match v.parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 && r <= crate::flow::MAX_RATE => Ok(Some(r)),
            _ => Err(invalid(
                var,
                v,
                "expected a number per second above 0, at most 100000",
            )),
        }
    }

    /// A whole number of seconds, 0 to 43200 (12 h): fractions are refused.
    pub fn whole_seconds(&self, var: &'static str) -> Result<Option<Duration>, ConfigError> {
        let Some(v) = self.string(var) else {
            return Ok(None);
        };
        match v.parse::<u64>() {
            Ok(s) if s <= MAX_DURATION.as_secs() => Ok(Some(Duration::from_secs(s))),
            _ => Err(invalid(
                var,
                v,
                "expected a whole number of seconds, 0 to 43200",
            )),
        }
    }

    /// A comma-separated list of names (e.g. S3 buckets): each trimmed, none
    /// empty, none with a space or `/`.
    pub fn names(&self, var: &'static str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(v) = self.string(var) else {
            return Ok(None);
        };
        let names: Vec<String> = v.split(',').map(|n| n.trim().to_owned()).collect();
        if names.iter().any(|n| n.is_empty() || n.contains([' ', '/'])) {
            return Err(invalid(var, v, "expected names separated by commas"));
        }
        Ok(Some(names))
    }

    /// A switch: `true`/`false`, `1`/`0`, `on`/`off`, `yes`/`no`.
    pub fn flag(&self, var: &'static str) -> Result<Option<bool>, ConfigError> {
        let Some(v) = self.string(var) else {
            return Ok(None);
        };
        match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "on" | "yes" => Ok(Some(true)),
            "0" | "false" | "off" | "no" => Ok(Some(false)),
            _ => Err(invalid(var, v, "expected true or false")),
        }
    }

    /// A duration in seconds from `var`, or else from the renamed `old`
    /// variable (read for one release, with a warning naming `var`), whose
    /// value is `old_unit` long per unit (1 s, or 1 ms for a `_MS` name).
    pub fn seconds_or_renamed(
        &self,
        var: &'static str,
        old: &'static str,
        old_unit: Duration,
    ) -> Result<Option<Duration>, ConfigError> {
        if self.string(var).is_some() {
            return self.seconds(var);
        }
        let Some(v) = self.string(old) else {
            return Ok(None);
        };
        tracing::warn!(
            "environment variable {old} is deprecated and will stop being read in the next \
             release: set {var} (seconds) instead"
        );
        v.parse::<f64>()
            .ok()
            .and_then(|u| seconds(u * old_unit.as_secs_f64()))
            .map(Some)
            .ok_or_else(|| invalid(old, v, format!("expected a number, 0 to 12 h ({var})")))
    }
}

fn invalid(var: &'static str, value: String, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidEnv {
        var,
        value,
        reason: reason.into(),
    }
}

fn parse_seconds(v: &str) -> Option<Duration> {
    seconds(v.parse::<f64>().ok()?)
}

/// `s` seconds when finite and from 0 to 12 h.
fn seconds(s: f64) -> Option<Duration> {
    (s.is_finite() && s >= 0.0 && s <= MAX_DURATION.as_secs_f64())
        .then(|| Duration::from_secs_f64(s))
}

/// A Go duration as ECS writes `ECS_CONTAINER_STOP_TIMEOUT` (`30s`, `2m`,
/// `1m30s`, `500ms`), or a plain number of seconds. `None` when it does not
/// parse.
pub fn parse_go_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<f64>() {
        return seconds(s);
    }
    let mut total = 0.0_f64;
    let mut rest = v;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    seconds(total)
}

#[cfg(test)]
mod tests {

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        Env::from_pairs(pairs)
    }

    #[test]
    fn name_lists_are_trimmed_and_blank_entries_refused() {
        let e = env(&[
            ("A", " b-1, b-2 "),
            ("B", "b-1,,b-2"),
            ("C", "s3://b"),
            ("D", " "),
        ]);
        let want = vec!["b-1".to_owned(), "b-2".to_owned()];
        assert_eq!(e.names("A").unwrap(), Some(want));
        for var in ["B", "C"] {
            let err = e.names(var).unwrap_err().to_string();
            assert!(err.contains(var), "{err}");
        }
        assert_eq!(e.names("D").unwrap(), None, "blank is unset");
        assert_eq!(e.names("E").unwrap(), None);
    }

    #[test]
    fn each_unit_has_one_parser_and_errors_name_the_variable() {
        let e = env(&[
            ("S", "2.5"),
            ("W", "3"),
            ("F", "1.5"),
            ("N", "8"),
            ("B", "off"),
            ("BLANK", "  "),
            ("BIG", "43201"),
            ("ZERO", "0"),
        ]);
        assert_eq!(e.seconds("S").unwrap(), Some(Duration::from_millis(2500)));
        assert_eq!(e.whole_seconds("W").unwrap(), Some(Duration::from_secs(3)));
        assert_eq!(e.count("N").unwrap(), Some(8));
        assert_eq!(e.flag("B").unwrap(), Some(false));
        assert_eq!(e.seconds("BLANK").unwrap(), None);
        assert_eq!(e.seconds("UNSET").unwrap(), None);
        for err in [
            e.whole_seconds("F").unwrap_err(),
            e.seconds("BIG").unwrap_err(),
            e.count("ZERO").unwrap_err(),
            e.flag("N").unwrap_err(),
        ] {
            assert!(matches!(err, ConfigError::InvalidEnv { .. }), "{err}");
        }
        let err = e.count("S").unwrap_err();
        assert!(err.to_string().contains("environment variable S="), "{err}");
        let err = e.required("UNSET", "the thing").unwrap_err();
        assert!(err.to_string().contains("UNSET"), "{err}");
    }

    #[test]
    fn a_renamed_variable_is_still_read_in_its_old_unit() {
        let old = env(&[("OLD_MS", "750")]);
        let d = old
            .seconds_or_renamed("NEW_SECONDS", "OLD_MS", Duration::from_millis(1))
            .unwrap();
        assert_eq!(d, Some(Duration::from_millis(750)));
        let both = env(&[("OLD_MS", "750"), ("NEW_SECONDS", "2")]);
        let d = both
            .seconds_or_renamed("NEW_SECONDS", "OLD_MS", Duration::from_millis(1))
            .unwrap();
        assert_eq!(d, Some(Duration::from_secs(2)));
        let bad = env(&[("OLD_MS", "soon")]);
        let e = bad
            .seconds_or_renamed("NEW_SECONDS", "OLD_MS", Duration::from_millis(1))
            .unwrap_err();
        assert!(e.to_string().contains("OLD_MS"), "{e}");
    }

    #[test]
    fn go_durations_as_ecs_writes_them() {
        assert_eq!(parse_go_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_go_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_go_duration("soon"), None);
        assert_eq!(parse_go_duration("5x"), None);
    }

    #[test]
    fn limits_are_checked_not_overflowed() {
        assert!(check_duration("grace_period", Duration::MAX).is_err());
        assert!(check_duration("grace_period", MAX_DURATION).is_ok());
        assert!(check_concurrency("concurrency", usize::MAX).is_err());
        assert!(check_concurrency("concurrency", 0).is_err());
        assert!(check_concurrency("concurrency", 32).is_ok());
    }
}
