//! Engine settings: concurrency, execution, time limits, retry policy.

use std::sync::Arc;
use std::time::Duration;

use super::{Failure, FailureKind};
use crate::error::Error;
use crate::message::Message;
use crate::retry::{ExponentialBackoff, RetryPolicy};

/// How handler futures are driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Execution {
    /// Each message is polled inside the batch's own task: the messages of a
    /// batch interleave at their awaits, and separate batches (the poller
    /// runs each receive as a task) use the other worker threads. Cheapest;
    /// a handler that computes for long without awaiting holds back the rest
    /// of its batch meanwhile. The default of both runners.
    #[default]
    Inline,
    /// Each message is its own `tokio` task, so handlers that compute for
    /// long stretches use every worker thread even within one batch; costs
    /// a task per message.
    Spawn,
}

/// Engine settings. Build with [`EngineConfig::default`] and the setters.
#[derive(Clone)]
pub struct EngineConfig {
    pub(super) concurrency: usize,
    pub(super) execution: Execution,
    pub(crate) handler_timeout: Option<Duration>,
    pub(crate) start_margin: Duration,
    pub(super) fifo_stop_batch_on_failure: bool,
    retry: Arc<dyn RetryPolicy>,
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("concurrency", &self.concurrency)
            .field("execution", &self.execution)
            .field("handler_timeout", &self.handler_timeout)
            .field("start_margin", &self.start_margin)
            .field(
                "fifo_stop_batch_on_failure",
                &self.fifo_stop_batch_on_failure,
            )
            .finish_non_exhaustive()
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            execution: Execution::Inline,
            handler_timeout: None,
            start_margin: Duration::ZERO,
            fifo_stop_batch_on_failure: false,
            retry: Arc::new(ExponentialBackoff::default()),
        }
    }
}

impl EngineConfig {
    /// At most `n` handlers run at once within a batch (at least 1).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How handler futures are driven.
    #[must_use]
    pub fn execution(mut self, execution: Execution) -> Self {
        self.execution = execution;
        self
    }

    /// Stop a handler after `limit` and fail its message ([`FailureKind::TimedOut`]).
    #[must_use]
    pub fn handler_timeout(mut self, limit: Option<Duration>) -> Self {
        self.handler_timeout = limit;
        self
    }

    /// With a batch deadline, start no message when less than `margin` is
    /// left; those are [`FailureKind::Unstarted`] (retry delay 0). In Lambda
    /// the batch deadline is the invocation deadline less the safety margin
    /// (`SQS_WORKER_START_MARGIN_SECONDS`); the poller passes no deadline.
    #[must_use]
    pub fn start_margin(mut self, margin: Duration) -> Self {
        self.start_margin = margin;
        self
    }

    /// FIFO batches stop at their first failure (default off): once a
    /// message of a FIFO queue fails, no further message of the batch starts,
    /// whatever its group, and every message not started is reported
    /// [`FailureKind::Unstarted`] (the rest of the failed group
    /// [`FailureKind::GroupBlocked`]), retry delay 0. Messages already
    /// running finish. This is AWS's documented behaviour for partial batch
    /// responses on FIFO queues (`SQS_WORKER_FIFO_STOP_BATCH_ON_FAILURE` in
    /// Lambda). Off, only the failed message's group stops and the other
    /// groups run on: the groups are independent, so nothing is reordered.
    /// Standard (and fair) queues are not affected; a
    /// [`BatchEngine`](crate::runner::BatchEngine) hands the whole batch to
    /// its handler and ignores it.
    #[must_use]
    pub fn fifo_stop_batch_on_failure(mut self, on: bool) -> Self {
        self.fifo_stop_batch_on_failure = on;
        self
    }

    /// The retry policy that sets each failure's retry delay.
    #[must_use]
    pub fn retry_policy(mut self, policy: impl RetryPolicy) -> Self {
        self.retry = Arc::new(policy);
        self
    }

    /// The retry policy, shared.
    #[must_use]
    pub fn retry_policy_arc(mut self, policy: Arc<dyn RetryPolicy>) -> Self {
        self.retry = policy;
        self
    }

    pub(crate) fn failure(&self, msg: &Message, kind: FailureKind, error: Error) -> Failure {
        let retry_delay = match kind {
            FailureKind::Unstarted | FailureKind::GroupBlocked => Duration::ZERO,
            _ => self.retry.delay(msg.receive_count(), &error),
        };
        Failure {
            kind,
            error,
            retry_delay,
        }
    }
}
