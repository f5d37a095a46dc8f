//! Per-tenant in-flight limits on fair queues (issue 15 §2): the setting,
//! and the check each received message passes before it joins a batch.
//!
//! A message of a tenant (its group id, on a standard queue) that already has
//! `max_in_flight_per_group` messages running is released at once, unstarted,
//! with a short delay ([`release_delay`](sqs_worker_core::flow::release_delay))
//! as a visibility change: not a failure, no retry delay from the retry
//! policy, counted in `released` and `sqs_worker_group_limited_total`. Its
//! slot goes with the release, so the limited tenant's messages never take
//! the capacity other tenants need. The tenant's count drops when a message
//! settles (`Handoff::settled`).

use std::sync::Arc;
use std::time::Instant;

use sqs_worker_core::Message;
use sqs_worker_core::config::{ConfigError, check_concurrency};
use sqs_worker_core::flow::{GroupAdmit, GroupLimit};
use sqs_worker_core::runner::Processor;
use sqs_worker_core::runner::observe::names;
use tokio::sync::OwnedSemaphorePermit;

use crate::config::{PollerBuilder, Settings};
use crate::receive::Receiver;
use crate::stats::Stats;

impl<P: Processor> PollerBuilder<P> {
    /// On a fair queue (a standard queue whose messages carry a
    /// `MessageGroupId` as a tenant label), at most `n` messages of one
    /// tenant run at once (`SQS_WORKER_MAX_IN_FLIGHT_PER_GROUP`; default
    /// unlimited): the tenant's further messages are released at once,
    /// unstarted, to come back after a short delay (1–2 s, spread wider with their
    /// receive count up to 1–5 s), so one tenant never occupies all of the
    /// concurrency. Messages without a group id are not limited. Each release
    /// raises the message's receive count; a message whose count reached the
    /// queue's `maxReceiveCount` runs over the limit rather than reach the
    /// dead-letter queue unrun. On a FIFO queue the setting is ignored, with
    /// a warning at start-up: its groups already run one message at a time.
    /// 1 to [`MAX_CONCURRENCY`](sqs_worker_core::config::MAX_CONCURRENCY).
    pub fn max_in_flight_per_group(mut self, n: usize) -> Self {
        self.settings.max_in_flight_per_group = Some(n);
        self
    }
}

/// Checks the setting (`build`).
pub(crate) fn check(s: &Settings) -> Result<(), ConfigError> {
    match s.max_in_flight_per_group {
        Some(n) => check_concurrency("max_in_flight_per_group", n),
        None => Ok(()),
    }
}

/// The run's limit: none unless set, and none on a FIFO queue (warned).
pub(crate) fn limit(
    s: &Settings,
    queue_url: &str,
    max_receive_count: Option<u32>,
) -> Option<Arc<GroupLimit>> {
    let n = s.max_in_flight_per_group?;
    if queue_url.ends_with(".fifo") {
        tracing::warn!(
            max_in_flight_per_group = n,
            "max_in_flight_per_group is ignored on a FIFO queue: each message group already \
             runs one message at a time"
        );
        return None;
    }
    if n >= s.concurrency {
        tracing::warn!(
            max_in_flight_per_group = n,
            concurrency = s.concurrency,
            "max_in_flight_per_group is not below the concurrency: one tenant can still take \
             every slot"
        );
    }
    Some(Arc::new(GroupLimit::new(n, max_receive_count)))
}

impl<P: Processor> Receiver<P> {
    /// `msg` back when it may run (counted against its tenant); `None` when
    /// its tenant is at the limit and it was released with its slot.
    pub(crate) fn admit_group(
        &self,
        msg: Message,
        received: Instant,
        permits: &mut OwnedSemaphorePermit,
    ) -> Option<Message> {
        let Some(groups) = &self.handoff.groups else {
            return Some(msg);
        };
        let GroupAdmit::Release(delay) = groups.admit(&msg) else {
            return Some(msg);
        };
        tracing::debug!(
            messaging.message.id = msg.id(),
            delay_ms = delay.as_millis() as u64,
            limit = groups.limit(),
            "its tenant is at max_in_flight_per_group: released unstarted"
        );
        Stats::add(&self.inflight.stats.received, 1);
        metrics::counter!(names::GROUP_LIMITED).increment(1);
        self.handoff.release(msg, delay, received, permits.split(1));
        None
    }
}
