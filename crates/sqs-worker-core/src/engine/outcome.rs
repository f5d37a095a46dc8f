//! What became of each message: the engine's report.

use std::time::Duration;

use crate::error::{Action, Error};
use crate::message::Message;

/// Why a message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The handler returned a retryable error.
    Retry,
    /// The handler returned a permanent error (a body that does not
    /// deserialize is one): it will never succeed.
    Permanent,
    /// The handler panicked.
    Panicked,
    /// The handler ran past the per-message time limit and was stopped.
    TimedOut,
    /// The handler was still running at the batch deadline and was stopped.
    DeadlineExceeded,
    /// Not started: the batch deadline's safety margin was reached, or the
    /// runner is shutting down.
    Unstarted,
    /// Not run: an earlier message of the same FIFO group failed in this batch.
    GroupBlocked,
    /// The batch handler returned no result for this message.
    Missing,
}

impl FailureKind {
    /// Every kind, in declaration order (`kind as usize` indexes it).
    pub const ALL: [FailureKind; 8] = [
        Self::Retry,
        Self::Permanent,
        Self::Panicked,
        Self::TimedOut,
        Self::DeadlineExceeded,
        Self::Unstarted,
        Self::GroupBlocked,
        Self::Missing,
    ];

    /// A short, stable name (for logs and metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Permanent => "permanent",
            Self::Panicked => "panicked",
            Self::TimedOut => "timed_out",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Unstarted => "unstarted",
            Self::GroupBlocked => "group_blocked",
            Self::Missing => "missing",
        }
    }

    /// Whether the handler ran (or started) for this message.
    pub fn handler_ran(self) -> bool {
        !matches!(self, Self::Unstarted | Self::GroupBlocked)
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed message's cause and what the runner should do with it.
#[derive(Debug)]
pub struct Failure {
    /// Why it failed.
    pub kind: FailureKind,
    /// The cause, with its source chain.
    pub error: Error,
    /// How long the message should stay invisible before its next delivery.
    /// Zero for messages that never ran (so they come back at once, in order).
    /// A permanent failure has its delay too: runners apply it when the
    /// dead-letter send fails for good or no dead-letter queue is configured
    /// (so it never loops without delay).
    pub retry_delay: Duration,
}

impl Failure {
    /// Whether the message should go to a dead-letter queue right away.
    pub fn is_permanent(&self) -> bool {
        self.kind == FailureKind::Permanent
    }
}

/// The outcome for one message.
#[derive(Debug)]
pub enum Outcome {
    /// The handler succeeded: delete the message.
    Succeeded,
    /// It failed: the message must come back (or be dead-lettered).
    Failed(Failure),
}

/// A message and its outcome, as the engine hands it to the runner to settle.
#[derive(Debug)]
pub struct Settled {
    /// The message.
    pub message: Message,
    /// What became of it.
    pub outcome: Outcome,
}

impl Settled {
    /// The failure, if it failed.
    pub fn failure(&self) -> Option<&Failure> {
        match &self.outcome {
            Outcome::Succeeded => None,
            Outcome::Failed(f) => Some(f),
        }
    }

    /// Whether it succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self.outcome, Outcome::Succeeded)
    }
}

/// Every message of a batch, each exactly once, succeeded or failed, in the
/// order they settled.
#[derive(Debug, Default)]
pub struct BatchReport {
    /// The settled messages.
    pub settled: Vec<Settled>,
}

impl BatchReport {
    /// The messages that succeeded.
    pub fn succeeded(&self) -> impl Iterator<Item = &Message> {
        self.settled
            .iter()
            .filter(|s| s.is_success())
            .map(|s| &s.message)
    }

    /// The messages that failed, with their failures.
    pub fn failed(&self) -> impl Iterator<Item = (&Message, &Failure)> {
        self.settled
            .iter()
            .filter_map(|s| s.failure().map(|f| (&s.message, f)))
    }

    /// Ids of the failed messages.
    pub fn failed_ids(&self) -> Vec<&str> {
        self.failed().map(|(m, _)| m.id()).collect()
    }

    /// Whether every message succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.settled.iter().all(Settled::is_success)
    }
}

/// The failure kind for a handler error's action.
pub(crate) fn kind_of(e: &Error) -> FailureKind {
    match e.action() {
        Action::Permanent => FailureKind::Permanent,
        _ => FailureKind::Retry,
    }
}
