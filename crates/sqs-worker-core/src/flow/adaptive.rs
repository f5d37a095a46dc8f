//! Adaptive concurrency: an in-flight limit that follows the downstream.
//!
//! AIMD, as TCP does with its congestion window, with latency and failures
//! as the congestion signals:
//!
//! - **Signals.** `short`: a moving average of handler latency over about
//!   the last 10 successes. `baseline`: the lowest `short` seen (the latency
//!   without queueing), forgetting slowly (it may rise by 1 % per 1,000
//!   results), so a lasting change in the handler's own latency is learned.
//!   `failures`: the share of failures among about the last 10 results
//!   (a permanent error, a panic or a message that did not run says nothing).
//! - **Decrease.** A failure while `failures` is above 10 % halves the
//!   limit; a success while `short` is above
//!   [`latency_tolerance`](AdaptiveConcurrency::latency_tolerance) ×
//!   `baseline` (default 2) lowers it by 10 %. After a decrease, the next
//!   waits for as many results as the new limit (the messages started under
//!   the old limit).
//! - **Increase.** Otherwise, each success while at least half the limit is
//!   in use adds `1 / limit` (one per round of in-flight messages). At the
//!   start, and after falling to the minimum, it adds 1 instead (a slow
//!   start, doubling per round) until the next decrease.
//!
//! The limit is kept within `min..=max`; its whole part is the
//! `sqs_worker_concurrency_limit` gauge. Time is whatever the runner
//! measures; the state is a few numbers behind a mutex, touched once per
//! settled message.

use std::ops::RangeInclusive;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::MAX_CONCURRENCY;
use crate::flow::Verdict;
use crate::runner::observe::names;

/// Weight of a new result in the moving averages (about the last 10).
const ALPHA: f64 = 0.1;
/// The failure share above which the limit halves.
const FAILURE_SHARE: f64 = 0.1;
/// How fast the latency baseline forgets, per success.
const BASELINE_DRIFT: f64 = 1e-5;

/// Adaptive concurrency settings: the range of the limit and how much
/// latency above the baseline counts as congestion.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveConcurrency {
    min: usize,
    max: usize,
    tolerance: f64,
}

impl AdaptiveConcurrency {
    /// A limit between `range`'s ends (at least 1; the poller's concurrency
    /// becomes the end), starting at the lower end.
    pub fn new(range: RangeInclusive<usize>) -> Self {
        Self {
            min: *range.start(),
            max: *range.end(),
            tolerance: 2.0,
        }
    }

    /// Latency above `factor` × the baseline lowers the limit (above 1;
    /// default 2).
    #[must_use]
    pub fn latency_tolerance(mut self, factor: f64) -> Self {
        self.tolerance = factor;
        self
    }

    /// The lowest limit.
    pub fn min(&self) -> usize {
        self.min
    }

    /// The highest limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Why the settings are refused.
    pub fn check(&self) -> Result<(), String> {
        if self.min == 0 || self.min > self.max || self.max > MAX_CONCURRENCY {
            return Err(format!(
                "{}..={} is not a range within 1..={MAX_CONCURRENCY}",
                self.min, self.max
            ));
        }
        if !(self.tolerance.is_finite() && self.tolerance > 1.0) {
            return Err(format!(
                "latency tolerance {} is not above 1",
                self.tolerance
            ));
        }
        Ok(())
    }
}

impl From<RangeInclusive<usize>> for AdaptiveConcurrency {
    fn from(range: RangeInclusive<usize>) -> Self {
        Self::new(range)
    }
}

/// The adaptive in-flight limit (see the [`flow`](crate::flow) module docs).
#[derive(Debug)]
pub struct AdaptiveLimit {
    config: AdaptiveConcurrency,
    state: Mutex<State>,
    current: AtomicUsize,
}

#[derive(Debug)]
struct State {
    limit: f64,
    /// Seconds; 0 before the first success.
    short: f64,
    /// Seconds; infinite before the first success.
    baseline: f64,
    failures: f64,
    /// Results to wait before another decrease.
    hold: u32,
    slow_start: bool,
}

impl AdaptiveLimit {
    /// A limit at `config`'s lower end (check the config first).
    pub fn new(config: AdaptiveConcurrency) -> Self {
        let min = config.min.max(1);
        metrics::gauge!(names::CONCURRENCY_LIMIT).set(min as f64);
        Self {
            state: Mutex::new(State {
                limit: min as f64,
                short: 0.0,
                baseline: f64::INFINITY,
                failures: 0.0,
                hold: 0,
                slow_start: true,
            }),
            current: AtomicUsize::new(min),
            config,
        }
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// Counts a settled message: its verdict, how long its handler took, and
    /// how many messages were in flight.
    pub fn record(&self, verdict: Verdict, latency: Duration, in_flight: usize) {
        if verdict == Verdict::Neutral {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let failed = verdict != Verdict::Success;
        s.failures += ALPHA * (f64::from(u8::from(failed)) - s.failures);
        if !failed {
            let l = latency.as_secs_f64();
            s.short = if s.short == 0.0 {
                l
            } else {
                s.short + ALPHA * (l - s.short)
            };
            s.baseline = (s.baseline * (1.0 + BASELINE_DRIFT)).min(s.short);
        }
        s.hold = s.hold.saturating_sub(1);
        let failing = s.failures > FAILURE_SHARE;
        let slow = s.short > self.config.tolerance * s.baseline;
        let (min, max) = (self.config.min as f64, self.config.max as f64);
        if (failed && failing) || (!failed && slow) {
            if s.hold == 0 {
                let factor = if failed { 0.5 } else { 0.9 };
                s.limit = (s.limit * factor).max(min);
                // Down to the minimum (a dependency that was down): start
                // slowly again, doubling per round, once it answers.
                s.slow_start = s.limit <= min;
                s.hold = s.limit.ceil() as u32;
            }
        } else if !failed && in_flight as f64 >= s.limit / 2.0 {
            s.limit += if s.slow_start { 1.0 } else { 1.0 / s.limit };
            s.limit = s.limit.min(max);
        }
        let now = (s.limit.floor() as usize).clamp(self.config.min, self.config.max);
        if self.current.swap(now, Ordering::Relaxed) != now {
            metrics::gauge!(names::CONCURRENCY_LIMIT).set(now as f64);
            tracing::debug!(
                concurrency_limit = now,
                latency_ms = s.short * 1e3,
                baseline_ms = s.baseline * 1e3,
                failure_share = s.failures,
                "adaptive concurrency limit changed"
            );
        }
    }
}

#[cfg(test)]
mod tests;
