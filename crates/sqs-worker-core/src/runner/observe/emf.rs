//! CloudWatch Embedded Metric Format: a [`metrics`] recorder that writes the
//! framework's metrics as EMF JSON lines on stdout, which CloudWatch Logs turns
//! into metrics with no agent and no API call. Meant for Lambda: the adapter
//! calls [`flush`] after each invocation.
//!
//! One line per label set per flush; counters as their increase since the last
//! flush, gauges as their value, histograms as the recorded values (in chunks
//! of 100, EMF's limit per metric). The namespace is `SQS_WORKER_METRICS_NAMESPACE`
//! (default [`DEFAULT_NAMESPACE`]); dimensions: `service` (`SQS_WORKER_SERVICE`,
//! else the function name from `AWS_LAMBDA_FUNCTION_NAME`, else `sqs-worker`)
//! plus the metric's labels.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::config::{ConfigError, Env, var};
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// The CloudWatch namespace used by default.
pub const DEFAULT_NAMESPACE: &str = "sqs-worker";

/// The `service` dimension when neither `SQS_WORKER_SERVICE` nor
/// `AWS_LAMBDA_FUNCTION_NAME` is set.
pub const DEFAULT_SERVICE: &str = "sqs-worker";

#[derive(Default)]
struct Values(Mutex<Vec<f64>>);

impl HistogramFn for Values {
    fn record(&self, value: f64) {
        if let Ok(mut v) = self.0.lock() {
            v.push(value);
        }
    }
}

#[derive(Default)]
struct Registry {
    counters: HashMap<Key, Arc<AtomicU64>>,
    gauges: HashMap<Key, Arc<AtomicU64>>,
    histograms: HashMap<Key, Arc<Values>>,
}

/// The EMF recorder. Cloneable handles share one registry.
#[derive(Clone)]
pub struct EmfRecorder {
    namespace: String,
    service: String,
    registry: Arc<Mutex<Registry>>,
    last_counts: Arc<Mutex<HashMap<Key, u64>>>,
}

impl std::fmt::Debug for EmfRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmfRecorder")
            .field("namespace", &self.namespace)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl EmfRecorder {
    /// A recorder for `namespace`, with the `service` dimension from
    /// `SQS_WORKER_SERVICE`, else `AWS_LAMBDA_FUNCTION_NAME`, else
    /// [`DEFAULT_SERVICE`].
    pub fn new(namespace: impl Into<String>) -> Self {
        Self::with_service(namespace, service_from(&Env::process()))
    }

    /// A recorder for `namespace` with the `service` dimension `service`.
    pub fn with_service(namespace: impl Into<String>, service: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            service: service.into(),
            registry: Arc::default(),
            last_counts: Arc::default(),
        }
    }

    /// A recorder configured from `env`: namespace `SQS_WORKER_METRICS_NAMESPACE`
    /// (default [`DEFAULT_NAMESPACE`]), `service` dimension as in [`new`](Self::new).
    /// A namespace CloudWatch would refuse (empty after trimming, longer than
    /// 255 characters, or starting with `AWS/`) is a [`ConfigError`].
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let namespace = match env.string(var::METRICS_NAMESPACE) {
            None => DEFAULT_NAMESPACE.to_owned(),
            Some(ns) if ns.len() > 255 || ns.starts_with("AWS/") => {
                return Err(ConfigError::InvalidEnv {
                    var: var::METRICS_NAMESPACE,
                    value: ns,
                    reason: "a CloudWatch namespace has at most 255 characters and does not \
                             start with `AWS/`"
                        .into(),
                });
            }
            Some(ns) => ns,
        };
        Ok(Self::with_service(namespace, service_from(env)))
    }

    /// The CloudWatch namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The `service` dimension's value.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Writes one EMF line per label set to `out` and resets what was written.
    pub fn flush_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // label set -> (metric name, unit, value)
        type Row = (String, &'static str, serde_json::Value);
        let mut groups: HashMap<Vec<(String, String)>, Vec<Row>> = HashMap::new();
        let labels_of = |k: &Key| -> Vec<(String, String)> {
            let mut l: Vec<_> = k
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            l.sort();
            l
        };
        {
            let reg = self
                .registry
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?;
            let mut last = self
                .last_counts
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?;
            for (k, c) in &reg.counters {
                let now = c.load(Ordering::Relaxed);
                let before = last.insert(k.clone(), now).unwrap_or(0);
                let delta = now.saturating_sub(before);
                if delta > 0 {
                    groups.entry(labels_of(k)).or_default().push((
                        k.name().to_owned(),
                        "Count",
                        delta.into(),
                    ));
                }
            }
            for (k, g) in &reg.gauges {
                let v = f64::from_bits(g.load(Ordering::Relaxed));
                groups.entry(labels_of(k)).or_default().push((
                    k.name().to_owned(),
                    "None",
                    v.into(),
                ));
            }
            for (k, h) in &reg.histograms {
                let values: Vec<f64> = match h.0.lock() {
                    Ok(mut v) => std::mem::take(&mut *v),
                    Err(_) => continue,
                };
                let unit = if k.name().ends_with("_seconds") {
                    "Seconds"
                } else {
                    "None"
                };
                for chunk in values.chunks(100) {
                    groups.entry(labels_of(k)).or_default().push((
                        k.name().to_owned(),
                        unit,
                        serde_json::Value::from(chunk.to_vec()),
                    ));
                }
            }
        }
        for (labels, rows) in groups {
            let mut dims = vec!["service".to_owned()];
            dims.extend(labels.iter().map(|(k, _)| k.clone()));
            let mut obj = serde_json::Map::new();
            let mut metrics = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (name, unit, value) in rows {
                if !seen.insert(name.clone()) {
                    // A second histogram chunk: its own line keeps each name once per line.
                    continue;
                }
                metrics.push(serde_json::json!({ "Name": name, "Unit": unit }));
                obj.insert(name, value);
            }
            obj.insert(
                "_aws".to_owned(),
                serde_json::json!({
                    "Timestamp": timestamp,
                    "CloudWatchMetrics": [{
                        "Namespace": self.namespace,
                        "Dimensions": [dims],
                        "Metrics": metrics,
                    }],
                }),
            );
            obj.insert("service".to_owned(), self.service.clone().into());
            for (k, v) in labels {
                obj.insert(k, v.into());
            }
            let line = serde_json::to_string(&obj).map_err(std::io::Error::other)?;
            writeln!(out, "{line}")?;
        }
        out.flush()
    }
}

impl Recorder for EmfRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match self.registry.lock() {
            Ok(mut r) => Counter::from_arc(r.counters.entry(key.clone()).or_default().clone()),
            Err(_) => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        match self.registry.lock() {
            Ok(mut r) => Gauge::from_arc(r.gauges.entry(key.clone()).or_default().clone()),
            Err(_) => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        match self.registry.lock() {
            Ok(mut r) => Histogram::from_arc(r.histograms.entry(key.clone()).or_default().clone()),
            Err(_) => Histogram::noop(),
        }
    }
}

static INSTALLED: OnceLock<EmfRecorder> = OnceLock::new();

/// The `service` dimension from `env`.
fn service_from<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> String {
    env.string(var::SERVICE)
        .or_else(|| env.string(var::LAMBDA_FUNCTION_NAME))
        .unwrap_or_else(|| DEFAULT_SERVICE.to_owned())
}

/// Why [`install`] did not install the recorder.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// `SQS_WORKER_METRICS_NAMESPACE` is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Another recorder is installed.
    #[error("another metrics recorder is installed")]
    Taken(#[from] metrics::SetRecorderError<EmfRecorder>),
}

/// Installs an [`EmfRecorder`] configured from the environment
/// ([`EmfRecorder::from_env`]) as the global recorder. Fails when a variable
/// is invalid or another recorder is installed.
pub fn install() -> Result<(), InstallError> {
    let recorder = EmfRecorder::from_env(&Env::process())?;
    metrics::set_global_recorder(recorder.clone())?;
    let _ = INSTALLED.set(recorder);
    Ok(())
}

/// Writes the metrics recorded since the last flush to stdout, if [`install`]
/// installed the recorder; a no-op otherwise.
pub fn flush() {
    if let Some(r) = INSTALLED.get() {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        if let Err(e) = r.flush_to(&mut lock) {
            tracing::warn!(error = %e, "could not write EMF metrics");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> Env<impl Fn(&str) -> Option<String>> {
        Env::from_fn(move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn namespace_and_service_come_from_the_environment() {
        let r = EmfRecorder::from_env(&env(&[
            ("SQS_WORKER_METRICS_NAMESPACE", "orders-prod"),
            ("SQS_WORKER_SERVICE", "orders"),
            ("AWS_LAMBDA_FUNCTION_NAME", "orders-fn"),
        ]))
        .unwrap();
        assert_eq!((r.namespace(), r.service()), ("orders-prod", "orders"));
        metrics::with_local_recorder(&r, || {
            metrics::counter!("sqs_worker_messages_received_total").increment(1);
        });
        let mut out = Vec::new();
        r.flush_to(&mut out).unwrap();
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "orders-prod"
        );
        assert_eq!(line["service"], "orders");

        let r = EmfRecorder::from_env(&env(&[("AWS_LAMBDA_FUNCTION_NAME", "orders-fn")])).unwrap();
        assert_eq!(
            (r.namespace(), r.service()),
            (DEFAULT_NAMESPACE, "orders-fn")
        );
        let r = EmfRecorder::from_env(&env(&[])).unwrap();
        assert_eq!(
            (r.namespace(), r.service()),
            (DEFAULT_NAMESPACE, DEFAULT_SERVICE)
        );
        let err = EmfRecorder::from_env(&env(&[("SQS_WORKER_METRICS_NAMESPACE", "AWS/SQS")]))
            .unwrap_err();
        assert!(
            err.to_string().contains("SQS_WORKER_METRICS_NAMESPACE"),
            "{err}"
        );
    }

    #[test]
    fn writes_emf_lines_with_deltas_and_values() {
        let r = EmfRecorder::new("ns");
        metrics::with_local_recorder(&r, || {
            metrics::counter!("sqs_worker_messages_succeeded_total").increment(9);
            metrics::counter!("sqs_worker_messages_failed_total", "kind" => "retry").increment(1);
            metrics::histogram!("sqs_worker_handler_duration_seconds").record(0.25);
        });
        let mut out = Vec::new();
        r.flush_to(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let plain = lines.iter().find(|l| l.get("kind").is_none()).unwrap();
        assert_eq!(plain["sqs_worker_messages_succeeded_total"], 9);
        assert_eq!(
            plain["sqs_worker_handler_duration_seconds"],
            serde_json::json!([0.25])
        );
        assert_eq!(plain["_aws"]["CloudWatchMetrics"][0]["Namespace"], "ns");
        let failed = lines.iter().find(|l| l.get("kind").is_some()).unwrap();
        assert_eq!(failed["kind"], "retry");
        assert_eq!(
            failed["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["service", "kind"]])
        );
        // A second flush writes only what changed since.
        metrics::with_local_recorder(&r, || {
            metrics::counter!("sqs_worker_messages_succeeded_total").increment(1);
        });
        let mut out = Vec::new();
        r.flush_to(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("\"sqs_worker_messages_succeeded_total\":1"),
            "{text}"
        );
    }
}
