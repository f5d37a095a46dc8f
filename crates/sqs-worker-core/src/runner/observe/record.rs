//! Metric recording: per batch where possible, never a metric key per message.
//!
//! The two metrics with an OpenTelemetry counterpart are emitted under the
//! names [`metric_names`](super::names::metric_names) chooses; the label set
//! of the OpenTelemetry names (with the queue name) is built once per batch.

use std::time::Duration;

use metrics::{Counter, Histogram, Key, Level, Metadata};

use super::health::now_ms;
use super::keys::{self, KINDS, QueueKeys, otel_keys};
use super::names::{self, MetricNames};
use crate::engine::{Failure, FailureKind, Outcome};
use crate::message::Message;

/// What the `metrics` macros of this module registered with (its path as
/// target and module, level INFO): the same, through keys built once.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

fn counter(key: &Key) -> Counter {
    metrics::with_recorder(|r| r.register_counter(key, &METADATA))
}

fn histogram(key: &Key) -> Histogram {
    metrics::with_recorder(|r| r.register_histogram(key, &METADATA))
}

/// The queue name of a batch (from its first message's source), the
/// `messaging.destination.name` of its OpenTelemetry metrics.
fn destination(msg: Option<&Message>) -> Option<&str> {
    msg?.source().map(names::destination_name)
}

/// Records messages handed to the engine (runners call this once per batch).
pub fn received(batch: &[Message]) {
    received_as(names::metric_names(), batch);
}

pub(super) fn received_as(mode: MetricNames, batch: &[Message]) {
    let n = batch.len() as u64;
    if mode.legacy() {
        counter(&keys::RECEIVED).increment(n);
    }
    if mode.otel() && n > 0 {
        counter(&otel_keys(destination(batch.first())).consumed).increment(n);
    }
    let age = histogram(&keys::MESSAGE_AGE);
    let count = histogram(&keys::RECEIVE_COUNT);
    // One clock read for the batch.
    let now_ms = now_ms();
    for m in batch {
        if let Some(sent) = m.attributes().sent_timestamp {
            age.record(now_ms.saturating_sub(sent) as f64 / 1000.0);
        }
        count.record(f64::from(m.receive_count()));
    }
}

/// `messaging.process.duration`, one handle per outcome (slot 0 succeeded,
/// `1 + kind` failed), registered on first use in the batch.
#[derive(Default)]
struct Process {
    /// The batch's queue keys, from its first message recorded.
    keys: Option<QueueKeys>,
    handles: [Option<Histogram>; KINDS + 1],
    /// Messages of the current round of inline starts, by slot: they get the
    /// round's time ([`Tally::handler_times`]).
    round: [u32; KINDS + 1],
}

impl Process {
    fn handle(&mut self, slot: usize, msg: Option<&Message>) -> &Histogram {
        let keys = self.keys.get_or_insert_with(|| otel_keys(destination(msg)));
        self.handles[slot].get_or_insert_with(|| histogram(&keys.process[slot]))
    }
}

/// The process-duration slot of an outcome.
fn slot(outcome: &Outcome) -> usize {
    match outcome {
        Outcome::Succeeded => 0,
        Outcome::Failed(f) => 1 + f.kind as usize,
    }
}

/// Whether a failure with no handler time of its own ran a handler (in a
/// round of inline starts): the others (blocked, unstarted, stopped at the
/// deadline) never had a process operation to time.
fn ran_inline(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Succeeded => true,
        Outcome::Failed(f) => matches!(
            f.kind,
            FailureKind::Retry | FailureKind::Permanent | FailureKind::Panicked
        ),
    }
}

/// Per-batch metric tally: counters are emitted once per batch (on drop), not
/// once per message, so the hot path builds no metric keys per message.
#[derive(Default)]
pub(crate) struct Tally {
    succeeded: u64,
    failed: [u64; KINDS],
    durations: Option<Histogram>,
    /// `None` until the first record reads the metric names.
    mode: Option<MetricNames>,
    process: Process,
}

impl Tally {
    fn mode(&mut self) -> MetricNames {
        *self.mode.get_or_insert_with(names::metric_names)
    }

    /// Records the same handler time for the `n` messages of a round of
    /// inline starts (already [recorded](Self::record) without a time).
    pub(crate) fn handler_times(&mut self, t: Duration, n: usize) {
        let mode = self.mode();
        if mode.legacy() {
            self.durations
                .get_or_insert_with(|| histogram(&keys::HANDLER_DURATION))
                .record_many(t.as_secs_f64(), n);
        }
        let round = std::mem::take(&mut self.process.round);
        if mode.otel() {
            for (slot, count) in round.into_iter().enumerate() {
                if count > 0 {
                    self.process
                        .handle(slot, None)
                        .record_many(t.as_secs_f64(), count as usize);
                }
            }
        }
    }

    /// Records a settled message, and logs a failure (message id, kind,
    /// cause; never the body).
    pub(crate) fn record(
        &mut self,
        msg: &Message,
        outcome: &Outcome,
        handler_time: Option<Duration>,
    ) {
        let mode = self.mode();
        if mode.otel() {
            let slot = slot(outcome);
            match handler_time {
                Some(t) => self.process.handle(slot, Some(msg)).record(t.as_secs_f64()),
                None if ran_inline(outcome) => {
                    // The batch's queue, for the round's handles.
                    self.process
                        .keys
                        .get_or_insert_with(|| otel_keys(destination(Some(msg))));
                    self.process.round[slot] += 1;
                }
                None => {}
            }
        }
        if let (Some(t), true) = (handler_time, mode.legacy()) {
            self.durations
                .get_or_insert_with(|| histogram(&keys::HANDLER_DURATION))
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
            counter(&keys::SUCCEEDED).increment(self.succeeded);
        }
        for (key, n) in keys::FAILED.iter().zip(self.failed) {
            if n > 0 {
                counter(key).increment(n);
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
pub(crate) mod capture {
    //! A `metrics` recorder that keeps every update, for tests.
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
        SharedString, Unit,
    };

    /// One update: name, labels (`k=v`, sorted), value (a counter's increment).
    pub(crate) type Update = (String, Vec<String>, f64);

    #[derive(Default, Clone)]
    pub(crate) struct Capture(Arc<Mutex<Vec<Update>>>);

    struct Handle(Key, Capture);

    impl Handle {
        fn push(&self, v: f64) {
            let mut labels: Vec<String> = self
                .0
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            if let Ok(mut u) = (self.1).0.lock() {
                u.push((self.0.name().to_owned(), labels, v));
            }
        }
    }

    impl CounterFn for Handle {
        fn increment(&self, v: u64) {
            self.push(v as f64);
        }
        fn absolute(&self, v: u64) {
            self.push(v as f64);
        }
    }

    impl HistogramFn for Handle {
        fn record(&self, v: f64) {
            self.push(v);
        }
    }

    impl Capture {
        /// The updates of metric `name`.
        pub(crate) fn of(&self, name: &str) -> Vec<(Vec<String>, f64)> {
            self.0
                .lock()
                .map(|u| {
                    u.iter()
                        .filter(|(n, ..)| n == name)
                        .map(|(_, l, v)| (l.clone(), *v))
                        .collect()
                })
                .unwrap_or_default()
        }
    }

    impl Recorder for Capture {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(Arc::new(Handle(key.clone(), self.clone())))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(Arc::new(Handle(key.clone(), self.clone())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::capture::Capture;
    use super::*;
    use crate::Error;
    use crate::engine::Failure;

    fn from_queue(id: &str) -> Message {
        Message::builder(id, "{}")
            .source("https://sqs.eu-west-1.amazonaws.com/123456789012/orders")
            .build()
    }

    fn failed(kind: FailureKind) -> Outcome {
        Outcome::Failed(Failure {
            kind,
            retry_delay: Duration::ZERO,
            error: Error::msg("x"),
        })
    }

    const PROCESS: [&str; 3] = [
        "messaging.destination.name=orders",
        "messaging.operation.name=process",
        "messaging.system=aws_sqs",
    ];

    #[test]
    fn both_names_by_default_with_the_otel_attributes() {
        let rec = Capture::default();
        let _g = metrics::set_default_local_recorder(&rec);
        received_as(MetricNames::Both, &[from_queue("a"), from_queue("b")]);
        let mut tally = Tally::default();
        tally.mode = Some(MetricNames::Both);
        let ok = Outcome::Succeeded;
        tally.record(&from_queue("a"), &ok, Some(Duration::from_millis(250)));
        tally.record(&from_queue("b"), &failed(FailureKind::Retry), None);
        tally.record(&from_queue("c"), &ok, None);
        // Never ran: no process duration.
        tally.record(&from_queue("d"), &failed(FailureKind::Unstarted), None);
        tally.handler_times(Duration::from_millis(10), 2);
        drop(tally);

        assert_eq!(rec.of(names::RECEIVED), [(vec![], 2.0)]);
        let consumed = [
            "messaging.destination.name=orders",
            "messaging.operation.name=receive",
            "messaging.system=aws_sqs",
        ];
        assert_eq!(
            rec.of(names::CONSUMED_MESSAGES),
            [(consumed.map(String::from).to_vec(), 2.0)]
        );
        // The alias and the OTel histogram carry the same values.
        let legacy: Vec<f64> = rec
            .of(names::HANDLER_DURATION)
            .iter()
            .map(|u| u.1)
            .collect();
        assert_eq!(legacy, [0.25, 0.01, 0.01]);
        let otel = rec.of(names::PROCESS_DURATION);
        let ok_labels = PROCESS.map(String::from).to_vec();
        let mut retry_labels = ok_labels.clone();
        retry_labels.insert(0, "error.type=retry".into());
        assert_eq!(
            otel,
            [
                (ok_labels.clone(), 0.25),
                (ok_labels, 0.01),
                (retry_labels, 0.01)
            ]
        );
    }

    #[test]
    fn one_set_of_names_when_chosen() {
        for (mode, legacy, otel) in [(MetricNames::Otel, 0, 1), (MetricNames::Legacy, 1, 0)] {
            let rec = Capture::default();
            let _g = metrics::set_default_local_recorder(&rec);
            received_as(mode, &[from_queue("a")]);
            let mut tally = Tally::default();
            tally.mode = Some(mode);
            tally.record(&from_queue("a"), &Outcome::Succeeded, Some(Duration::ZERO));
            drop(tally);
            assert_eq!(rec.of(names::RECEIVED).len(), legacy, "{mode:?}");
            assert_eq!(rec.of(names::HANDLER_DURATION).len(), legacy, "{mode:?}");
            assert_eq!(rec.of(names::CONSUMED_MESSAGES).len(), otel, "{mode:?}");
            assert_eq!(rec.of(names::PROCESS_DURATION).len(), otel, "{mode:?}");
            // Framework-specific metrics are there either way.
            assert_eq!(rec.of(names::SUCCEEDED), [(vec![], 1.0)], "{mode:?}");
        }
    }
}
