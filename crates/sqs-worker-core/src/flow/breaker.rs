//! The circuit breaker: stop receiving while a dependency is down.
//!
//! Closed, it counts the verdicts of the last [`BreakerConfig::window`]
//! handler runs; when at least [`min_failures`](BreakerConfig::min_failures)
//! of them failed and the failures are at least
//! [`failure_share`](BreakerConfig::failure_share) of them — or one failure
//! was an [`Error::downstream`](crate::Error::downstream) — it opens. Open,
//! the runner receives nothing and releases what it already holds with the
//! rest of the cool-down as its delay. After the cool-down, half-open: one
//! message goes through; its success closes the breaker, its failure opens
//! it again for twice the cool-down (up to [`BreakerConfig::max_cool_down`]).
//!
//! What counts: a retryable handler error, a handler time limit or deadline
//! are failures; a permanent error (an undecodable body is one), a panic (a
//! bug, not the dependency) and a message that did not run are neither.
//! Time is tokio's clock, so paused-time tests are exact.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::engine::{FailureKind, Outcome, Settled};
use crate::runner::observe::{self, names};

/// The breaker's settings. Defaults: the last 20 results, open at ≥ 50 %
/// failures with at least 10, cool-down 5 s doubling up to 5 minutes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    window: usize,
    failure_share: f64,
    min_failures: usize,
    cool_down: Duration,
    max_cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: 20,
            failure_share: 0.5,
            min_failures: 10,
            cool_down: Duration::from_secs(5),
            max_cool_down: Duration::from_secs(5 * 60),
        }
    }
}

impl BreakerConfig {
    /// How many recent results count (1–64; default 20).
    #[must_use]
    pub fn window(mut self, n: usize) -> Self {
        self.window = n.clamp(1, 64);
        self
    }

    /// The share of failures among the recent results that opens it (0–1;
    /// default 0.5).
    #[must_use]
    pub fn failure_share(mut self, share: f64) -> Self {
        self.failure_share = if share.is_nan() {
            0.5
        } else {
            share.clamp(0.0, 1.0)
        };
        self
    }

    /// The fewest failures that open it (at least 1; default 10).
    #[must_use]
    pub fn min_failures(mut self, n: usize) -> Self {
        self.min_failures = n.max(1);
        self
    }

    /// The first cool-down (default 5 s) and the longest (default 5 min).
    #[must_use]
    pub fn cool_down(mut self, first: Duration, max: Duration) -> Self {
        self.cool_down = first.max(Duration::from_millis(1));
        self.max_cool_down = max.max(self.cool_down);
        self
    }
}

/// Where the breaker is; the value of the `sqs_worker_circuit_state` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CircuitState {
    /// Receiving and running normally (gauge 0).
    Closed = 0,
    /// A dependency is down: nothing is received or run (gauge 1).
    Open = 1,
    /// Trying one message after the cool-down (gauge 2).
    HalfOpen = 2,
}

impl CircuitState {
    /// A short, stable name (logs, `/healthz`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// What a handler run says about the dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The handler succeeded.
    Success,
    /// A retryable failure (or a time limit).
    Failure,
    /// [`Error::downstream`](crate::Error::downstream): the dependency is down.
    Downstream,
    /// Says nothing about the dependency (permanent, panic, not run).
    Neutral,
}

impl Verdict {
    /// The verdict of a settled message.
    pub fn of(settled: &Settled) -> Self {
        match &settled.outcome {
            Outcome::Succeeded => Self::Success,
            Outcome::Failed(f) if f.error.is_downstream() => Self::Downstream,
            Outcome::Failed(f) => match f.kind {
                FailureKind::Retry | FailureKind::TimedOut | FailureKind::DeadlineExceeded => {
                    Self::Failure
                }
                _ => Self::Neutral,
            },
        }
    }
}

/// What the runner may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Receive and run as usual.
    All,
    /// Half-open: receive and run at most this many (a probe).
    Probe(usize),
    /// Open (or a probe is out): receive nothing for this long.
    Wait(Duration),
}

/// A circuit breaker shared by a runner's receive loops (and, in Lambda, by
/// the invocations of a warm container). See the [`flow`](crate::flow) module docs.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: CircuitState,
    /// Recent results, newest in bit 0: 1 = failure.
    bits: u64,
    len: usize,
    cool_down: Duration,
    open_until: Instant,
    probe_out: bool,
}

/// While a probe is out, how often the runner looks again.
const PROBE_WAIT: Duration = Duration::from_millis(200);

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                state: CircuitState::Closed,
                bits: 0,
                len: 0,
                cool_down: config.cool_down,
                open_until: Instant::now(),
                probe_out: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding it cannot leave the state half-written.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state now.
    pub fn state(&self) -> CircuitState {
        self.lock().state
    }

    /// Whether the runner may receive `wanted` messages now; half-open after
    /// the cool-down, when it lets one probe through.
    pub fn admit(&self, wanted: usize) -> Admit {
        let mut g = self.lock();
        let now = Instant::now();
        match g.state {
            CircuitState::Closed => Admit::All,
            CircuitState::Open if now < g.open_until => Admit::Wait(g.open_until - now),
            CircuitState::Open => {
                self.transition(&mut g, CircuitState::HalfOpen);
                g.probe_out = true;
                Admit::Probe(wanted.min(1))
            }
            CircuitState::HalfOpen if g.probe_out => Admit::Wait(PROBE_WAIT),
            CircuitState::HalfOpen => {
                g.probe_out = true;
                Admit::Probe(wanted.min(1))
            }
        }
    }

    /// How long messages the runner holds but has not started should stay
    /// invisible: the rest of the cool-down while open, else `None`.
    pub fn release_delay(&self) -> Option<Duration> {
        let g = self.lock();
        (g.state == CircuitState::Open).then(|| {
            g.open_until
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1))
        })
    }

    /// The cool-down the next opening would last (doubles after each failed
    /// probe, back to the first on closing).
    pub fn cool_down(&self) -> Duration {
        self.lock().cool_down
    }

    /// A probe was admitted but nothing came of it (the receive brought no
    /// message): another may go.
    pub fn probe_returned(&self) {
        let mut g = self.lock();
        if g.state == CircuitState::HalfOpen {
            g.probe_out = false;
        }
    }

    /// Counts a settled message's result; when it was a probe that failed,
    /// keeps the message away for at least two cool-downs, so the next
    /// probe tries another message (a queue returns its oldest messages
    /// first, so the same message would otherwise be probed again and again,
    /// each probe a receive towards its `maxReceiveCount`).
    pub fn settle(&self, settled: &mut Settled) {
        if let Some(hold) = self.record(Verdict::of(settled))
            && let Outcome::Failed(f) = &mut settled.outcome
        {
            f.retry_delay = f.retry_delay.max(hold);
        }
    }

    /// Counts a handler result. For a probe that failed (the breaker opens
    /// again), returns how long its message should at least stay away: two
    /// of the new cool-downs.
    pub fn record(&self, verdict: Verdict) -> Option<Duration> {
        let mut g = self.lock();
        if verdict == Verdict::Neutral {
            // A probe that said nothing (permanent error, not run): another may go.
            if g.state == CircuitState::HalfOpen {
                g.probe_out = false;
            }
            return None;
        }
        match g.state {
            // Results of messages started before it opened.
            CircuitState::Open => {}
            CircuitState::HalfOpen => {
                if verdict == Verdict::Success {
                    g.cool_down = self.config.cool_down;
                    g.bits = 0;
                    g.len = 0;
                    self.transition(&mut g, CircuitState::Closed);
                } else {
                    let next = (g.cool_down * 2).min(self.config.max_cool_down);
                    g.cool_down = next;
                    self.open(&mut g);
                    return Some(next * 2);
                }
            }
            CircuitState::Closed => {
                let failed = verdict != Verdict::Success;
                let mask = if self.config.window >= 64 {
                    u64::MAX
                } else {
                    (1u64 << self.config.window) - 1
                };
                g.bits = ((g.bits << 1) | u64::from(failed)) & mask;
                g.len = (g.len + 1).min(self.config.window);
                let failures = g.bits.count_ones() as usize;
                let tripped = verdict == Verdict::Downstream
                    || (failures >= self.config.min_failures
                        && failures as f64 >= self.config.failure_share * g.len as f64);
                if tripped {
                    self.open(&mut g);
                }
            }
        }
        None
    }

    fn open(&self, g: &mut Inner) {
        g.open_until = Instant::now() + g.cool_down;
        g.probe_out = false;
        self.transition(g, CircuitState::Open);
    }

    /// One log line and the gauge per transition.
    fn transition(&self, g: &mut Inner, to: CircuitState) {
        let from = std::mem::replace(&mut g.state, to);
        if from == to {
            return;
        }
        metrics::gauge!(names::CIRCUIT_STATE).set(f64::from(to as u8));
        observe::health().set_circuit(to);
        let failures = g.bits.count_ones();
        match to {
            CircuitState::Open => tracing::warn!(
                circuit.from = from.as_str(),
                circuit.to = to.as_str(),
                cool_down_ms = g.cool_down.as_millis() as u64,
                recent_failures = failures,
                "circuit open: a dependency looks down; receiving stops for the cool-down"
            ),
            _ => tracing::info!(
                circuit.from = from.as_str(),
                circuit.to = to.as_str(),
                "circuit {}",
                to.as_str()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig::default())
    }

    #[tokio::test(start_paused = true)]
    async fn opens_at_the_threshold_and_not_before() {
        let b = breaker();
        for _ in 0..9 {
            b.record(Verdict::Failure);
        }
        assert_eq!(b.state(), CircuitState::Closed, "9 failures < 10");
        for _ in 0..50 {
            b.record(Verdict::Neutral);
        }
        assert_eq!(
            b.state(),
            CircuitState::Closed,
            "neutral results do not count"
        );
        b.record(Verdict::Failure);
        assert_eq!(b.state(), CircuitState::Open);
        assert!(matches!(b.admit(10), Admit::Wait(d) if d == Duration::from_secs(5)));
        assert!(b.release_delay().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_share_keeps_it_closed() {
        let b = breaker();
        for i in 0..1000 {
            // 45 % failures, 9 of every 20.
            let v = if i % 20 < 9 {
                Verdict::Failure
            } else {
                Verdict::Success
            };
            b.record(v);
        }
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.admit(10), Admit::All);
    }

    #[tokio::test(start_paused = true)]
    async fn one_downstream_error_opens_it() {
        let b = breaker();
        b.record(Verdict::Success);
        b.record(Verdict::Downstream);
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_probes_one_and_backs_off_until_success() {
        let b = breaker();
        b.record(Verdict::Downstream);
        let mut expected = Duration::from_secs(5);
        for _ in 0..10 {
            assert_eq!(b.admit(10), Admit::Wait(expected));
            tokio::time::advance(expected).await;
            assert_eq!(b.admit(10), Admit::Probe(1));
            assert_eq!(b.state(), CircuitState::HalfOpen);
            assert_eq!(b.admit(10), Admit::Wait(PROBE_WAIT), "one probe at a time");
            expected = (expected * 2).min(Duration::from_secs(300));
            // The failed probe's message sits out the next probe.
            assert_eq!(b.record(Verdict::Failure), Some(expected * 2));
            assert_eq!(b.state(), CircuitState::Open);
        }
        assert_eq!(expected, Duration::from_secs(300), "capped");
        tokio::time::advance(expected).await;
        assert_eq!(b.admit(10), Admit::Probe(1));
        // An empty receive gives the probe back, and so does a probe that
        // says nothing about the dependency.
        b.probe_returned();
        assert_eq!(b.admit(10), Admit::Probe(1));
        b.record(Verdict::Neutral);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert_eq!(b.admit(10), Admit::Probe(1));
        b.record(Verdict::Success);
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.admit(10), Admit::All);
        // The cool-down starts over and the window is clean.
        for _ in 0..9 {
            b.record(Verdict::Failure);
        }
        assert_eq!(b.state(), CircuitState::Closed);
        b.record(Verdict::Downstream);
        assert_eq!(b.admit(1), Admit::Wait(Duration::from_secs(5)));
    }
}
