//! The rate limit: handlers start at most `n` per second, with a small burst.
//!
//! A token bucket of [`RateLimit::burst_size`] tokens refilled at
//! [`RateLimit::rate`] tokens per second; every handler start takes one. A
//! runner takes tokens *before* it has the messages, so nothing it receives
//! waits in memory for a token: [`RateLimiter::reserve`] sets aside up to as
//! many tokens as a receive may bring, the receive asks for that many, and
//! the [`Reservation`] consumes the tokens of the messages that came
//! ([`Reservation::consume`]) and gives back the rest when dropped.
//!
//! Reserved tokens are out of the bucket but not yet spent, and the bucket
//! refills only up to the burst *minus* what is reserved: so however long a
//! long poll holds its reservation, the messages it brings plus what the
//! bucket holds when they arrive never exceed the burst. In any interval of
//! `t` seconds at most `burst + rate × t` handlers start.
//!
//! (A crate such as `governor` was considered: its GCRA has no reservation
//! that is settled later, and its clock is not tokio's, which the
//! paused-time tests rely on.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The highest rate accepted, per second.
pub const MAX_RATE: f64 = 100_000.0;

/// How much of the next second's tokens a receive waits for before asking
/// (so a low rate does not send one `ReceiveMessage` per token): a receive
/// goes once `min(wanted, ⌈burst / 2⌉, rate × FILL_HORIZON)` tokens (at
/// least 1) are there. Half the burst, so the bucket keeps refilling while
/// a receive holds its reservation.
const FILL_HORIZON: f64 = 0.5;

/// A rate limit: at most [`rate`](Self::rate) handler starts per second,
/// with bursts of up to [`burst_size`](Self::burst_size).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    rate: f64,
    burst: u32,
}

impl RateLimit {
    /// `n` starts per second (above 0, at most 100,000; fractions allowed,
    /// e.g. 0.5 for one every 2 s). The burst defaults to half a second's
    /// starts, at least 1 and at most 10 (one full receive).
    pub fn per_second(n: f64) -> Self {
        let burst = if n.is_finite() {
            (n / 2.0).ceil().clamp(1.0, 10.0) as u32
        } else {
            1
        };
        Self { rate: n, burst }
    }

    /// The most handlers that may start at once after a quiet spell
    /// (at least 1).
    #[must_use]
    pub fn burst(mut self, n: u32) -> Self {
        self.burst = n.max(1);
        self
    }

    /// Starts per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The burst.
    pub fn burst_size(&self) -> u32 {
        self.burst
    }

    /// Why the rate is refused (not above 0, not finite, above [`MAX_RATE`]).
    pub fn check(&self) -> Result<(), String> {
        if self.rate.is_finite() && self.rate > 0.0 && self.rate <= MAX_RATE {
            Ok(())
        } else {
            Err(format!(
                "{} per second is not above 0 and at most {MAX_RATE}",
                self.rate
            ))
        }
    }
}

/// The token bucket of a [`RateLimit`], shared by a runner's receive loops
/// (or a Lambda container's invocations). Time is tokio's clock.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimit,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens free to reserve (fractional while refilling).
    free: f64,
    /// Tokens reserved by receives in flight.
    reserved: u32,
    last: Instant,
}

impl RateLimiter {
    /// A full bucket for `config`. Check the config first
    /// ([`RateLimit::check`]): a rate it refuses is taken as one start per hour.
    pub fn new(config: RateLimit) -> Self {
        let config = if config.check().is_ok() {
            config
        } else {
            RateLimit {
                rate: 1.0 / 3600.0,
                burst: config.burst,
            }
        };
        Self {
            config,
            bucket: Mutex::new(Bucket {
                free: f64::from(config.burst),
                reserved: 0,
                last: Instant::now(),
            }),
        }
    }

    /// The limit.
    pub fn config(&self) -> RateLimit {
        self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        // Plain numbers: a panic while holding it cannot leave them half-written.
        self.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let room = f64::from(self.config.burst.saturating_sub(b.reserved));
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.free = (b.free + elapsed * self.config.rate).min(room);
        b.last = now;
    }

    /// How many tokens a receive wanting `wanted` waits for.
    fn target(&self, wanted: usize) -> u32 {
        let horizon = (self.config.rate * FILL_HORIZON).floor().max(1.0);
        let wanted = u32::try_from(wanted).unwrap_or(u32::MAX).max(1);
        wanted
            .min(self.config.burst.div_ceil(2))
            .min(horizon as u32)
    }

    /// Reserves up to `wanted` tokens if enough are free now (see the
    /// [`flow`](crate::flow) module docs); else how long until they will be.
    pub fn try_reserve(self: &Arc<Self>, wanted: usize) -> Result<Reservation, Duration> {
        let target = self.target(wanted);
        let mut b = self.lock();
        self.refill(&mut b, Instant::now());
        if b.free + 1e-9 >= f64::from(target) {
            let wanted = u32::try_from(wanted).unwrap_or(u32::MAX);
            let n = (b.free + 1e-9).floor().min(f64::from(wanted)) as u32;
            b.free = (b.free - f64::from(n)).max(0.0);
            b.reserved += n;
            return Ok(Reservation {
                limiter: self.clone(),
                tokens: n,
            });
        }
        let missing = f64::from(target) - b.free;
        Err(Duration::from_secs_f64(missing / self.config.rate).max(Duration::from_millis(1)))
    }

    /// Waits until [`try_reserve`](Self::try_reserve) succeeds.
    pub async fn reserve(self: &Arc<Self>, wanted: usize) -> Reservation {
        loop {
            match self.try_reserve(wanted) {
                Ok(r) => return r,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

/// Tokens set aside for a receive: [`consume`](Self::consume) those of the
/// messages that came; the rest go back to the bucket on drop.
#[derive(Debug)]
#[must_use = "dropping a reservation gives its tokens back"]
pub struct Reservation {
    limiter: Arc<RateLimiter>,
    tokens: u32,
}

impl Reservation {
    /// How many tokens it holds.
    pub fn tokens(&self) -> usize {
        self.tokens as usize
    }

    /// Spends `n` of its tokens (handlers about to start).
    pub fn consume(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX).min(self.tokens);
        if n == 0 {
            return;
        }
        self.tokens -= n;
        let mut b = self.limiter.lock();
        let now = Instant::now();
        // Refill up to now under the old reservation, so no token accrues
        // retroactively into the room the spent ones leave.
        self.limiter.refill(&mut b, now);
        b.reserved -= n;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.tokens == 0 {
            return;
        }
        let mut b = self.limiter.lock();
        let now = Instant::now();
        self.limiter.refill(&mut b, now);
        b.reserved -= self.tokens;
        b.free += f64::from(self.tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_burst_is_a_quarter_second_up_to_a_full_receive() {
        assert_eq!(RateLimit::per_second(14.0).burst_size(), 7);
        assert_eq!(RateLimit::per_second(0.5).burst_size(), 1);
        assert_eq!(RateLimit::per_second(1000.0).burst_size(), 10);
        assert_eq!(RateLimit::per_second(14.0).burst(0).burst_size(), 1);
        assert!(RateLimit::per_second(0.0).check().is_err());
        assert!(RateLimit::per_second(f64::NAN).check().is_err());
        assert!(RateLimit::per_second(MAX_RATE * 2.0).check().is_err());
        assert!(RateLimit::per_second(0.1).check().is_ok());
    }

    /// Receives that consume what they reserved for a minute; with
    /// `adversarial`, every fifth is a long poll that answers 800 ms later
    /// (its tokens reserved meanwhile) and every third brings one message
    /// fewer than asked. Returns when each token was spent.
    async fn spend_for_a_minute(adversarial: bool) -> Vec<Duration> {
        let l = Arc::new(RateLimiter::new(RateLimit::per_second(14.0)));
        let start = Instant::now();
        let mut spent: Vec<Duration> = Vec::new();
        let mut i = 0u32;
        while start.elapsed() < Duration::from_secs(60) {
            i += 1;
            let mut r = l.reserve(10).await;
            assert!(r.tokens() >= 1 && r.tokens() <= 7, "{}", r.tokens());
            let mut n = r.tokens();
            if adversarial && i.is_multiple_of(5) {
                tokio::time::advance(Duration::from_millis(800)).await;
            }
            if adversarial && i.is_multiple_of(3) {
                n -= 1;
            }
            r.consume(n);
            spent.extend(std::iter::repeat_n(start.elapsed(), n));
        }
        spent
    }

    /// In every one-second window at most `rate + burst` tokens are spent,
    /// however receives hold and return them; with a backlog the average is
    /// the rate.
    #[tokio::test(start_paused = true)]
    async fn spends_never_exceed_rate_plus_burst_in_any_second() {
        for adversarial in [true, false] {
            let spent = spend_for_a_minute(adversarial).await;
            for w in 0..600 {
                let from = Duration::from_millis(w * 100);
                let to = from + Duration::from_secs(1);
                let in_window = spent.iter().filter(|t| **t >= from && **t < to).count();
                assert!(in_window <= 14 + 7, "{in_window} in [{from:?}, {to:?})");
            }
            if !adversarial {
                let per_s = spent.len() as f64 / 60.0;
                assert!((13.9..=14.2).contains(&per_s), "{per_s} per second");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unspent_tokens_go_back_and_a_low_rate_waits_for_one() {
        let l = Arc::new(RateLimiter::new(RateLimit::per_second(0.5)));
        let r = l.try_reserve(10).unwrap();
        assert_eq!(r.tokens(), 1);
        assert_eq!(l.try_reserve(10).unwrap_err(), Duration::from_secs(2));
        drop(r); // the receive brought nothing
        let mut r = l.try_reserve(10).unwrap();
        r.consume(1);
        drop(r);
        assert!(l.try_reserve(1).is_err());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(l.try_reserve(1).unwrap().tokens(), 1);
    }
}
