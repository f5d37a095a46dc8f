//! One-call logging (and metrics) setup suited to where the worker runs.
//!
//! [`init`] is what [`run`](crate::run) calls first; call it yourself to set
//! up logs before other work. It never replaces a subscriber or recorder you
//! installed yourself.
//!
//! - Logs: `RUST_LOG` filters (default `info`). JSON lines (one object per
//!   event, for CloudWatch Logs Insights) when `SQS_WORKER_LOG_FORMAT=json`,
//!   or inside Lambda unless `SQS_WORKER_LOG_FORMAT=text`; plain text
//!   otherwise. Message bodies, receipt handles and credentials are never
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
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

/// The log subscriber [`init_logs`] installs, writing to `writer` (tests
/// capture logs with it). `RUST_LOG` filters, `info` by default.
pub fn log_subscriber<W>(
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
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
    init_logs(format);
    if in_lambda() {
        // Fails harmlessly when the user installed a recorder of their own.
        let _ = sqs_worker_core::runner::observe::emf::install();
    }
    let _ = DONE.set(());
    Ok(())
}

#[cfg(feature = "opentelemetry")]
#[cfg_attr(docsrs, doc(cfg(feature = "opentelemetry")))]
pub mod otel;
#[cfg(feature = "poller")]
mod prometheus;
#[cfg(feature = "poller")]
#[cfg_attr(docsrs, doc(cfg(feature = "poller")))]
#[doc(inline)]
pub use self::prometheus::{
    DEFAULT_UNHEALTHY_AFTER, MetricsServer, serve_metrics, serve_metrics_from_env,
};
