//! CloudWatch Embedded Metric Format: a [`metrics`] recorder that writes the
//! framework's metrics as EMF JSON lines on stdout, which CloudWatch Logs turns
//! into metrics with no agent and no API call. Meant for Lambda: the adapter
//! calls [`flush`] after each invocation.
//!
//! One line per label set per flush; counters as their increase since the last
//! flush, gauges as their value, histograms as the recorded values (at most
//! 100 per line, EMF's limit per metric: more go on further lines). The lines
//! are written by hand from parts rendered once per metric, not through
//! `serde_json` values: a flush follows every Lambda invocation
//! (BENCHMARKS.md, "Seventh session"). The namespace is `SQS_WORKER_METRICS_NAMESPACE`
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

/// EMF's limit of values per metric in one line: more go on further lines.
const VALUES_PER_LINE: usize = 100;

/// One registered metric and what its lines need, rendered once.
struct Entry {
    /// The name as a JSON string (quoted, escaped).
    name: Box<str>,
    /// Its label set, an index into [`Registry::sets`].
    set: u32,
    metric: Metric,
}

enum Metric {
    /// The count, and what the last flush wrote (lines carry the increase).
    Counter(Arc<AtomicU64>, u64),
    /// The value's bits.
    Gauge(Arc<AtomicU64>),
    /// The values since the last flush, and an emptied vector to swap in
    /// (no allocation per flush once both have grown).
    Histogram(Arc<Values>, Vec<f64>),
}

/// A label set (sorted by name, then value), rendered once.
struct LabelSet {
    /// `,"name"` per label: the dimension names after `service`.
    dims: String,
    /// `,"name":"value"` per label: the line's fields.
    fields: String,
}

/// What a flush writes for one metric.
enum Datum {
    Count(u64),
    Value(f64),
    /// The entry's values, taken.
    Values(Vec<f64>),
}

#[derive(Default)]
struct Registry {
    /// By key, its counter, gauge and histogram (kinds 0, 1, 2): an index
    /// into `entries`, `usize::MAX` for none.
    index: HashMap<Key, [usize; 3]>,
    entries: Vec<Entry>,
    sets: Vec<LabelSet>,
    set_index: HashMap<Vec<(String, String)>, u32>,
    /// A flush's rows (label set, entry, datum), kept for their capacity.
    rows: Vec<(u32, u32, Datum)>,
}

impl Registry {
    /// The handle of `key`'s metric of `kind`, registered on first use.
    fn register<T>(
        &mut self,
        kind: usize,
        key: &Key,
        make: impl FnOnce() -> (Arc<T>, Metric),
        of: impl Fn(&Metric) -> Option<&Arc<T>>,
    ) -> Option<Arc<T>> {
        if let Some(e) = self.index.get(key).and_then(|k| self.entries.get(k[kind])) {
            return of(&e.metric).cloned();
        }
        let (handle, metric) = make();
        let set = self.label_set(key);
        let at = self.entries.len();
        self.index.entry(key.clone()).or_insert([usize::MAX; 3])[kind] = at;
        self.entries.push(Entry {
            name: json_string(key.name()).into(),
            set,
            metric,
        });
        Some(handle)
    }

    /// The index of `key`'s label set, rendered on first sight.
    fn label_set(&mut self, key: &Key) -> u32 {
        let mut labels: Vec<(String, String)> = key
            .labels()
            // These would clash with the line's own fields.
            .filter(|l| !matches!(l.key(), "service" | "_aws"))
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        if let Some(&i) = self.set_index.get(&labels) {
            return i;
        }
        let (mut dims, mut fields) = (String::new(), String::new());
        for (k, v) in &labels {
            let k = json_string(k);
            dims.push(',');
            dims.push_str(&k);
            fields.push(',');
            fields.push_str(&k);
            fields.push(':');
            fields.push_str(&json_string(v));
        }
        let i = u32::try_from(self.sets.len()).unwrap_or(u32::MAX);
        self.sets.push(LabelSet { dims, fields });
        self.set_index.insert(labels, i);
        i
    }
}

/// `s` as a JSON string: quoted and escaped.
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Appends `v` as JSON (`null` when not finite, as `serde_json` writes it).
fn push_number(buf: &mut Vec<u8>, v: impl serde::Serialize) {
    let _ = serde_json::to_writer(buf, &v);
}

/// The EMF recorder. Cloneable handles share one registry.
#[derive(Clone)]
pub struct EmfRecorder {
    namespace: String,
    service: String,
    /// The line's constant parts, rendered once: the namespace and the
    /// `service` dimension as JSON strings.
    rendered: Arc<(String, String)>,
    registry: Arc<Mutex<Registry>>,
    /// The lines of a flush, kept for its capacity.
    out: Arc<Mutex<Vec<u8>>>,
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
        let (namespace, service) = (namespace.into(), service.into());
        Self {
            rendered: Arc::new((json_string(&namespace), json_string(&service))),
            namespace,
            service,
            registry: Arc::default(),
            out: Arc::default(),
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
    ///
    /// Counters carry their increase since the last flush (none: left out),
    /// gauges their value, histograms the values recorded since (at most 100
    /// per line, EMF's limit: more go on further lines of the same label
    /// set). The lines are rendered by hand from parts rendered when each
    /// metric was registered: this runs after every Lambda invocation.
    pub fn flush_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut buf = self.out.lock().map_err(poisoned)?;
        buf.clear();
        {
            let mut reg = self.registry.lock().map_err(poisoned)?;
            let reg = &mut *reg;
            collect(&mut reg.entries, &mut reg.rows);
            // Stable: each label set's metrics in registration order.
            reg.rows.sort_by_key(|r| r.0);
            for group in reg.rows.chunk_by(|a, b| a.0 == b.0) {
                let set = &reg.sets[group[0].0 as usize];
                self.write_line(&mut buf, timestamp, set, &reg.entries, group, 0);
                // Histograms with more than one line's worth of values.
                let most = group.iter().map(|r| values(&r.2).len()).max().unwrap_or(0);
                for from in (VALUES_PER_LINE..most).step_by(VALUES_PER_LINE) {
                    self.write_line(&mut buf, timestamp, set, &reg.entries, group, from);
                }
            }
            // Give the histograms their vectors back, emptied, for the next flush.
            for (_, e, d) in reg.rows.drain(..) {
                if let (Datum::Values(mut v), Metric::Histogram(_, spare)) =
                    (d, &mut reg.entries[e as usize].metric)
                {
                    v.clear();
                    *spare = v;
                }
            }
        }
        out.write_all(&buf)?;
        out.flush()
    }

    /// One line: the EMF header naming `rows`' metrics, the `service` and
    /// label fields, and each metric's datum (histograms: the values from
    /// index `from`, at most [`VALUES_PER_LINE`]). With `from` above 0 (a
    /// further line) only the histograms with values from there on.
    fn write_line(
        &self,
        buf: &mut Vec<u8>,
        timestamp: u64,
        set: &LabelSet,
        entries: &[Entry],
        rows: &[(u32, u32, Datum)],
        from: usize,
    ) {
        let (namespace, service) = &*self.rendered;
        buf.extend_from_slice(b"{\"_aws\":{\"Timestamp\":");
        push_number(buf, timestamp);
        buf.extend_from_slice(b",\"CloudWatchMetrics\":[{\"Namespace\":");
        buf.extend_from_slice(namespace.as_bytes());
        buf.extend_from_slice(b",\"Dimensions\":[[\"service\"");
        buf.extend_from_slice(set.dims.as_bytes());
        buf.extend_from_slice(b"]],\"Metrics\":[");
        let rows = || {
            rows.iter()
                .filter(move |(_, _, d)| from == 0 || values(d).len() > from)
        };
        for (i, (_, e, d)) in rows().enumerate() {
            let e = &entries[*e as usize];
            if i > 0 {
                buf.push(b',');
            }
            buf.extend_from_slice(b"{\"Name\":");
            buf.extend_from_slice(e.name.as_bytes());
            buf.extend_from_slice(b",\"Unit\":\"");
            buf.extend_from_slice(unit(e, d).as_bytes());
            buf.extend_from_slice(b"\"}");
        }
        buf.extend_from_slice(b"]}]},\"service\":");
        buf.extend_from_slice(service.as_bytes());
        buf.extend_from_slice(set.fields.as_bytes());
        for (_, e, d) in rows() {
            buf.push(b',');
            buf.extend_from_slice(entries[*e as usize].name.as_bytes());
            buf.push(b':');
            match d {
                Datum::Count(n) => push_number(buf, n),
                Datum::Value(v) => push_number(buf, v),
                Datum::Values(v) => {
                    let to = v.len().min(from + VALUES_PER_LINE);
                    push_number(buf, v.get(from..to).unwrap_or_default());
                }
            }
        }
        buf.extend_from_slice(b"}\n");
    }
}

/// The rows of a flush: each counter that grew, each gauge, each histogram
/// with values (taken, the entry's spare vector swapped in).
fn collect(entries: &mut [Entry], rows: &mut Vec<(u32, u32, Datum)>) {
    rows.clear();
    for (i, e) in entries.iter_mut().enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        let datum = match &mut e.metric {
            Metric::Counter(c, last) => {
                let now = c.load(Ordering::Relaxed);
                let delta = now.saturating_sub(std::mem::replace(last, now));
                if delta == 0 {
                    continue;
                }
                Datum::Count(delta)
            }
            Metric::Gauge(g) => Datum::Value(f64::from_bits(g.load(Ordering::Relaxed))),
            Metric::Histogram(h, spare) => {
                let Ok(mut v) = h.0.lock() else { continue };
                if v.is_empty() {
                    continue;
                }
                Datum::Values(std::mem::replace(&mut *v, std::mem::take(spare)))
            }
        };
        rows.push((e.set, i, datum));
    }
}

/// The error of a lock a panicking thread held.
fn poisoned<T>(_: T) -> std::io::Error {
    std::io::Error::other("poisoned")
}

/// A histogram's values (none for other data).
fn values(d: &Datum) -> &[f64] {
    match d {
        Datum::Values(v) => v,
        _ => &[],
    }
}

/// The CloudWatch unit of a metric.
fn unit(e: &Entry, d: &Datum) -> &'static str {
    match d {
        Datum::Count(_) => "Count",
        Datum::Values(_) if e.name.ends_with("_seconds\"") => "Seconds",
        _ => "None",
    }
}

impl Recorder for EmfRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let Ok(mut r) = self.registry.lock() else {
            return Counter::noop();
        };
        r.register(
            0,
            key,
            || {
                let c = Arc::new(AtomicU64::new(0));
                (c.clone(), Metric::Counter(c, 0))
            },
            |m| match m {
                Metric::Counter(c, _) => Some(c),
                _ => None,
            },
        )
        .map_or_else(Counter::noop, Counter::from_arc)
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let Ok(mut r) = self.registry.lock() else {
            return Gauge::noop();
        };
        r.register(
            1,
            key,
            || {
                let g = Arc::new(AtomicU64::new(0));
                (g.clone(), Metric::Gauge(g))
            },
            |m| match m {
                Metric::Gauge(g) => Some(g),
                _ => None,
            },
        )
        .map_or_else(Gauge::noop, Gauge::from_arc)
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let Ok(mut r) = self.registry.lock() else {
            return Histogram::noop();
        };
        r.register(
            2,
            key,
            || {
                let h = Arc::new(Values::default());
                (h.clone(), Metric::Histogram(h, Vec::new()))
            },
            |m| match m {
                Metric::Histogram(h, _) => Some(h),
                _ => None,
            },
        )
        .map_or_else(Histogram::noop, Histogram::from_arc)
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
mod tests;
