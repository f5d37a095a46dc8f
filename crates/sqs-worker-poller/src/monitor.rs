//! The run's helper tasks: the idle exit and the periodic stats line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::inflight::InFlight;
use sqs_worker_sqs::RequestCounter;

use crate::stats::{Activity, RunSummary, Stats};
use crate::stop::stopped;

/// Stops the run once nothing is in flight and no receive brought anything
/// for `idle`.
pub(crate) async fn idle_monitor(
    idle: Duration,
    inflight: Arc<InFlight>,
    activity: Arc<Activity>,
    stop: watch::Sender<bool>,
) {
    let tick = (idle / 4).clamp(Duration::from_millis(20), Duration::from_millis(500));
    loop {
        tokio::time::sleep(tick).await;
        if inflight.len() == 0 && activity.idle_for().is_some_and(|t| t >= idle) {
            tracing::info!(idle_ms = idle.as_millis() as u64, "queue idle: stopping");
            let _ = stop.send(true);
            return;
        }
    }
}

/// Logs the run's counters every `every` until stopped.
pub(crate) async fn stats_logger(
    every: Duration,
    stats: Arc<Stats>,
    requests: RequestCounter,
    started: Instant,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tick.tick() => {}
        }
        let s = stats.snapshot(requests.get(), started.elapsed());
        log_stats(&s, "progress");
    }
}

/// One stats line (`progress` or `final`).
pub(crate) fn log_stats(s: &RunSummary, what: &'static str) {
    tracing::info!(
        target: "sqs_worker_poller::stats",
        received = s.received,
        succeeded = s.succeeded,
        failed = s.failed,
        retried = s.retried,
        dead_lettered = s.dead_lettered,
        released = s.released,
        in_flight = s.in_flight,
        extensions = s.extensions,
        settlement_failures = s.settlement_failures,
        sdk_errors = s.sdk_errors,
        requests = s.requests,
        elapsed_ms = s.elapsed.as_millis() as u64,
        "{what}"
    );
}
