//! Flow control shared by both runners: what a worker does when a
//! dependency is down. The runners hold the state and call in at their own
//! stages; nothing here is on the hot path unless it is configured.
//!
//! - [`RetryBudget`]: a retry policy that spreads a message's retries over a
//!   retry window, knowing the queue's `maxReceiveCount`, so an outage shorter
//!   than the window does not dead-letter live traffic.
//! - [`CircuitBreaker`]: stops receiving while most recent handler runs fail
//!   (or one says [`Error::downstream`](crate::Error::downstream)).
//! - [`RateLimiter`]: handlers start at most `n` per second; receives ask
//!   only for the tokens they hold.
//! - [`AdaptiveLimit`]: an in-flight limit lowered when latency or failures
//!   rise, raised while they stay healthy (AIMD).
//! - [`GroupLimit`]: per-tenant in-flight limits on fair queues.

mod adaptive;
mod breaker;
mod budget;
mod rate;
mod tenant;

pub use self::adaptive::{AdaptiveConcurrency, AdaptiveLimit};
pub use self::breaker::{Admit, BreakerConfig, CircuitBreaker, CircuitState, Verdict};
pub use self::budget::{DEFAULT_RETRY_WINDOW, RetryBudget, parse_max_receive_count};
pub use self::rate::{MAX_RATE, RateLimit, RateLimiter, Reservation};
pub use self::tenant::{
    GroupAdmit, GroupLimit, MAX_GROUP_RELEASE_DELAY, limited_group, release_delay,
};
