//! The health of a runner's receive path, for `/healthz`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The health of a runner's receive path, for health checks (`/healthz`).
///
/// Runners call [`receive_succeeded`](Health::receive_succeeded) and
/// [`receive_failed`](Health::receive_failed); a health endpoint asks
/// [`check`](Health::check).
#[derive(Debug, Default)]
pub struct Health {
    /// Milliseconds since the Unix epoch when receives started failing; 0 when they are not.
    failing_since_ms: AtomicU64,
    /// Milliseconds since the Unix epoch when SQS started refusing receives
    /// for a limit; 0 when it is not.
    limited_since_ms: AtomicU64,
    last_ok_ms: AtomicU64,
    failures: AtomicU64,
    /// The circuit breaker's state (`CircuitState as u8`); 0 without one.
    circuit: std::sync::atomic::AtomicU8,
}

/// What [`Health::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    /// Receiving works (or has not failed for long).
    Healthy,
    /// Every receive has failed for this long.
    Unhealthy {
        /// For how long.
        failing_for: Duration,
    },
    /// SQS refuses receives for a limit (the queue's in-flight limit): the
    /// runner backs off and goes on; restarting it would not help.
    Degraded {
        /// For how long.
        limited_for: Duration,
    },
}

impl Health {
    /// A receive call succeeded.
    pub fn receive_succeeded(&self) {
        self.failing_since_ms.store(0, Ordering::Relaxed);
        self.limited_since_ms.store(0, Ordering::Relaxed);
        self.last_ok_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A receive call failed.
    pub fn receive_failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let _ = self.failing_since_ms.compare_exchange(
            0,
            now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// A receive call was refused for a limit (SQS `OverLimit`): degraded
    /// until a receive succeeds.
    pub fn receive_limited(&self) {
        let _ = self.limited_since_ms.compare_exchange(
            0,
            now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Unhealthy when every receive has failed for at least `threshold`;
    /// degraded while receives are refused for a limit.
    pub fn check(&self, threshold: Duration) -> HealthStatus {
        match self.failing_since_ms.load(Ordering::Relaxed) {
            0 => match self.limited_since_ms.load(Ordering::Relaxed) {
                0 => HealthStatus::Healthy,
                since => HealthStatus::Degraded {
                    limited_for: Duration::from_millis(now_ms().saturating_sub(since)),
                },
            },
            since => {
                let failing_for = Duration::from_millis(now_ms().saturating_sub(since));
                if failing_for >= threshold {
                    HealthStatus::Unhealthy { failing_for }
                } else {
                    HealthStatus::Healthy
                }
            }
        }
    }

    /// The circuit breaker changed state (its transitions call this).
    pub fn set_circuit(&self, state: crate::flow::CircuitState) {
        self.circuit.store(state as u8, Ordering::Relaxed);
    }

    /// The circuit breaker's state (closed without one).
    pub fn circuit(&self) -> crate::flow::CircuitState {
        use crate::flow::CircuitState;
        match self.circuit.load(Ordering::Relaxed) {
            1 => CircuitState::Open,
            2 => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }

    /// Receive failures so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// The process-wide receive health.
pub fn health() -> &'static Health {
    static HEALTH: std::sync::OnceLock<Health> = std::sync::OnceLock::new();
    HEALTH.get_or_init(Health::default)
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_turns_unhealthy_only_after_the_threshold() {
        let h = Health::default();
        assert_eq!(h.check(Duration::ZERO), HealthStatus::Healthy);
        h.receive_failed();
        assert!(matches!(
            h.check(Duration::ZERO),
            HealthStatus::Unhealthy { .. }
        ));
        assert_eq!(h.check(Duration::from_secs(60)), HealthStatus::Healthy);
        h.receive_succeeded();
        assert_eq!(h.check(Duration::ZERO), HealthStatus::Healthy);
        assert_eq!(h.failures(), 1);
    }
}
