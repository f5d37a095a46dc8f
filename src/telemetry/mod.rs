//! One-call logging (and metrics) setup suited to where the worker runs.
//!
//! [`init`] is what [`run`](crate::run) calls first; call it yourself to set
//! up logs before other work. It never replaces a subscriber or recorder you
//! installed yourself.
//!
//! - Logs: `RUST_LOG` filters; when it is not set, Lambda's advanced
//!   logging level `AWS_LAMBDA_LOG_LEVEL` does (else `info`). JSON lines (one
//!   object per event, for CloudWatch Logs Insights) when
//!   `SQS_WORKER_LOG_FORMAT=json`, or inside Lambda unless
//!   `SQS_WORKER_LOG_FORMAT=text`; plain text otherwise. A JSON line carries
//!   its innermost span (`span`) and every enclosing one (`spans`, outermost
//!   first), so a handler's lines carry the invocation's `sqs.batch` span with
//!   `faas.invocation_id` (the request id), `xray_trace_id` and, on the first
//!   invocation of a container, `cold_start`. Message bodies, receipt handles and credentials are never
//!   logged by this crate at any level.
//! - Metrics (see [`observe`](sqs_worker_core::runner::observe) for the names): inside Lambda,
//!   CloudWatch Embedded Metric Format lines on stdout after each invocation
//!   (feature `lambda`); in the poller, a Prometheus `/metrics` endpoint with
//!   a `/healthz` check on `SQS_WORKER_METRICS_ADDR` when set (feature
//!   `poller`), see [`serve_metrics`].
//! - Traces: with feature `opentelemetry`, `otel` links each message span to
//!   the producer's trace and exports through your tracer.

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{ConfigError, Env, var};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per event.
    Json,
}

impl LogFormat {
    /// From `SQS_WORKER_LOG_FORMAT` (`json` or `text`); JSON by default inside
    /// Lambda, text elsewhere.
    pub fn from_env() -> Result<Self, ConfigError> {
        match Env::process().string(var::LOG_FORMAT) {
            Some(v) if v.eq_ignore_ascii_case("json") => Ok(Self::Json),
            Some(v) if v.eq_ignore_ascii_case("text") => Ok(Self::Text),
            Some(value) => Err(ConfigError::InvalidEnv {
                var: var::LOG_FORMAT,
                value,
                reason: "expected `json` or `text`".into(),
            }),
            None if in_lambda() => Ok(Self::Json),
            None => Ok(Self::Text),
        }
    }
}

/// Whether this process runs inside AWS Lambda.
pub fn in_lambda() -> bool {
    std::env::var_os(sqs_worker_core::config::var::LAMBDA_RUNTIME_API).is_some()
}

/// The log filter: `RUST_LOG` when set, else Lambda's `AWS_LAMBDA_LOG_LEVEL`
/// (`TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR`; `FATAL` counts as `error`),
/// else `info`. A `RUST_LOG` that does not parse falls back the same way.
pub fn log_filter<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> EnvFilter {
    if let Some(filter) = env
        .string(var::RUST_LOG)
        .and_then(|v| EnvFilter::try_new(v).ok())
    {
        return filter;
    }
    let level = env
        .string(var::LAMBDA_LOG_LEVEL)
        .map(|v| v.trim().to_ascii_lowercase())
        .and_then(|v| match v.as_str() {
            "trace" | "debug" | "info" | "warn" | "error" => Some(v),
            "fatal" => Some("error".to_owned()),
            _ => None,
        });
    EnvFilter::new(level.as_deref().unwrap_or("info"))
}

/// The log subscriber [`init_logs`] installs, writing to `writer` (tests
/// capture logs with it), filtered by [`log_filter`] of the process
/// environment.
pub fn log_subscriber<W>(
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = log_filter(&Env::process());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true)
                .with_ansi(false)
                .finish(),
        ),
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
    }
}

/// Installs the log subscriber for `format` (unless one is installed
/// already): JSON to stdout, text to stderr. Returns whether this call
/// installed it.
pub fn init_logs(format: LogFormat) -> bool {
    let subscriber = match format {
        LogFormat::Json => log_subscriber(format, std::io::stdout, false),
        LogFormat::Text => log_subscriber(
            format,
            std::io::stderr,
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ),
    };
    subscriber.try_init().is_ok()
}

/// Sets up logs and metrics from the environment (idempotent).
pub fn init() -> Result<(), ConfigError> {
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.get().is_some() {
        return Ok(());
    }
    let format = LogFormat::from_env()?;
    {
        use sqs_worker_core::runner::observe::names;
        names::set_metric_names(names::MetricNames::from_env(&Env::process())?);
    }
    init_logs(format);
    if in_lambda() {
        use sqs_worker_core::runner::observe::emf;
        // `Taken` is harmless: the user installed a recorder of their own.
        if let Err(emf::InstallError::Config(e)) = emf::install() {
            return Err(e);
        }
    }
    let _ = DONE.set(());
    Ok(())
}

#[cfg(feature = "opentelemetry")]
#[cfg_attr(docsrs, doc(cfg(feature = "opentelemetry")))]
pub mod otel;

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(vars: &'static [(&'static str, &'static str)]) -> String {
        log_filter(&Env::from_fn(move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }))
        .to_string()
    }

    #[test]
    fn lambda_log_level_applies_only_without_rust_log() {
        assert_eq!(filter(&[]), "info");
        assert_eq!(filter(&[("AWS_LAMBDA_LOG_LEVEL", "DEBUG")]), "debug");
        assert_eq!(filter(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]), "error");
        assert_eq!(filter(&[("AWS_LAMBDA_LOG_LEVEL", "loud")]), "info");
        assert_eq!(
            filter(&[("RUST_LOG", "warn"), ("AWS_LAMBDA_LOG_LEVEL", "DEBUG")]),
            "warn"
        );
    }
}
#[cfg(feature = "poller")]
mod prometheus;
#[cfg(feature = "poller")]
#[cfg_attr(docsrs, doc(cfg(feature = "poller")))]
#[doc(inline)]
pub use self::prometheus::{
    DEFAULT_UNHEALTHY_AFTER, MetricsServer, serve_metrics, serve_metrics_from_env,
};
