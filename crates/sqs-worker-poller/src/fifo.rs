//! A batch task, and FIFO groups held through in-process retries (issue 15).
//!
//! When the head of a FIFO group fails, the engine reports the rest of the
//! group in that receive [`GroupBlocked`](FailureKind::GroupBlocked). Released,
//! they would come back with the head on every retry, each delivery counting
//! towards their own `maxReceiveCount`: a poison head would take healthy
//! followers to the dead-letter queue unrun. So the poller holds the group
//! instead: its messages stay in the lease table (the heartbeat keeps them
//! invisible), the head's retry delay passes in the process, and the head
//! runs again, as a new delivery (`receive_count()` one higher), followed by
//! the rest of its group in order. Once the head has had `maxReceiveCount`
//! attempts (or failed permanently) it goes to the dead-letter queue (the
//! configured one, else the redrive policy's) and the rest of the group runs.
//!
//! The group is let go (settled as the engine reported it: the head after
//! its retry delay, the rest at once) at shutdown, when the head cannot be
//! dead-lettered, and when the wait would pass [`HOLD_LIMIT`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use sqs_worker_core::flow::CircuitBreaker;
use sqs_worker_core::runner::observe::names;
use sqs_worker_core::runner::{
    BoxFuture, FailureKind, MessageParts, Processor, Settled, VisibilityControl,
};
use sqs_worker_core::{MAX_VISIBILITY_TIMEOUT, Message, Visibility};
use sqs_worker_sqs::classify::settle_backoff;
use sqs_worker_sqs::dead_letter::{self, SourceQueue};
use tokio::sync::{mpsc, watch};

use crate::handoff::Handoff;
use crate::settle::{DeadLetter, Job};
use crate::stats::Stats;

/// How long after its receipt a batch (with its held groups) may run: SQS
/// keeps a message invisible at most 12 hours from its receipt, so before
/// then every message still waiting comes back `Unstarted` and a handler
/// still running is stopped (the engine's batch deadline), leaving time to
/// settle them.
pub(crate) const HOLD_LIMIT: Duration =
    MAX_VISIBILITY_TIMEOUT.saturating_sub(Duration::from_secs(60));

/// What the batch tasks of a receive loop share.
pub(crate) struct Groups {
    pub(crate) handoff: Arc<Handoff>,
    pub(crate) breaker: Option<Arc<CircuitBreaker>>,
    /// Adaptive concurrency, when configured: every result counts.
    pub(crate) adaptive: Option<Arc<crate::limits::Adaptive>>,
    /// Where an exhausted head goes: the configured dead-letter queue, else
    /// the redrive policy's (FIFO queues only).
    pub(crate) dead_letter: Option<Arc<DeadLetter>>,
    /// The redrive policy's `maxReceiveCount`: a head's attempts.
    pub(crate) max_receive_count: Option<u32>,
    pub(crate) control: Arc<dyn VisibilityControl>,
    pub(crate) queue_url: Arc<str>,
}

/// Runs one receive's `batch` (received at `received`) through `processor`,
/// holding failed FIFO groups for in-process retries.
pub(crate) async fn run_batch<P: Processor>(
    processor: P,
    batch: Vec<Message>,
    received: Instant,
    groups: Arc<Groups>,
    stop: watch::Receiver<bool>,
) {
    if batch.iter().all(|m| m.fifo_group_id().is_none()) {
        // Nothing waits behind a group: every message starts at once (each
        // has its slot), so no batch deadline (and no timer per batch).
        let settle = crate::flow::settle_fn(
            groups.handoff.clone(),
            groups.breaker.clone(),
            groups.adaptive.clone(),
            received,
        );
        return processor.process(batch, None, settle).await;
    }
    let deadline = received + HOLD_LIMIT;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut runs: FuturesUnordered<BoxFuture<'static, ()>> = FuturesUnordered::new();
    let settle = holding(&groups, &tx, &stop, received);
    let first = processor.clone();
    runs.push(Box::pin(async move {
        first.process(batch, Some(deadline), settle).await;
    }));
    loop {
        tokio::select! {
            biased;
            Some(first) = rx.recv() => {
                // A group's head and the rest of it are reported together,
                // within one poll of its run: all here now.
                let mut held = vec![first];
                while let Ok(s) = rx.try_recv() {
                    held.push(s);
                }
                for group in by_group(held) {
                    let started = Instant::now();
                    let (p, settle) = (processor.clone(), holding(&groups, &tx, &stop, started));
                    let retry = retry(group, deadline, groups.clone(), stop.clone());
                    runs.push(Box::pin(async move {
                        if let Some(batch) = retry.await {
                            p.process(batch, Some(deadline), settle).await;
                        }
                    }));
                }
            }
            next = runs.next() => {
                if next.is_none() && rx.is_empty() {
                    return;
                }
            }
        }
    }
}

/// The settle callback of a FIFO batch: counts each result in the breaker,
/// then holds a failed FIFO message and the rest of its group (sent to
/// `tx`), and hands everything else to settlement.
fn holding(
    groups: &Arc<Groups>,
    tx: &mpsc::UnboundedSender<Settled>,
    stop: &watch::Receiver<bool>,
    received: Instant,
) -> impl FnMut(Settled) + Send + 'static {
    let (groups, tx, stop) = (groups.clone(), tx.clone(), stop.clone());
    let mut held: Vec<String> = Vec::new();
    move |mut s: Settled| {
        if let Some(b) = &groups.breaker {
            b.settle(&mut s);
        }
        if let Some(a) = &groups.adaptive {
            a.record(&s, received);
        }
        if let Some(group) = groups.holds(&s, &held, &stop) {
            if !held.contains(&group) {
                held.push(group);
            }
            match tx.send(s) {
                Ok(()) => return,
                Err(back) => s = back.0,
            }
        }
        groups.handoff.settled(s);
    }
}

impl Groups {
    /// The FIFO group `s` is held in, if it is: a failed run (not at the
    /// batch deadline), a permanent failure when there is a dead-letter
    /// queue to move it to, or the rest of a held group. Nothing is held
    /// once stopping.
    fn holds(&self, s: &Settled, held: &[String], stop: &watch::Receiver<bool>) -> Option<String> {
        let f = s.failure()?;
        let group = s.message.fifo_group_id()?;
        let hold = match f.kind {
            FailureKind::GroupBlocked => held.iter().any(|g| g == group),
            FailureKind::Permanent => self.dead_letter.is_some(),
            FailureKind::DeadlineExceeded | FailureKind::Unstarted => false,
            _ => true,
        };
        (hold && !*stop.borrow()).then(|| group.to_owned())
    }

    fn stats(&self) -> &Stats {
        &self.handoff.inflight.stats
    }

    /// Whether the head `s` has had its attempts, or failed for good.
    fn exhausted(&self, s: &Settled) -> bool {
        s.failure().is_some_and(|f| f.is_permanent())
            || self
                .max_receive_count
                .is_some_and(|max| s.message.receive_count() >= max)
    }

    /// The next delivery of `m` for an in-process retry: the same message
    /// and receipt handle, `receive_count()` one higher, not started.
    fn redeliver(&self, m: &Message) -> Message {
        let mut attributes = m.attributes().clone();
        attributes.approximate_receive_count = Some(m.receive_count().saturating_add(1));
        MessageParts {
            id: m.id().to_owned(),
            receipt_handle: m.receipt_handle().to_owned(),
            body: m.body().to_owned(),
            attributes,
            message_attributes: m.message_attributes().clone(),
            source: Some(self.queue_url.clone().into()),
            visibility: Visibility::extendable(m.deadline(), self.control.clone()),
        }
        .into_message()
    }

    /// Sends the exhausted head `s` to the dead-letter queue, then deletes
    /// it; `false` (nothing done) when there is none or the send failed.
    async fn dead_letter(&self, s: &Settled) -> bool {
        let (Some(dlq), Some(f)) = (&self.dead_letter, s.failure()) else {
            return false;
        };
        let source = SourceQueue {
            url: &self.queue_url,
            arn: &dlq.source_arn,
        };
        let inflight = &self.handoff.inflight;
        let error = f.error.to_string();
        let sent = dead_letter::send(
            &inflight.client,
            &dlq.queue,
            source,
            &s.message,
            f.kind,
            &error,
            settle_backoff(),
        )
        .await;
        Stats::add(&self.stats().sdk_errors, sent.sdk_errors);
        if sent.result.is_err() {
            Stats::add(&self.stats().settlement_failures, 1);
            return false;
        }
        Stats::add(&self.stats().failed, 1);
        Stats::add(&self.stats().dead_lettered, 1);
        if let Some(entry) = inflight.remove(&s.message) {
            self.handoff
                .queue(Job::Delete(s.message.clone()), entry.lease);
        }
        true
    }

    /// Lets a held group go: each message settled as the engine reported it.
    fn release(&self, group: Vec<Settled>) {
        for s in group {
            self.handoff.settled(s);
        }
    }
}

/// Splits held messages into their groups, each in the order reported.
fn by_group(held: Vec<Settled>) -> Vec<Vec<Settled>> {
    let mut groups: Vec<Vec<Settled>> = Vec::new();
    for s in held {
        let g = s.message.fifo_group_id();
        match groups
            .iter_mut()
            .find(|x| x[0].message.fifo_group_id() == g)
        {
            Some(x) => x.push(s),
            None => groups.push(vec![s]),
        }
    }
    groups
}

/// One held group: dead-letters its exhausted heads, waits the retry delay
/// (the group stays leased), and returns the batch to run again: each
/// message that ran as its next delivery, the rest as they are. `None` when
/// the group was let go or nothing is left to run.
async fn retry(
    group: Vec<Settled>,
    deadline: Instant,
    groups: Arc<Groups>,
    mut stop: watch::Receiver<bool>,
) -> Option<Vec<Message>> {
    let mut rest = Vec::with_capacity(group.len());
    let mut delay = Duration::ZERO;
    let mut group = group.into_iter();
    while let Some(s) = group.next() {
        let ran = s.failure().is_some_and(|f| f.kind.handler_ran());
        if ran && groups.exhausted(&s) {
            if groups.dead_letter(&s).await {
                continue;
            }
            // Not moved: the group goes back to SQS (its redrive policy).
            groups.release(rest.into_iter().chain([s]).chain(group).collect());
            return None;
        }
        if ran {
            delay = delay.max(s.failure().map_or(Duration::ZERO, |f| f.retry_delay));
        }
        rest.push(s);
    }
    if rest.is_empty() {
        return None;
    }
    // While waiting, the messages that ran are new deliveries, not started:
    // the heartbeat keeps them invisible.
    let mut retried = 0;
    for s in &mut rest {
        if s.failure().is_some_and(|f| f.kind.handler_ran()) {
            let next = groups.redeliver(&s.message);
            if !groups.handoff.inflight.replace(&s.message, next.clone()) {
                // Released at shutdown meanwhile: nothing of the group runs.
                groups.release(rest);
                return None;
            }
            s.message = next;
            retried += 1;
        }
    }
    if retried == 0 {
        // The head was dead-lettered: the rest of the group runs now.
        return Some(rest.into_iter().map(|s| s.message).collect());
    }
    // Whole seconds, as SQS would apply it: never a loop without delay.
    let delay = Duration::from_secs(delay.as_secs() + u64::from(delay.subsec_nanos() > 0))
        .max(Duration::from_secs(1));
    if Instant::now() + delay >= deadline {
        groups.release(rest);
        return None;
    }
    if let Some(head) = rest.first() {
        tracing::info!(
            messaging.message.id = head.message.id(),
            messaging.message.group.id = head.message.group_id(),
            receive_count = head.message.receive_count(),
            retry_in_ms = delay.as_millis() as u64,
            held = rest.len(),
            "FIFO group head failed: retrying it in the process, its group held"
        );
    }
    tokio::select! {
        biased;
        () = crate::stop::stopped(&mut stop) => {
            groups.release(rest);
            None
        }
        () = tokio::time::sleep(delay) => {
            // Counted as settlement would have (a release counts them there).
            Stats::add(&groups.stats().failed, retried);
            Stats::add(&groups.stats().retried, retried);
            metrics::counter!(names::RETRIED).increment(retried);
            Some(rest.into_iter().map(|s| s.message).collect())
        }
    }
}
