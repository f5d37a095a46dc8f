//! Receive ahead (issue 20 §1): receive only what will start soon.
//!
//! A freed handler slot should start its next message at once, not after a
//! whole `ReceiveMessage` round trip (10–20 ms in-region), and a receive
//! should ask for a full 10 messages whenever the backlog allows, not for
//! the one or two slots that happen to be free. So, on a standard queue, the
//! receive loops keep a few messages received and waiting:
//!
//! - **The bound.** Messages received and not started are at most the
//!   number expected to start within the *horizon* at the current handler
//!   time: `concurrency × horizon ÷ mean handler time`, where the horizon is
//!   twice the mean receive latency and at least 100 ms, and never more than
//!   [`receive_ahead`](crate::PollerBuilder::receive_ahead) (default 40). A
//!   receive goes out when that leaves room for a full receive (10, or the
//!   whole bound when it is smaller), or at once when free slots have
//!   nothing received or on its way for them. With slow
//!   handlers the bound is 0, which is the old rule: receive only for free
//!   slots.
//! - **Leases.** Waiting messages are leased like running ones: in the
//!   lease table from their receipt (the heartbeat extends them), counted
//!   against their tenant's limit, each with a lease permit. The lease
//!   semaphore (`2 × (concurrency + receive_ahead)`) bounds everything
//!   received and not yet settled, so slow settlement still stops receiving.
//! - **Waiting is short.** One waiting longer than a quarter of the
//!   visibility timeout is released unstarted (visibility 0), and nothing
//!   more is received ahead until finished handlers show the pace again (the
//!   average is raised to what that wait implies), so a message is not
//!   received and released over and over; at shutdown every waiting message
//!   is released at once.
//! - **Off** on FIFO queues (a receive's groups run as one batch, in order),
//!   with a rate limit or adaptive concurrency (they decide what may start,
//!   so the loops receive only what starts at once), and with
//!   `receive_ahead(0)`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sqs_worker_core::Message;
use sqs_worker_core::runner::Processor;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::{PollerBuilder, Settings};
use crate::error::PollerError;
use crate::fifo::Groups;
use crate::handoff::Handoff;
use crate::stop::stopped;

/// Default [`receive_ahead`](PollerBuilder::receive_ahead): four full
/// receives (two receive loops, each with a receive on its way while about
/// two receives' worth wait; against moto, 20 reached 79–84 % of the ideal
/// head-of-line throughput and 40 reached 90 %).
pub const DEFAULT_RECEIVE_AHEAD: usize = 40;

/// The shortest horizon: messages expected to start within it may be received.
const MIN_HORIZON: Duration = Duration::from_millis(100);

impl<P: Processor> PollerBuilder<P> {
    /// The most messages received ahead of a free handler slot
    /// (`SQS_WORKER_RECEIVE_AHEAD`; default 40, 0 turns it off): on a
    /// standard queue the receive loops keep up to this many received and
    /// waiting, fewer when handlers are slow (only what is expected to start
    /// within about two receive round trips, at least 100 ms), so a freed
    /// slot starts its next message at once and receives ask for 10. Waiting
    /// messages are leased like running ones (extended by the heartbeat,
    /// released at once at shutdown, released after a quarter of the
    /// visibility timeout if still not started). Not used on FIFO queues or
    /// with a rate limit or adaptive concurrency. 0 to
    /// [`MAX_CONCURRENCY`](sqs_worker_core::config::MAX_CONCURRENCY).
    pub fn receive_ahead(mut self, n: usize) -> Self {
        self.settings.receive_ahead = n;
        self
    }
}

/// Whether a run receives ahead (see the module's "Off").
pub(crate) fn enabled(s: &Settings, queue_url: &str) -> bool {
    s.receive_ahead > 0
        && !queue_url.ends_with(".fifo")
        && s.rate_limit.is_none()
        && s.adaptive.is_none()
}

/// The lease semaphore's size, received and not yet settled: twice the
/// running and waiting messages (room for as many again whose deletes are
/// on their way).
pub(crate) fn lease_bound(s: &Settings, ahead: bool) -> usize {
    2 * (s.concurrency + if ahead { s.receive_ahead } else { 0 })
}

/// A received message waiting for a handler slot.
struct Waiting {
    message: Message,
    received: Instant,
}

/// The messages waiting, and the receives on their way.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    /// Messages asked for by the receives in flight.
    asked: usize,
    /// The starter has stopped: nothing waits any more.
    closed: bool,
}

/// The receive-ahead state of a run, shared by its receive loops, its
/// starter task and the handoff.
pub(crate) struct Ahead {
    queue: Mutex<Queue>,
    /// Woken when a slot frees, a waiting message starts, or a receive answers.
    room: Notify,
    /// Woken when messages start waiting.
    filled: Notify,
    slots: Arc<Semaphore>,
    /// Mean handler time and mean receive latency (ns, moving averages; 0: none yet).
    handler_ns: AtomicU64,
    receive_ns: AtomicU64,
    concurrency: usize,
    max: usize,
    max_messages: usize,
    /// The longest a message waits before it is released unstarted.
    max_wait: Duration,
}

/// A moving average over about the last 8 samples.
fn average(into: &AtomicU64, sample: Duration) {
    let x = sample.as_nanos().min(u64::MAX as u128) as u64;
    let old = into.load(Relaxed);
    let new = if old == 0 {
        x.max(1)
    } else {
        (old - old / 8 + x / 8).max(1)
    };
    into.store(new, Relaxed);
}

impl Ahead {
    pub(crate) fn new(s: &Settings, slots: Arc<Semaphore>, visibility: Duration) -> Self {
        Self {
            queue: Mutex::default(),
            room: Notify::new(),
            filled: Notify::new(),
            slots,
            handler_ns: AtomicU64::new(0),
            receive_ns: AtomicU64::new(0),
            concurrency: s.concurrency,
            max: s.receive_ahead,
            max_messages: s.max_messages,
            max_wait: visibility / 4,
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many may be received and not started now.
    fn allowance(&self) -> usize {
        let handler = self.handler_ns.load(Relaxed);
        if handler == 0 {
            return 0;
        }
        let horizon = Duration::from_nanos(self.receive_ns.load(Relaxed).saturating_mul(2))
            .max(MIN_HORIZON)
            .min(self.max_wait);
        let n = self.concurrency as u128 * horizon.as_nanos() / handler as u128;
        (n as usize).min(self.max)
    }

    /// Waits until a receive should go out; the messages it may ask for,
    /// counted as on their way. `None` when stopped meanwhile.
    pub(crate) async fn room(&self, stop: &mut watch::Receiver<bool>) -> Option<usize> {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut q = self.queue();
                let free = self.slots.available_permits();
                let coming = q.waiting.len() + q.asked;
                let allowance = self.allowance();
                let room = (free + allowance).saturating_sub(coming);
                // A full receive: 10, or the whole allowance when that is less.
                let full = self.max_messages.min(allowance.max(1));
                let ask = if room >= full {
                    room.min(self.max_messages)
                } else if free > coming {
                    // Free slots with nothing received or on its way for them.
                    room.min(self.max_messages)
                } else {
                    0
                };
                if ask > 0 {
                    q.asked += ask;
                    return Some(ask);
                }
            }
            tokio::select! {
                biased;
                () = stopped(stop) => return None,
                () = notified => {}
            }
        }
    }

    /// A receive for `asked` answered (or failed) after `took`, with `got` messages.
    pub(crate) fn answered(&self, asked: usize, got: usize, took: Duration) {
        {
            let mut q = self.queue();
            q.asked = q.asked.saturating_sub(asked);
        }
        // Only answers with messages measure the round trip (an empty long
        // poll measures the wait).
        if got > 0 {
            average(&self.receive_ns, took);
        }
        self.room.notify_waiters();
    }

    /// Slots for `n` messages that start at once: only when none wait (they
    /// start first).
    pub(crate) fn direct_slots(&self, n: usize) -> Option<OwnedSemaphorePermit> {
        if n == 0 || !self.queue().waiting.is_empty() {
            return None;
        }
        let free = self.slots.available_permits().min(n);
        if free == 0 {
            return None;
        }
        self.slots.clone().try_acquire_many_owned(free as u32).ok()
    }

    /// Messages received now that start when slots free up; all of them
    /// back when the run is stopping (the caller releases them).
    #[must_use]
    pub(crate) fn wait(&self, messages: Vec<Message>, received: Instant) -> Vec<Message> {
        if messages.is_empty() {
            return messages;
        }
        {
            let mut q = self.queue();
            if q.closed {
                return messages;
            }
            q.waiting.extend(
                messages
                    .into_iter()
                    .map(|message| Waiting { message, received }),
            );
        }
        self.filled.notify_one();
        Vec::new()
    }

    /// Stops waiting for good (shutdown): every waiting message, taken out.
    fn close(&self) -> Vec<Message> {
        let mut q = self.queue();
        q.closed = true;
        q.waiting.drain(..).map(|w| w.message).collect()
    }

    /// A handler finished (its slot is free): `started` is when it started.
    pub(crate) fn finished(&self, started: Option<Instant>) {
        if let Some(t) = started {
            average(&self.handler_ns, t.elapsed());
        }
        self.room.notify_waiters();
    }

    /// A message waited its longest: handlers are far slower than the
    /// average said (it only learns from finished handlers). Nothing more is
    /// received ahead until finished handlers bring the average down again,
    /// so released messages are not received and released over and over.
    fn misjudged(&self) {
        let floor = (self.max_wait.as_nanos() as u64).saturating_mul(self.concurrency as u64);
        self.handler_ns.fetch_max(floor, Relaxed);
    }

    /// The messages waiting longer than allowed, taken out.
    fn expired(&self) -> Vec<Message> {
        let mut q = self.queue();
        let mut out = Vec::new();
        while let Some(w) = q.waiting.front() {
            if w.received.elapsed() < self.max_wait {
                break;
            }
            if let Some(w) = q.waiting.pop_front() {
                out.push(w.message);
            }
        }
        out
    }

    /// Up to `n` waiting messages, oldest first, and the oldest's receipt time.
    fn take(&self, n: usize) -> (Vec<Message>, Option<Instant>) {
        let mut q = self.queue();
        let k = n.min(q.waiting.len());
        let received = q.waiting.front().map(|w| w.received);
        let batch = q.waiting.drain(..k).map(|w| w.message).collect();
        (batch, received)
    }

    fn len(&self) -> usize {
        self.queue().waiting.len()
    }

    /// When the oldest waiting message must be released, if any waits.
    fn next_expiry(&self) -> Option<Instant> {
        self.queue()
            .waiting
            .front()
            .map(|w| w.received + self.max_wait)
    }
}

/// What the starter task needs.
pub(crate) struct Starter<P> {
    pub(crate) ahead: Arc<Ahead>,
    pub(crate) processor: P,
    pub(crate) groups: Arc<Groups>,
    pub(crate) handoff: Arc<Handoff>,
    pub(crate) queue_name: String,
    pub(crate) queue_url: Arc<str>,
}

impl<P: Processor> Starter<P> {
    /// Starts waiting messages as slots free up, until `stop`; then releases
    /// every message still waiting. Returns its batch tasks still running.
    pub(crate) async fn run(
        self,
        mut stop: watch::Receiver<bool>,
    ) -> (JoinSet<()>, Option<PollerError>) {
        let mut batches = JoinSet::new();
        let a = &self.ahead;
        loop {
            while batches.try_join_next().is_some() {}
            let filled = a.filled.notified();
            tokio::pin!(filled);
            filled.as_mut().enable();
            let Some(expiry) = a.next_expiry() else {
                tokio::select! {
                    biased;
                    () = stopped(&mut stop) => break,
                    () = filled => continue,
                }
            };
            let first = tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                p = a.slots.clone().acquire_owned() => p,
                () = tokio::time::sleep_until(expiry.into()) => {
                    let expired = a.expired();
                    if !expired.is_empty() {
                        a.misjudged();
                    }
                    self.release(expired, "waited a quarter of the visibility timeout unstarted");
                    continue;
                }
            };
            let Ok(mut slots) = first else { break };
            // As many as wait and have a free slot, in one batch.
            let more = a.len().saturating_sub(1).min(a.slots.available_permits());
            if more > 0
                && let Ok(p) = a.slots.clone().try_acquire_many_owned(more as u32)
            {
                slots.merge(p);
            }
            let (start, received) = a.take(slots.num_permits());
            let Some(received) = received else { continue };
            self.handoff.inflight.start(&start, slots);
            a.room.notify_waiters();
            let span = sqs_worker_core::runner::observe::batch_span(
                &self.queue_name,
                &self.queue_url,
                &start,
            );
            let run = crate::fifo::run_batch(
                self.processor.clone(),
                start,
                received,
                self.groups.clone(),
                stop.clone(),
            );
            batches.spawn(run.instrument(span));
        }
        self.release(a.close(), "stopping");
        (batches, None)
    }

    /// Releases waiting messages unstarted, at once.
    fn release(&self, messages: Vec<Message>, why: &'static str) {
        if messages.is_empty() {
            return;
        }
        tracing::debug!(
            messages = messages.len(),
            why,
            "releasing messages received ahead (visibility 0)"
        );
        for m in messages {
            self.handoff.release_unstarted(m);
        }
        self.ahead.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqs_worker_core::{Error, Message};

    use super::*;
    use crate::Poller;

    async fn ok(_m: Message) -> Result<(), Error> {
        Ok(())
    }

    fn ahead(concurrency: usize) -> (Ahead, Arc<Semaphore>) {
        let p = Poller::builder("q", ok)
            .concurrency(concurrency)
            .build()
            .unwrap();
        let slots = Arc::new(Semaphore::new(concurrency));
        let a = Ahead::new(p.settings(), slots.clone(), Duration::from_secs(30));
        (a, slots)
    }

    async fn asks(a: &Ahead) -> Option<usize> {
        let (_tx, mut stop) = watch::channel(false);
        tokio::time::timeout(Duration::from_millis(20), a.room(&mut stop))
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn before_any_handler_finished_it_receives_only_for_free_slots() {
        let (a, slots) = ahead(4);
        assert_eq!(a.allowance(), 0);
        assert_eq!(asks(&a).await, Some(4));
        // Those 4 are on their way: nothing more until they come.
        assert_eq!(asks(&a).await, None);
        a.answered(4, 4, Duration::from_millis(15));
        let _running = slots.clone().try_acquire_many_owned(4).unwrap();
        assert_eq!(asks(&a).await, None, "every slot busy, nothing known: wait");
    }

    #[tokio::test]
    async fn fast_handlers_get_full_receives_ahead_within_the_bound() {
        let (a, slots) = ahead(10);
        let _running = slots.clone().try_acquire_many_owned(10).unwrap();
        // 15 ms handlers, 15 ms receives: 10 slots start 67 messages in the
        // 100 ms horizon; the setting caps it.
        a.handler_ns.store(15_000_000, Relaxed);
        a.receive_ns.store(15_000_000, Relaxed);
        assert_eq!(a.allowance(), DEFAULT_RECEIVE_AHEAD);
        for _ in 0..DEFAULT_RECEIVE_AHEAD / 10 {
            assert_eq!(
                asks(&a).await,
                Some(10),
                "full receives while slots are busy"
            );
        }
        assert_eq!(asks(&a).await, None, "the bound is reached");
        a.answered(10, 10, Duration::from_millis(15));
        assert_eq!(asks(&a).await, Some(10));
    }

    #[tokio::test]
    async fn slow_handlers_receive_nothing_ahead() {
        let (a, slots) = ahead(10);
        // 2 s handlers: 10 slots start 0.5 messages in 100 ms.
        a.handler_ns.store(2_000_000_000, Relaxed);
        assert_eq!(a.allowance(), 0);
        let running = slots.clone().try_acquire_many_owned(9).unwrap();
        assert_eq!(asks(&a).await, Some(1), "one free slot: one message");
        assert_eq!(asks(&a).await, None);
        drop(running);
    }

    #[tokio::test]
    async fn waiting_messages_expire_after_a_quarter_of_the_visibility_timeout() {
        let (a, _slots) = ahead(2);
        let old = Instant::now() - Duration::from_secs(8);
        assert!(
            a.wait(vec![Message::builder("a", "x").build()], old)
                .is_empty()
        );
        assert!(
            a.wait(vec![Message::builder("b", "y").build()], Instant::now())
                .is_empty()
        );
        let gone: Vec<String> = a.expired().iter().map(|m| m.id().to_owned()).collect();
        assert_eq!(gone, ["a"], "30 s visibility: 7.5 s at most");
        assert_eq!(a.len(), 1);
        assert_eq!(a.close().len(), 1, "at shutdown, all");
        let late = vec![Message::builder("c", "z").build()];
        assert_eq!(
            a.wait(late, Instant::now()).len(),
            1,
            "received after the close: handed back to be released"
        );
        assert_eq!(a.len(), 0);
        a.handler_ns.store(10_000_000, Relaxed);
        assert!(a.allowance() > 0);
        a.misjudged();
        assert_eq!(
            a.allowance(),
            0,
            "nothing ahead after a message waited its longest"
        );
    }

    #[test]
    fn off_on_fifo_queues_and_with_limits_that_decide_starts() {
        let s = |b: crate::PollerBuilder<_>| b.build().unwrap().settings().clone();
        let std = s(Poller::builder("q", ok));
        assert!(enabled(&std, "https://x/q"));
        assert!(!enabled(&std, "https://x/q.fifo"));
        let rated =
            s(Poller::builder("q", ok)
                .rate_limit(sqs_worker_core::flow::RateLimit::per_second(5.0)));
        assert!(!enabled(&rated, "https://x/q"));
        let off = s(Poller::builder("q", ok).receive_ahead(0));
        assert!(!enabled(&off, "https://x/q"));
        assert_eq!(lease_bound(&std, true), 2 * (32 + DEFAULT_RECEIVE_AHEAD));
    }
}
