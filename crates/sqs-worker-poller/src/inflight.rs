//! The one owner of in-flight inflight: a table of received, unsettled
//! messages, the heartbeat that extends those nearing their visibility
//! deadline, and the [`VisibilityControl`] behind `Message::extend_visibility`.
//!
//! Ordering rules that keep the heartbeat from racing a delete:
//! - a message leaves the table when it settles, *before* its delete or
//!   visibility change is queued, so no later heartbeat picks it up;
//! - the heartbeat sends its `ChangeMessageVisibilityBatch` while holding the
//!   write side of `gate`; every settlement call holds the read side, so a
//!   delete never overtakes an extension of the same message in flight.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
use sqs_worker_core::runner::observe::names;
use sqs_worker_core::runner::{BoxFuture, MessageKey, MessageKeyHasher, VisibilityControl};
use sqs_worker_core::{MAX_VISIBILITY_TIMEOUT, Message, VisibilityError};
use tokio::sync::{OwnedSemaphorePermit, RwLock, watch};

use crate::stats::Stats;
use sqs_worker_sqs::{classify, describe};

/// One received, unsettled message.
pub(crate) struct Entry {
    pub(crate) message: Message,
    pub(crate) received: Instant,
    deadline: Instant,
    capped: bool,
    /// Its lease: goes with it to settlement (freed once that call is sent).
    pub(crate) lease: Option<OwnedSemaphorePermit>,
    /// Its handler slot, from its start until its handler finished (`None`
    /// while it waits in the receive-ahead buffer).
    pub(crate) slot: Option<OwnedSemaphorePermit>,
}

/// In-flight messages by [`Message::key`] (an address: no receipt handle
/// copied or hashed per message).
pub(crate) type Table = HashMap<MessageKey, Entry, BuildHasherDefault<MessageKeyHasher>>;

/// The lease table and what the heartbeat needs.
pub(crate) struct InFlight {
    pub(crate) table: Mutex<Table>,
    /// Heartbeat: write; settlement calls: read.
    pub(crate) gate: RwLock<()>,
    pub(crate) client: aws_sdk_sqs::Client,
    pub(crate) queue_url: String,
    pub(crate) stats: Arc<Stats>,
    /// The visibility timeout: what a young message's extension asks for
    /// (older ones ask for more, see [`grown_extension`]).
    pub(crate) extension: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) max_processing: Duration,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding this lock leaves the map consistent (single
        // inserts and removes), so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The visibility control behind every lease (one allocation, shared).
    pub(crate) fn control(self: &Arc<Self>) -> Arc<dyn VisibilityControl> {
        Arc::new(Control(Arc::downgrade(self)))
    }

    /// Registers a received message with its lease and, when it starts at
    /// once, its handler slot.
    pub(crate) fn insert(
        &self,
        message: Message,
        received: Instant,
        lease: Option<OwnedSemaphorePermit>,
        slot: Option<OwnedSemaphorePermit>,
    ) {
        let deadline = message.deadline().unwrap_or(received);
        let entry = Entry {
            message,
            received,
            deadline,
            capped: false,
            lease,
            slot,
        };
        let key = MessageKey::of(&entry.message);
        if self.lock().insert(key, entry).is_none() {
            self.stats.in_flight.fetch_add(1, Relaxed);
        }
    }

    /// Gives each waiting message of `batch` one of `slots` as it starts;
    /// the messages no longer in the table (released at shutdown) leave
    /// theirs to be freed here.
    pub(crate) fn start(&self, batch: &[Message], mut slots: OwnedSemaphorePermit) {
        let mut table = self.lock();
        for m in batch {
            if let Some(e) = table.get_mut(&MessageKey::of(m)) {
                e.slot = slots.split(1);
            }
        }
    }

    /// Takes a message out of the table (it settled). `None` if it was
    /// already taken (released at shutdown).
    pub(crate) fn remove(&self, message: &Message) -> Option<Entry> {
        let e = self.lock().remove(&MessageKey::of(message));
        if e.is_some() {
            self.stats.in_flight.fetch_sub(1, Relaxed);
        }
        e
    }

    /// Puts `next` (a new delivery of `message` for an in-process retry,
    /// not started) in `message`'s place, keeping its receipt, lease and
    /// slot. `false` when `message` is no longer in the table (released at
    /// shutdown).
    pub(crate) fn replace(&self, message: &Message, next: Message) -> bool {
        let mut table = self.lock();
        let Some(mut e) = table.remove(&MessageKey::of(message)) else {
            return false;
        };
        next.visibility().set_deadline(e.deadline);
        e.message = next;
        e.capped = false;
        table.insert(MessageKey::of(&e.message), e);
        true
    }

    /// Takes every message out of the table (shutdown).
    pub(crate) fn drain(&self) -> Vec<Entry> {
        let all: Vec<Entry> = self.lock().drain().map(|(_, e)| e).collect();
        self.stats.in_flight.fetch_sub(all.len() as u64, Relaxed);
        all
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// How close to its deadline a message is extended: 1.75 ticks, so a
    /// message extended by the visibility timeout VT is next due about VT − 2
    /// ticks later whatever the timers' jitter (about every other tick with
    /// the default heartbeat of VT/3), with at least 3/4 of a tick to spare.
    fn due_within(&self) -> Duration {
        self.heartbeat * 7 / 4
    }

    /// Extends every message whose visibility runs out within
    /// [`due_within`](Self::due_within), up to its maximum processing time.
    async fn beat(&self) {
        // Most beats find nothing due: skip the gate (and stalling deletes) then.
        let soon = Instant::now() + self.due_within();
        if !self
            .lock()
            .values()
            .any(|e| e.deadline <= soon && !e.capped)
        {
            return;
        }
        let _gate = self.gate.write().await;
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut table = self.lock();
            for e in table.values_mut() {
                if e.deadline.saturating_duration_since(now) > self.due_within() {
                    continue;
                }
                let started = e.message.visibility().started_at();
                let limit = lease_limit(e.received, started, self.max_processing + self.heartbeat);
                let held = now.saturating_duration_since(e.received);
                let ask = grown_extension(self.extension, held);
                let secs = extension_seconds(ask, e.received, limit, now);
                if e.deadline >= limit || secs.is_none() {
                    if !e.capped {
                        e.capped = true;
                        if started.is_some() {
                            tracing::warn!(
                                messaging.message.id = e.message.id(),
                                max_processing_ms = self.max_processing.as_millis() as u64,
                                "message reached its maximum processing time; no more visibility extensions"
                            );
                        } else {
                            tracing::warn!(
                                messaging.message.id = e.message.id(),
                                "message not started within SQS's 12 hours from receipt; no more visibility extensions"
                            );
                        }
                    }
                    continue;
                }
                if let Some(secs) = secs {
                    due.push((e.message.clone(), secs));
                }
            }
        }
        for chunk in due.chunks(10) {
            self.extend_batch(chunk, now).await;
        }
    }

    async fn extend_batch(&self, chunk: &[(Message, i32)], asked: Instant) {
        let mut entries = Vec::with_capacity(chunk.len());
        for (i, (message, secs)) in chunk.iter().enumerate() {
            match ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(message.receipt_handle())
                .visibility_timeout(*secs)
                .build()
            {
                Ok(e) => entries.push(e),
                Err(e) => tracing::error!(error = %e, "cannot build a visibility change entry"),
            }
        }
        let out = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                Stats::add(&self.stats.sdk_errors, 1);
                let transient = classify(&e).is_transient();
                tracing::warn!(
                    error = %describe(&e),
                    messages = chunk.len(),
                    transient,
                    "heartbeat: visibility extension failed; trying again next beat"
                );
                return;
            }
        };
        let mut table = self.lock();
        for ok in out.successful() {
            let Some((message, secs)) = ok.id().parse::<usize>().ok().and_then(|i| chunk.get(i))
            else {
                continue;
            };
            if let Some(e) = table.get_mut(&MessageKey::of(message)) {
                e.deadline = asked + Duration::from_secs(*secs as u64);
                e.message.visibility().set_deadline(e.deadline);
            }
            Stats::add(&self.stats.extensions, 1);
            metrics::counter!(names::EXTENSIONS).increment(1);
        }
        for f in out.failed() {
            let id = f
                .id()
                .parse::<usize>()
                .ok()
                .and_then(|i| chunk.get(i))
                .map(|c| c.0.id());
            Stats::add(&self.stats.settlement_failures, 1);
            metrics::counter!(names::SETTLEMENT_FAILURES, "action" => "extend").increment(1);
            tracing::warn!(
                messaging.message.id = id,
                code = f.code(),
                sender_fault = f.sender_fault(),
                "heartbeat: extending a message failed"
            );
        }
    }

    /// Runs the heartbeat until `stop` turns true.
    pub(crate) async fn heartbeat(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                biased;
                _ = crate::stop::stopped(&mut stop) => return,
                _ = tick.tick() => self.beat().await,
            }
        }
    }
}

/// `Message::extend_visibility` for polled messages.
struct Control(Weak<InFlight>);

impl VisibilityControl for Control {
    fn change_visibility<'a>(
        &'a self,
        message: &'a Message,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), VisibilityError>> {
        Box::pin(async move {
            let settled = || VisibilityError::Settled(message.id().to_owned());
            let inflight = self.0.upgrade().ok_or_else(settled)?;
            // Serialized with the heartbeat (which holds the write side while
            // it extends): SQS applies the two in the order the table records them.
            let _gate = inflight.gate.write().await;
            if !inflight.lock().contains_key(&MessageKey::of(message)) {
                return Err(settled());
            }
            let asked = Instant::now();
            let secs = timeout.as_secs_f64().ceil() as i32;
            inflight
                .client
                .change_message_visibility()
                .queue_url(&inflight.queue_url)
                .receipt_handle(message.receipt_handle())
                .visibility_timeout(secs)
                .send()
                .await
                .map_err(|e| {
                    Stats::add(&inflight.stats.sdk_errors, 1);
                    VisibilityError::Failed {
                        message_id: message.id().to_owned(),
                        source: Box::new(describe(&e)),
                    }
                })?;
            if let Some(e) = inflight.lock().get_mut(&MessageKey::of(message)) {
                e.deadline = asked + Duration::from_secs(secs as u64);
                e.message.visibility().set_deadline(e.deadline);
            }
            Stats::add(&inflight.stats.extensions, 1);
            metrics::counter!(names::EXTENSIONS).increment(1);
            Ok(())
        })
    }
}

/// Until when a message received at `received` is kept invisible: its
/// handler's start (`started`) plus `processing` (the maximum processing
/// time and a heartbeat: past the maximum the engine's handler timeout,
/// counted from the same start, stops the handler; the heartbeat lets it
/// settle first). A message not started yet (waiting behind others of its
/// FIFO group, or held for an in-process retry) is kept invisible until
/// SQS's 12 hours from receipt: were it let go while waiting, another
/// consumer would get its group while this one still runs it.
fn lease_limit(received: Instant, started: Option<Instant>, processing: Duration) -> Instant {
    match started {
        Some(s) => s + processing,
        None => received + MAX_VISIBILITY_TIMEOUT,
    }
}

/// What the heartbeat asks for a message held for `held` so far: twice
/// that, at least the visibility timeout `vt` and at most twice it. A message
/// that keeps running is extended less and less often (its third extension
/// on asks for 2 × VT, so the calls per long-running message are about
/// halved), while a worker that dies still lets its messages go within
/// 2 × VT of its last heartbeat (within VT while they are young).
fn grown_extension(vt: Duration, held: Duration) -> Duration {
    held.saturating_mul(2).clamp(vt, vt.saturating_mul(2))
}

/// Whole seconds to extend a message received at `received` by (`extension`,
/// what [`grown_extension`] asks for, rounded up), stopping at `limit` (its maximum
/// processing time) and at SQS's 12 hours from receipt, less a second;
/// `None` when no room is left.
fn extension_seconds(
    extension: Duration,
    received: Instant,
    limit: Instant,
    now: Instant,
) -> Option<i32> {
    let left = limit.saturating_duration_since(now);
    let room = MAX_VISIBILITY_TIMEOUT
        .saturating_sub(now.saturating_duration_since(received))
        .saturating_sub(Duration::from_secs(1));
    let secs = extension.min(left).min(room);
    if left.is_zero() || room < Duration::from_secs(1) {
        return None;
    }
    // Rounded up, but never past the 12-hour room.
    let whole = (secs.as_secs_f64().ceil() as u64)
        .min(room.as_secs())
        .max(1);
    Some(whole as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_counts_from_the_handler_start_and_waiting_messages_are_kept() {
        let received = Instant::now();
        let p = Duration::from_secs(3);
        // Waiting behind its group: kept until SQS's 12 hours.
        assert_eq!(
            lease_limit(received, None, p),
            received + MAX_VISIBILITY_TIMEOUT
        );
        // Started 5 s after receipt: the limit counts from then.
        let started = received + Duration::from_secs(5);
        assert_eq!(lease_limit(received, Some(started), p), started + p);
        let now = started + Duration::from_secs(1);
        let limit = lease_limit(received, Some(started), p);
        assert_eq!(
            extension_seconds(Duration::from_secs(2), received, limit, now),
            Some(2)
        );
    }

    #[test]
    fn extensions_grow_with_the_time_held_from_the_visibility_timeout_to_twice_it() {
        let vt = Duration::from_secs(30);
        // Young: the visibility timeout.
        assert_eq!(grown_extension(vt, Duration::ZERO), vt);
        assert_eq!(grown_extension(vt, Duration::from_secs(15)), vt);
        // Held 20 s: twice that.
        assert_eq!(
            grown_extension(vt, Duration::from_secs(20)),
            Duration::from_secs(40)
        );
        // Held long: never more than twice the visibility timeout.
        assert_eq!(grown_extension(vt, Duration::from_secs(3600)), vt * 2);
        assert_eq!(grown_extension(vt, Duration::MAX), vt * 2);
    }

    #[test]
    fn extensions_stop_at_the_limit_and_at_twelve_hours_from_receipt() {
        let received = Instant::now();
        let vt = Duration::from_secs(300);
        let far = received + Duration::from_secs(24 * 3600);
        // Fresh: the visibility timeout.
        assert_eq!(extension_seconds(vt, received, far, received), Some(300));
        // Near the limit: what is left, rounded up.
        let limit = received + Duration::from_millis(10_500);
        assert_eq!(extension_seconds(vt, received, limit, received), Some(11));
        assert_eq!(extension_seconds(vt, received, limit, limit), None);
        // Near 12 h from receipt (a max processing time close to 12 h): never
        // past 12 h − 1 s from receipt.
        let now = received + MAX_VISIBILITY_TIMEOUT - Duration::from_secs(100);
        let secs = extension_seconds(vt, received, far, now).unwrap();
        assert!(now + Duration::from_secs(secs as u64) < received + MAX_VISIBILITY_TIMEOUT);
        assert_eq!(secs, 99);
        let now = received + MAX_VISIBILITY_TIMEOUT - Duration::from_millis(1500);
        assert_eq!(extension_seconds(vt, received, far, now), None);
    }
}
