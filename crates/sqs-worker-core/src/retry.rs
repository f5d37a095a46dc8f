//! How long a failed message stays invisible before its next attempt.
//!
//! The delay is keyed on the message's `ApproximateReceiveCount`, which SQS
//! keeps for us across deliveries and workers: the n-th failure waits about
//! `base × 2^(n−1)`, capped, with jitter so a burst of failures does not come
//! back as a burst. Runners apply it as a visibility change on the failed
//! message (the poller always, Lambda when it has an SQS client).
//!
//! Why not `backon` here: `backon`'s iterators model in-process retry loops
//! (state carried between attempts, jitter added *above* the capped delay). Our
//! attempt number arrives from SQS on each delivery, so the delay is a pure
//! function of it; the runners use `backon` for their own SDK-call retries.

use std::time::Duration;

use crate::error::{Action, Error};
use crate::visibility::MAX_VISIBILITY_TIMEOUT;

/// Decides a failed message's retry delay. Object-safe.
pub trait RetryPolicy: Send + Sync + 'static {
    /// The delay before delivery number `receive_count + 1`, after `error`.
    fn delay(&self, receive_count: u32, error: &Error) -> Duration;
}

/// How jitter spreads the delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// No jitter: exactly `min(cap, base × 2^(n−1))`.
    None,
    /// Uniform in `[d/2, d]`: keeps a floor under the delay ("equal jitter").
    #[default]
    Equal,
    /// Uniform in `[0, d]` ("full jitter"): the widest spread.
    Full,
}

/// Exponential backoff with jitter from the receive count. Defaults: base 1 s,
/// cap 15 min, equal jitter. Never beyond SQS's 12-hour visibility limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExponentialBackoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
}

impl Default for ExponentialBackoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(15 * 60),
            jitter: Jitter::Equal,
        }
    }
}

impl ExponentialBackoff {
    /// Backoff from `base`, capped at `cap` (itself capped at 12 hours).
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.min(MAX_VISIBILITY_TIMEOUT),
            jitter: Jitter::default(),
        }
    }

    /// Sets the jitter.
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The delay before jitter for the `receive_count`-th delivery.
    pub fn ceiling(&self, receive_count: u32) -> Duration {
        let exp = receive_count.saturating_sub(1).min(40);
        let d = self.base.saturating_mul(1u32 << exp.min(31));
        let d = if exp > 31 { self.cap } else { d };
        d.min(self.cap)
    }
}

impl RetryPolicy for ExponentialBackoff {
    fn delay(&self, receive_count: u32, error: &Error) -> Duration {
        let d = match error.action() {
            Action::RetryAfter(d) => d,
            _ => {
                let ceiling = self.ceiling(receive_count);
                let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
                match self.jitter {
                    Jitter::None => ceiling,
                    Jitter::Equal => Duration::from_millis(ms / 2 + fastrand::u64(0..=ms - ms / 2)),
                    Jitter::Full => Duration::from_millis(fastrand::u64(0..=ms)),
                }
            }
        };
        d.min(MAX_VISIBILITY_TIMEOUT)
    }
}

/// A fixed delay for every retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedDelay(pub Duration);

impl RetryPolicy for FixedDelay {
    fn delay(&self, _receive_count: u32, error: &Error) -> Duration {
        match error.action() {
            Action::RetryAfter(d) => d,
            _ => self.0,
        }
        .min(MAX_VISIBILITY_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_under_the_cap() {
        let p = ExponentialBackoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let e = Error::msg("x");
        let mut prev_ceiling = Duration::ZERO;
        for n in 1..=200u32 {
            let c = p.ceiling(n);
            assert!(c >= prev_ceiling, "ceiling must not shrink at {n}");
            prev_ceiling = c;
            for _ in 0..20 {
                let d = p.delay(n, &e);
                assert!(d <= c && d >= c / 2, "n={n} d={d:?} c={c:?}");
                assert!(d <= Duration::from_secs(60));
            }
        }
        assert_eq!(p.ceiling(1), Duration::from_secs(1));
        assert_eq!(p.ceiling(4), Duration::from_secs(8));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(60));
        // Jitter actually spreads.
        let spread: std::collections::HashSet<_> = (0..50).map(|_| p.delay(6, &e)).collect();
        assert!(spread.len() > 10);
    }

    #[test]
    fn never_beyond_twelve_hours() {
        let p = ExponentialBackoff::new(Duration::from_secs(3600), Duration::from_secs(100 * 3600))
            .jitter(Jitter::None);
        assert_eq!(p.delay(30, &Error::msg("x")), MAX_VISIBILITY_TIMEOUT);
        let huge = Error::retry_after(Duration::from_secs(48 * 3600), "later");
        assert_eq!(p.delay(1, &huge), MAX_VISIBILITY_TIMEOUT);
        assert_eq!(
            FixedDelay(Duration::from_secs(5)).delay(9, &Error::msg("x")),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn full_jitter_can_reach_zero_and_the_ceiling() {
        let p = ExponentialBackoff::new(Duration::from_millis(4), Duration::from_secs(1))
            .jitter(Jitter::Full);
        let e = Error::msg("x");
        let ds: Vec<_> = (0..2000).map(|_| p.delay(1, &e)).collect();
        assert!(ds.iter().all(|d| *d <= Duration::from_millis(4)));
        assert!(ds.contains(&Duration::ZERO));
        assert!(ds.contains(&Duration::from_millis(4)));
    }
}
