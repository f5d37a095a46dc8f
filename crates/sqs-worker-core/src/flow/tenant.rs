//! Per-tenant in-flight limits on fair queues (issue 15 §2).
//!
//! On a standard queue a `MessageGroupId` is a tenant label ("fair queue").
//! With a limit of `n`, a tenant with `n` messages running has its further
//! messages released at once with a short delay instead of taking more of
//! the worker's slots, so one tenant never occupies all of its concurrency.
//! Messages without a group id, and every message of a FIFO queue (whose
//! lanes already run one message per group), are not limited.
//!
//! The runners count and release ([`GroupLimit`]); the delay is
//! [`release_delay`]: spread between 1 s and a ceiling of 2 s on a message's
//! first receive, doubling with its receive count up to
//! [`MAX_GROUP_RELEASE_DELAY`], so a flood cycles through the queue less
//! often while some of the tenant's messages keep coming back for its own
//! free slots. Each release raises the message's `ApproximateReceiveCount`; a
//! message whose count has reached the queue's `maxReceiveCount` runs
//! regardless of the limit (its next receive would move it to the
//! dead-letter queue unrun).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::message::Message;

/// The longest delay a limited message is released with.
pub const MAX_GROUP_RELEASE_DELAY: Duration = Duration::from_secs(5);

/// The tenant a message counts against: its group id on a standard (fair)
/// queue; `None` without a group id or on a FIFO queue.
pub fn limited_group(message: &Message) -> Option<&str> {
    message.group_id().filter(|_| !message.is_fifo())
}

/// How long a message released by the limit stays invisible: whole seconds
/// (what SQS takes) drawn evenly from 1 s up to a ceiling of 2 s on its first
/// receive, doubling with each receive after, at most
/// [`MAX_GROUP_RELEASE_DELAY`]. The spread matters: a runner sweeps every
/// visible message of a flooding tenant within moments, and equal delays
/// would bring them all back at once, leaving the tenant's own slots idle
/// in between.
pub fn release_delay(receive_count: u32) -> Duration {
    let doublings = receive_count.clamp(1, 8);
    let ceiling = (1u64 << doublings).min(MAX_GROUP_RELEASE_DELAY.as_secs());
    Duration::from_secs(fastrand::u64(1..=ceiling))
}

/// What [`GroupLimit::admit`] decided for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupAdmit {
    /// Not limited (no group id, or a FIFO queue): nothing counted.
    Unlimited,
    /// Counted against its tenant: call [`GroupLimit::finished`] when it
    /// settles.
    Admitted,
    /// Its tenant is at the limit: release it after this delay, unstarted.
    Release(Duration),
}

/// The running messages per tenant, shared by a runner's receive loops.
#[derive(Debug)]
pub struct GroupLimit {
    limit: usize,
    max_receive_count: Option<u32>,
    running: Mutex<HashMap<String, usize>>,
}

impl GroupLimit {
    /// At most `limit` (at least 1) messages per tenant at once. With the
    /// queue's `maxReceiveCount`, a message received that many times is
    /// admitted over the limit rather than released into the dead-letter
    /// queue.
    pub fn new(limit: usize, max_receive_count: Option<u32>) -> Self {
        Self {
            limit: limit.max(1),
            max_receive_count,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // Single inserts and updates: a poisoned map is still consistent.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `message` against its tenant, or says to release it.
    pub fn admit(&self, message: &Message) -> GroupAdmit {
        let Some(group) = limited_group(message) else {
            return GroupAdmit::Unlimited;
        };
        let last_chance = self
            .max_receive_count
            .is_some_and(|max| message.receive_count() >= max);
        let mut running = self.lock();
        match running.get_mut(group) {
            Some(n) if *n >= self.limit && !last_chance => {
                GroupAdmit::Release(release_delay(message.receive_count()))
            }
            Some(n) => {
                *n += 1;
                GroupAdmit::Admitted
            }
            None => {
                running.insert(group.to_owned(), 1);
                GroupAdmit::Admitted
            }
        }
    }

    /// An admitted message settled: its tenant has one fewer running.
    pub fn finished(&self, message: &Message) {
        let Some(group) = limited_group(message) else {
            return;
        };
        let mut running = self.lock();
        if let Some(n) = running.get_mut(group) {
            *n -= 1;
            if *n == 0 {
                running.remove(group);
            }
        }
    }

    /// Messages of `group` running now.
    pub fn running(&self, group: &str) -> usize {
        self.lock().get(group).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str, group: &str, receives: u32) -> Message {
        Message::builder(id, "")
            .group_id(group)
            .receive_count(receives)
            .build()
    }

    #[test]
    fn a_tenant_at_its_limit_is_released_and_others_and_fifo_are_not() {
        let limit = GroupLimit::new(2, None);
        assert_eq!(limit.admit(&tenant("a1", "a", 1)), GroupAdmit::Admitted);
        assert_eq!(limit.admit(&tenant("a2", "a", 1)), GroupAdmit::Admitted);
        assert!(matches!(
            limit.admit(&tenant("a3", "a", 1)),
            GroupAdmit::Release(_)
        ));
        assert_eq!(limit.admit(&tenant("b1", "b", 1)), GroupAdmit::Admitted);
        let plain = Message::builder("p", "").build();
        assert_eq!(limit.admit(&plain), GroupAdmit::Unlimited);
        let fifo = Message::builder("f", "")
            .group_id("a")
            .sequence_number("1")
            .build();
        assert_eq!(limit.admit(&fifo), GroupAdmit::Unlimited);
        limit.finished(&tenant("a1", "a", 1));
        assert_eq!(limit.running("a"), 1);
        assert_eq!(limit.admit(&tenant("a3", "a", 2)), GroupAdmit::Admitted);
        limit.finished(&tenant("a2", "a", 1));
        limit.finished(&tenant("a3", "a", 1));
        assert_eq!(limit.running("a"), 0);
    }

    #[test]
    fn the_release_delay_grows_with_receives_and_a_last_receive_runs() {
        let s = Duration::from_secs;
        for _ in 0..100 {
            assert!((s(1)..=s(2)).contains(&release_delay(0)));
            assert!((s(1)..=s(2)).contains(&release_delay(1)));
            assert!((s(1)..=s(4)).contains(&release_delay(2)));
            let d = release_delay(u32::MAX);
            assert!((s(1)..=MAX_GROUP_RELEASE_DELAY).contains(&d));
            assert_eq!(d.subsec_nanos(), 0, "whole seconds");
        }
        let limit = GroupLimit::new(1, Some(5));
        assert_eq!(limit.admit(&tenant("a1", "a", 1)), GroupAdmit::Admitted);
        assert!(matches!(
            limit.admit(&tenant("a2", "a", 4)),
            GroupAdmit::Release(_)
        ));
        assert_eq!(
            limit.admit(&tenant("a2", "a", 5)),
            GroupAdmit::Admitted,
            "released now, the next receive would dead-letter it unrun"
        );
    }
}
