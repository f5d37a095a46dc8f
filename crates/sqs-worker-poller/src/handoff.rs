//! From the engine to settlement: each message the engine settles leaves the
//! in-flight table (so no extension can follow), becomes a settlement
//! [`Job`], and is queued for the acker with its in-flight slot, which the
//! acker holds until the SQS call is sent: when settlement is slow
//! (throttled deletes), receiving waits instead of piling up work.

use std::sync::Arc;

use sqs_worker_core::flow::GroupLimit;
use sqs_worker_core::runner::Settled;
use tokio::sync::mpsc;

use crate::inflight::InFlight;
use crate::settle::{Job, Slot};
use crate::stats::Activity;

/// What the engine's settle callback needs (one per run, shared by every batch).
pub(crate) struct Handoff {
    pub(crate) inflight: Arc<InFlight>,
    pub(crate) activity: Arc<Activity>,
    pub(crate) settle: mpsc::UnboundedSender<(Job, Slot)>,
    pub(crate) dead_letter: bool,
    /// Per-tenant limits on a fair queue (`crate::tenant`).
    pub(crate) groups: Option<Arc<GroupLimit>>,
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
        let (received, slot) = (entry.received, entry.slot);
        let job = Job::plan(s, received, self.dead_letter, &self.inflight.stats);
        if self.settle.send((job, slot)).is_err() {
            tracing::error!("settlement stage is gone; message left to its visibility timeout");
        }
    }
}
