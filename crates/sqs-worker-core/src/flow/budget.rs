//! The retry budget: a failing message's retries spread over a window.
//!
//! SQS moves a message to the dead-letter queue when it would be received
//! more than the redrive policy's `maxReceiveCount` times. With a fixed
//! exponential backoff (base 1 s) five receives last about 8–15 s, so any
//! outage longer than that dead-letters every message that arrives during
//! it. The budget instead picks the base so that the delays after the
//! `maxReceiveCount` failures add up to at least the retry window:
//!
//! ```text
//! delay(n) = jitter(base × 2^(n−1)),  n = 1..=M (receive count; above M as M)
//! base     = window / (f × (2^M − 1)),  f = 1/2 for equal jitter, 1 without
//! ```
//!
//! With equal jitter each delay is at least half its ceiling, so the sum of
//! the `M` delays is between the window and twice the window. With full
//! jitter the floor is 0: the ceilings add up to the window (the expected
//! sum is half of it), and no minimum can be promised. Each delay stays
//! within SQS's 12-hour visibility limit; a window too long for the count
//! (the last delay would pass 12 h) is reported by [`RetryBudget::fits`].
//!
//! Until the runner knows the count (no redrive policy, or not read yet) the
//! budget is its fallback, [`ExponentialBackoff::default`] unless set.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::error::{Action, Error};
use crate::retry::{ExponentialBackoff, Jitter, RetryPolicy};
use crate::visibility::MAX_VISIBILITY_TIMEOUT;

/// The default retry window: one hour.
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(60 * 60);

/// SQS's highest `maxReceiveCount`.
const MAX_RECEIVE_COUNT: u32 = 1000;

/// A retry policy that spreads a message's retries over a retry window,
/// given the queue's `maxReceiveCount`: a message that keeps failing reaches
/// the dead-letter queue no sooner than the window (with equal jitter, the
/// default, or none). See the [`flow`](crate::flow) module docs for the arithmetic.
///
/// The runners make one by default (window: [`DEFAULT_RETRY_WINDOW`], or
/// `SQS_WORKER_RETRY_WINDOW_SECONDS`) and tell it the count at start-up with
/// [`set_max_receive_count`](Self::set_max_receive_count); with a custom
/// processor, build one with [`with_max_receive_count`](Self::with_max_receive_count).
/// A failure's own [`Action::RetryAfter`] delay is kept as it is.
#[derive(Debug)]
pub struct RetryBudget {
    window: Duration,
    jitter: Jitter,
    fallback: ExponentialBackoff,
    /// 0 while unknown.
    max_receive_count: AtomicU32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(DEFAULT_RETRY_WINDOW)
    }
}

impl RetryBudget {
    /// A budget over `window` (capped at 12 h × the count by
    /// [`fits`](Self::fits)'s rule), equal jitter, count not yet known.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            jitter: Jitter::Equal,
            fallback: ExponentialBackoff::default(),
            max_receive_count: AtomicU32::new(0),
        }
    }

    /// Sets the jitter (default [`Jitter::Equal`]).
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The policy while the count is unknown (default
    /// [`ExponentialBackoff::default`]).
    #[must_use]
    pub fn fallback(mut self, fallback: ExponentialBackoff) -> Self {
        self.fallback = fallback;
        self
    }

    /// Sets the queue's `maxReceiveCount` (1–1000; 0 means unknown).
    #[must_use]
    pub fn with_max_receive_count(self, n: u32) -> Self {
        self.set_max_receive_count(Some(n));
        self
    }

    /// Sets (or with `None` forgets) the queue's `maxReceiveCount`; runners
    /// call it once they have read the redrive policy. Clamped to 1000.
    pub fn set_max_receive_count(&self, n: Option<u32>) {
        let n = n.map_or(0, |n| n.min(MAX_RECEIVE_COUNT));
        self.max_receive_count.store(n, Ordering::Relaxed);
    }

    /// The queue's `maxReceiveCount`, when known.
    pub fn max_receive_count(&self) -> Option<u32> {
        match self.max_receive_count.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// The retry window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The share of a ceiling that jitter always keeps.
    fn floor(&self) -> f64 {
        match self.jitter {
            Jitter::None => 1.0,
            Jitter::Equal => 0.5,
            _ => 1.0,
        }
    }

    /// The first delay's ceiling with `max` receives.
    fn base_secs(&self, max: u32) -> f64 {
        // 2^M − 1: M ≤ 1000 stays well inside f64's range (2^1023).
        let steps = 2f64.powi(max.min(MAX_RECEIVE_COUNT) as i32) - 1.0;
        self.window.as_secs_f64() / (self.floor() * steps)
    }

    /// The delay before jitter after the `receive_count`-th failure.
    pub fn ceiling(&self, receive_count: u32) -> Duration {
        let Some(max) = self.max_receive_count() else {
            return self.fallback.ceiling(receive_count);
        };
        let n = receive_count.clamp(1, max);
        let secs = self.base_secs(max) * 2f64.powi((n - 1) as i32);
        let cap = MAX_VISIBILITY_TIMEOUT.as_secs_f64();
        Duration::from_secs_f64(if secs.is_finite() { secs.min(cap) } else { cap })
    }

    /// Whether the schedule keeps its promise: false when the count is known
    /// and the last delay would have to pass SQS's 12-hour limit (the window
    /// is too long for the count; messages then reach the DLQ sooner).
    pub fn fits(&self) -> bool {
        match self.max_receive_count() {
            None => true,
            Some(max) => {
                let last = self.base_secs(max) * 2f64.powi((max - 1) as i32);
                last <= MAX_VISIBILITY_TIMEOUT.as_secs_f64()
            }
        }
    }
}

impl RetryPolicy for RetryBudget {
    fn delay(&self, receive_count: u32, error: &Error) -> Duration {
        if self.max_receive_count().is_none() {
            return self.fallback.delay(receive_count, error);
        }
        if let Action::RetryAfter(d) = error.action() {
            return d.min(MAX_VISIBILITY_TIMEOUT);
        }
        let ceiling = self.ceiling(receive_count);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        match self.jitter {
            Jitter::None => ceiling,
            Jitter::Equal => Duration::from_millis(ms / 2 + fastrand::u64(0..=ms - ms / 2)),
            _ => Duration::from_millis(fastrand::u64(0..=ms)),
        }
    }
}

/// The `maxReceiveCount` of a queue's `RedrivePolicy` attribute (JSON; SQS
/// writes the count as a string, some tools as a number). `None` when absent
/// or malformed.
pub fn parse_max_receive_count(redrive_policy: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(redrive_policy).ok()?;
    let n = v.get("maxReceiveCount")?;
    let n = match n {
        serde_json::Value::String(s) => s.trim().parse::<u32>().ok()?,
        serde_json::Value::Number(n) => u32::try_from(n.as_u64()?).ok()?,
        _ => return None,
    };
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule_sum(b: &RetryBudget, receives: u32) -> Duration {
        let e = Error::msg("down");
        (1..=receives).map(|n| b.delay(n, &e)).sum()
    }

    #[test]
    fn five_receives_over_an_hour_reach_the_dlq_no_sooner_than_the_window() {
        let b = RetryBudget::new(DEFAULT_RETRY_WINDOW).with_max_receive_count(5);
        assert!(b.fits());
        for _ in 0..2000 {
            let sum = schedule_sum(&b, 5);
            // Equal jitter: between the window and twice the window
            // (millisecond rounding of each of the 5 delays aside).
            assert!(
                sum + Duration::from_millis(5) >= DEFAULT_RETRY_WINDOW,
                "{sum:?}"
            );
            assert!(sum <= DEFAULT_RETRY_WINDOW * 2, "{sum:?}");
        }
        // Exponential shape: each ceiling doubles the one before.
        for n in 1..5 {
            let (a, c) = (b.ceiling(n).as_secs_f64(), b.ceiling(n + 1).as_secs_f64());
            assert!((c / a - 2.0).abs() < 1e-9, "n={n}: {a} → {c}");
        }
        // Base: 2 × 3600 / 31 s.
        assert!((b.ceiling(1).as_secs_f64() - 7200.0 / 31.0).abs() < 1e-6);
        // Past the count (a receive SQS made before a redrive change): the last step.
        assert_eq!(b.ceiling(9), b.ceiling(5));
        // Jitter still spreads.
        let e = Error::msg("x");
        let spread: std::collections::HashSet<_> = (0..50).map(|_| b.delay(3, &e)).collect();
        assert!(spread.len() > 10);
    }

    #[test]
    fn without_jitter_the_delays_add_up_to_the_window() {
        let w = Duration::from_secs(300);
        let b = RetryBudget::new(w)
            .jitter(Jitter::None)
            .with_max_receive_count(5);
        let sum = schedule_sum(&b, 5).as_secs_f64();
        assert!((sum - 300.0).abs() < 1e-6, "{sum}");
    }

    #[test]
    fn unknown_count_is_the_fallback_and_retry_after_is_kept() {
        let b = RetryBudget::default();
        let exp = ExponentialBackoff::default();
        for n in 1..=12 {
            assert_eq!(b.ceiling(n), exp.ceiling(n));
        }
        let later = Error::retry_after(Duration::from_secs(42), "later");
        assert_eq!(b.delay(1, &later), Duration::from_secs(42));
        b.set_max_receive_count(Some(3));
        assert_eq!(b.delay(1, &later), Duration::from_secs(42));
        assert!(b.ceiling(1) > exp.ceiling(1));
        b.set_max_receive_count(None);
        assert_eq!(b.ceiling(1), exp.ceiling(1));
    }

    #[test]
    fn a_window_too_long_for_the_count_is_reported_and_capped() {
        let b = RetryBudget::new(Duration::from_secs(24 * 3600)).with_max_receive_count(1);
        assert!(!b.fits());
        assert_eq!(b.ceiling(1), MAX_VISIBILITY_TIMEOUT);
        // The highest count SQS allows: no overflow, the base is tiny.
        let b = RetryBudget::default().with_max_receive_count(5000);
        assert_eq!(b.max_receive_count(), Some(1000));
        assert!(b.fits());
        assert!(b.ceiling(1) < Duration::from_millis(1));
        assert!(b.ceiling(1000) <= MAX_VISIBILITY_TIMEOUT);
    }

    #[test]
    fn redrive_policies_parse() {
        let arn = "arn:aws:sqs:us-east-1:123456789012:dlq";
        let s = format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"5"}}"#);
        assert_eq!(parse_max_receive_count(&s), Some(5));
        let n = format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":7}}"#);
        assert_eq!(parse_max_receive_count(&n), Some(7));
        assert_eq!(parse_max_receive_count(r#"{"maxReceiveCount":"x"}"#), None);
        assert_eq!(parse_max_receive_count(r#"{"maxReceiveCount":0}"#), None);
        assert_eq!(parse_max_receive_count("not json"), None);
        assert_eq!(parse_max_receive_count("{}"), None);
    }
}
