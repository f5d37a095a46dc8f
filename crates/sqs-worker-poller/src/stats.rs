//! The poller's own counters: what a run did, returned as a [`RunSummary`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Live counters, shared by the stages.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) received: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) deleted: AtomicU64,
    pub(crate) extensions: AtomicU64,
    pub(crate) settlement_failures: AtomicU64,
    pub(crate) sdk_errors: AtomicU64,
    pub(crate) in_flight: AtomicU64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self, requests: u64, elapsed: Duration) -> RunSummary {
        RunSummary {
            received: self.received.load(Relaxed),
            succeeded: self.succeeded.load(Relaxed),
            failed: self.failed.load(Relaxed),
            retried: self.retried.load(Relaxed),
            released: self.released.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            deleted: self.deleted.load(Relaxed),
            extensions: self.extensions.load(Relaxed),
            settlement_failures: self.settlement_failures.load(Relaxed),
            sdk_errors: self.sdk_errors.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            requests,
            elapsed,
        }
    }
}

/// When something last happened (a non-empty receive or a settlement), and
/// whether a receive has come back empty since, for idle exit.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    empty_since_last: AtomicBool,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            empty_since_last: AtomicBool::new(false),
        }
    }

    pub(crate) fn touch(&self) {
        // At least 1: 0 means nothing happened yet.
        self.last_ms
            .store((self.start.elapsed().as_millis() as u64).max(1), Relaxed);
        self.empty_since_last.store(false, Relaxed);
    }

    pub(crate) fn empty_receive(&self) {
        self.empty_since_last.store(true, Relaxed);
    }

    /// How long ago something was last received or settled; `None` before
    /// anything was.
    pub(crate) fn last_activity_age(&self) -> Option<Duration> {
        match self.last_ms.load(Relaxed) {
            0 => None,
            last => Some(
                self.start
                    .elapsed()
                    .saturating_sub(Duration::from_millis(last)),
            ),
        }
    }

    /// How long the queue has looked empty: `None` until a receive came back
    /// empty after the last thing that happened.
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        if !self.empty_since_last.load(Relaxed) {
            return None;
        }
        Some(
            self.start
                .elapsed()
                .saturating_sub(Duration::from_millis(self.last_ms.load(Relaxed))),
        )
    }
}

/// What a run did. Every received message ends in exactly one of
/// `succeeded`, `failed` (its handler ran and failed) or `released` (given
/// back without running: unstarted, group-blocked, or stopped at shutdown).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunSummary {
    /// Messages received.
    pub received: u64,
    /// Messages whose handler succeeded.
    pub succeeded: u64,
    /// Messages whose handler failed (retried, dead-lettered, or left to the redrive policy).
    pub failed: u64,
    /// Failed messages made visible again after their retry delay (not those
    /// whose dead-letter send failed for good: see `settlement_failures`).
    pub retried: u64,
    /// Messages made visible again at once without (fully) running: not
    /// started, blocked behind a FIFO group failure, or stopped at shutdown.
    pub released: u64,
    /// Messages sent to the configured dead-letter queue.
    pub dead_lettered: u64,
    /// Messages deleted (succeeded, or dead-lettered).
    pub deleted: u64,
    /// Visibility extensions (heartbeat and handler-requested).
    pub extensions: u64,
    /// Deletes, visibility changes or dead-letter sends that failed for good
    /// (a message whose dead-letter send failed then gets its retry delay).
    pub settlement_failures: u64,
    /// SQS calls that failed (each retried when transient).
    pub sdk_errors: u64,
    /// Messages in flight when the summary was taken (0 after a run).
    pub in_flight: u64,
    /// HTTP requests sent to SQS, SDK retries included.
    pub requests: u64,
    /// Time since the run started.
    pub elapsed: Duration,
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "received {}, succeeded {}, failed {} (retried {}, dead-lettered {}), released {}, \
             extensions {}, settlement failures {}, SQS requests {}, in {:.1?}",
            self.received,
            self.succeeded,
            self.failed,
            self.retried,
            self.dead_lettered,
            self.released,
            self.extensions,
            self.settlement_failures,
            self.requests,
            self.elapsed
        )
    }
}
