//! The receive loop's load limits (issue 16 §3, §4): the rate limit and
//! adaptive concurrency. Without either, each hook is one `Option` check
//! per receive or settled message.
//!
//! - **Rate limit.** After the loop has its capacity permits, it reserves
//!   tokens for at most that many messages, waiting (stoppably) until the
//!   bucket has enough; permits beyond the tokens go back. The receive asks
//!   for as many messages as it holds tokens, so every message it brings
//!   starts at once: nothing waits in memory for a token. The messages that
//!   came spend their tokens; the rest return to the bucket.
//! - **Adaptive concurrency.** The capacity semaphore keeps its size (the
//!   maximum); the limiter holds back `maximum − limit` permits in a reserve.
//!   When the limit falls, the next permits a loop gathers go to the reserve
//!   instead of a receive (so in-flight messages finish first); when it
//!   rises, the reserve gives permits back.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use sqs_worker_core::config::ConfigError;
use sqs_worker_core::flow::{
    AdaptiveConcurrency, AdaptiveLimit, RateLimit, RateLimiter, Reservation, Verdict,
};
use sqs_worker_core::runner::{Processor, Settled};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::config::{PollerBuilder, Settings};
use crate::receive::Receiver;
use crate::stop::stopped;

/// The load limits of a run, shared by its receive loops.
#[derive(Debug, Default, Clone)]
pub(crate) struct Limits {
    pub(crate) rate: Option<Arc<RateLimiter>>,
    pub(crate) adaptive: Option<Arc<Adaptive>>,
}

impl Limits {
    /// The limits `s` configures, on the run's capacity semaphore.
    pub(crate) fn new(s: &Settings, capacity: &Arc<Semaphore>) -> Self {
        Self {
            rate: s.rate_limit.map(|r| Arc::new(RateLimiter::new(r))),
            adaptive: s.adaptive.clone().map(|a| {
                let max = s.concurrency;
                Arc::new(Adaptive::new(AdaptiveLimit::new(a), capacity.clone(), max))
            }),
        }
    }
}

/// The adaptive limit and the permits it holds back.
#[derive(Debug)]
pub(crate) struct Adaptive {
    limit: AdaptiveLimit,
    capacity: Arc<Semaphore>,
    max: usize,
    reserve: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Adaptive {
    pub(crate) fn new(limit: AdaptiveLimit, capacity: Arc<Semaphore>, max: usize) -> Self {
        Self {
            limit,
            capacity,
            max,
            reserve: Mutex::new(None),
        }
    }

    fn reserve(&self) -> std::sync::MutexGuard<'_, Option<OwnedSemaphorePermit>> {
        self.reserve.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves `permits` into the reserve until it holds `max − limit`, and
    /// frees what it holds beyond; returns the permits left for a receive.
    fn adjust(&self, mut permits: OwnedSemaphorePermit) -> Option<OwnedSemaphorePermit> {
        let target = self.max.saturating_sub(self.limit.limit());
        let mut reserve = self.reserve();
        let held = reserve.as_ref().map_or(0, |p| p.num_permits());
        if held > target {
            // Dropped: back to the semaphore.
            let _ = reserve.as_mut().and_then(|p| p.split(held - target));
        } else if held < target {
            let take = (target - held).min(permits.num_permits());
            if take == permits.num_permits() {
                merge(&mut reserve, permits);
                return None;
            }
            if let Some(t) = permits.split(take) {
                merge(&mut reserve, t);
            }
        }
        Some(permits)
    }

    /// Messages in flight now: the permits neither free nor held back.
    fn in_flight(&self) -> usize {
        let held = self.reserve().as_ref().map_or(0, |p| p.num_permits());
        self.max
            .saturating_sub(self.capacity.available_permits())
            .saturating_sub(held)
    }

    /// Counts a settled message (`received` when its receive answered).
    pub(crate) fn record(&self, settled: &Settled, received: Instant) {
        let in_flight = self.in_flight();
        self.limit
            .record(Verdict::of(settled), received.elapsed(), in_flight);
    }
}

fn merge(reserve: &mut Option<OwnedSemaphorePermit>, p: OwnedSemaphorePermit) {
    match reserve {
        Some(r) => r.merge(p),
        None => *reserve = Some(p),
    }
}

impl<P: Processor> Receiver<P> {
    /// Adaptive concurrency: the permits the limit lets this receive use
    /// (`None`: all went to the reserve; gather again).
    pub(crate) fn adapt(&self, permits: OwnedSemaphorePermit) -> Option<OwnedSemaphorePermit> {
        match &self.limits.adaptive {
            None => Some(permits),
            Some(a) => a.adjust(permits),
        }
    }

    /// The rate limit: tokens for up to `permits` messages, and the permits
    /// cut to match; `None` when stopped meanwhile.
    pub(crate) async fn pace(
        &self,
        mut permits: OwnedSemaphorePermit,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<(OwnedSemaphorePermit, Option<Reservation>)> {
        let Some(rate) = &self.limits.rate else {
            return Some((permits, None));
        };
        let reservation = loop {
            match rate.try_reserve(permits.num_permits()) {
                Ok(r) => break r,
                Err(wait) => {
                    tokio::select! {
                        biased;
                        () = stopped(stop) => return None,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        };
        let n = reservation.tokens();
        if n < permits.num_permits() {
            permits = permits.split(n)?;
        }
        Some((permits, Some(reservation)))
    }
}

/// Spends the tokens of the messages a receive brought (they start now).
pub(crate) fn spend(reservation: &mut Option<Reservation>, messages: usize) {
    if let Some(r) = reservation {
        r.consume(messages);
    }
}

impl<P: Processor> PollerBuilder<P> {
    /// A rate limit (default none; `SQS_WORKER_RATE_LIMIT`, per second):
    /// handlers start at most [`RateLimit::rate`] per second across the
    /// process, with bursts of [`RateLimit::burst_size`]. Receives ask only
    /// for what the limit lets start at once, so nothing received waits for
    /// it; it holds together with the concurrency. See the README's "Flow
    /// control".
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.settings.rate_limit = Some(limit);
        self
    }

    /// Adaptive concurrency (default off; `SQS_WORKER_ADAPTIVE_CONCURRENCY=true`
    /// for `1..=concurrency`): the in-flight limit moves within `range`,
    /// lowered when handler latency or the failure share rises, raised
    /// while they stay healthy (see [`AdaptiveConcurrency`]); the gauge
    /// `sqs_worker_concurrency_limit` shows it. The range's end is the
    /// concurrency (a [`concurrency`](Self::concurrency) set as well must
    /// equal it). Pass an [`AdaptiveConcurrency`] to change its latency
    /// tolerance.
    pub fn adaptive_concurrency(mut self, range: impl Into<AdaptiveConcurrency>) -> Self {
        self.settings.adaptive = Some(range.into());
        self
    }
}

/// `build`'s checks of the limits: the rate, and the adaptive range, whose
/// end becomes the concurrency (`concurrency`: the one set explicitly).
pub(crate) fn check(s: &mut Settings, concurrency: Option<usize>) -> Result<(), ConfigError> {
    if let Some(r) = &s.rate_limit {
        r.check()
            .map_err(|reason| ConfigError::invalid("rate_limit", reason))?;
    }
    let Some(a) = &s.adaptive else {
        return Ok(());
    };
    a.check()
        .map_err(|reason| ConfigError::invalid("adaptive_concurrency", reason))?;
    match concurrency {
        Some(n) if n != a.max() => Err(ConfigError::invalid(
            "adaptive_concurrency",
            format!(
                "the range ends at {} but the concurrency is {n}: the range's end is the \
                 concurrency",
                a.max()
            ),
        )),
        _ => {
            s.concurrency = a.max();
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use sqs_worker_core::{Error, Message};

    use crate::Poller;

    use super::*;

    async fn ok(_m: Message) -> Result<(), Error> {
        Ok(())
    }

    #[test]
    fn rate_limit_and_adaptive_concurrency_are_checked_by_build() {
        let b = || Poller::builder("q", ok);
        let s = b().adaptive_concurrency(2..=40).build().unwrap();
        assert_eq!(s.settings().concurrency, 40, "the range's end");
        assert!(
            b().concurrency(40)
                .adaptive_concurrency(1..=40)
                .build()
                .is_ok()
        );
        let cases: Vec<(&str, PollerBuilder<_>)> = vec![
            (
                "adaptive_concurrency",
                b().concurrency(32).adaptive_concurrency(1..=64),
            ),
            ("adaptive_concurrency", b().adaptive_concurrency(0..=8)),
            (
                "adaptive_concurrency",
                b().adaptive_concurrency(AdaptiveConcurrency::new(1..=8).latency_tolerance(0.5)),
            ),
            ("rate_limit", b().rate_limit(RateLimit::per_second(-1.0))),
            (
                "rate_limit",
                b().rate_limit(RateLimit::per_second(f64::INFINITY)),
            ),
        ];
        for (setting, builder) in cases {
            let e = builder.build().unwrap_err();
            assert!(e.to_string().contains(setting), "{setting}: {e}");
        }
    }
}
