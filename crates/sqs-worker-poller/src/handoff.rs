//! From the engine to settlement: each message the engine settles leaves the
//! in-flight table (so no extension can follow), frees its handler slot,
//! becomes a settlement [`Job`], and is queued for the acker with its lease,
//! which the acker holds until the SQS call is sent: when settlement is slow
//! (throttled deletes), receiving waits instead of piling up work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqs_worker_core::Message;
use sqs_worker_core::flow::GroupLimit;
use sqs_worker_core::runner::Settled;
use tokio::sync::mpsc;

use crate::ahead::Ahead;
use crate::inflight::InFlight;
use crate::settle::{Job, Lease};
use crate::stats::Activity;

/// What the engine's settle callback needs (one per run, shared by every batch).
pub(crate) struct Handoff {
    pub(crate) inflight: Arc<InFlight>,
    pub(crate) activity: Arc<Activity>,
    pub(crate) settle: mpsc::UnboundedSender<(Job, Lease)>,
    pub(crate) dead_letter: bool,
    /// Per-tenant limits on a fair queue (`crate::tenant`).
    pub(crate) groups: Option<Arc<GroupLimit>>,
    /// Receive ahead, when on (`crate::ahead`): told of each freed slot.
    pub(crate) ahead: Option<Arc<Ahead>>,
}

impl Handoff {
    /// One settled message: out of the table, planned, queued.
    pub(crate) fn settled(&self, s: Settled) {
        // Its handler is done: its tenant has one fewer running.
        if let Some(g) = &self.groups {
            g.finished(&s.message);
        }
        // Out of the table first: no extension can follow.
        let Some(entry) = self.inflight.remove(&s.message) else {
            return; // already released at shutdown
        };
        self.activity.touch();
        let (received, lease) = (entry.received, entry.lease);
        // The handler is done: its slot is free (the lease goes on).
        drop(entry.slot);
        if let Some(a) = &self.ahead {
            a.finished(s.message.visibility().started_at());
        }
        let job = Job::plan(s, received, self.dead_letter, &self.inflight.stats);
        self.queue(job, lease);
    }

    /// Queues `job` for the acker with its lease.
    pub(crate) fn queue(&self, job: Job, lease: Lease) {
        if self.settle.send((job, lease)).is_err() {
            tracing::error!("settlement stage is gone; message left to its visibility timeout");
        }
    }

    /// Queues a message that did not run to be visible again after `delay`
    /// (not a retry: no failure is counted).
    pub(crate) fn release(
        &self,
        message: Message,
        delay: Duration,
        received: Instant,
        lease: Lease,
    ) {
        let job = Job::Release {
            message,
            delay,
            received,
            retry: false,
        };
        self.queue(job, lease);
    }

    /// A message received ahead and never started: out of the table and
    /// its tenant's count, made visible again at once.
    pub(crate) fn release_unstarted(&self, message: Message) {
        if let Some(g) = &self.groups {
            g.finished(&message);
        }
        let Some(entry) = self.inflight.remove(&message) else {
            return;
        };
        self.release(message, Duration::ZERO, entry.received, entry.lease);
    }
}
