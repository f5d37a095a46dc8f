//! Settlement: what the engine decided, as SQS calls. Deletes and visibility
//! changes are coalesced into batches of up to 10 (or whatever is pending
//! after the flush interval) and sent through `sqs_worker_sqs`, which retries
//! transient failures; every entry that fails for good is logged and counted
//! here. Permanent failures go to the dead-letter queue when one is
//! configured; when that send fails for good, the message gets its retry
//! delay (it is not looped at visibility 0).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqs_worker_core::Message;
use sqs_worker_core::runner::observe::names;
use sqs_worker_core::runner::{FailureKind, Outcome, Settled};
use sqs_worker_sqs::classify::settle_backoff;
use sqs_worker_sqs::dead_letter::{self, DeadLetterQueue, SourceQueue};
use sqs_worker_sqs::{BatchCall, BatchResult, visibility_seconds};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinSet;

use crate::inflight::InFlight;
use crate::stats::Stats;

/// A message's lease (a permit of the run's lease semaphore), held from its
/// receipt until its settlement call has been sent (back-pressure: receiving
/// waits for slow settlement). The handler slot is separate and freed when
/// the handler finishes (`Handoff::settled`).
pub(crate) type Lease = Option<OwnedSemaphorePermit>;

/// Adds `lease` to the leases held for a batch (one permit, merged).
fn hold(held: &mut Lease, lease: Lease) {
    match (held.as_mut(), lease) {
        (Some(h), Some(s)) => h.merge(s),
        (None, s) => *held = s,
        (Some(_), None) => {}
    }
}

/// Runs a settlement call, then frees the leases it held.
async fn holding(call: impl Future<Output = ()>, leases: Lease) {
    call.await;
    drop(leases);
}

/// One settlement to carry out.
pub(crate) enum Job {
    /// The handler succeeded: delete.
    Delete(Message),
    /// Make visible again after `delay`; `retry`: the handler ran and failed
    /// (else the message was released without running).
    Release {
        message: Message,
        delay: Duration,
        received: Instant,
        retry: bool,
    },
    /// Send to the dead-letter queue, then delete; if the send fails for
    /// good, make visible again after `delay`.
    DeadLetter {
        message: Message,
        kind: FailureKind,
        error: String,
        delay: Duration,
        received: Instant,
    },
}

impl Job {
    /// The job for a settled message; counts the outcome.
    pub(crate) fn plan(s: Settled, received: Instant, dlq: bool, stats: &Stats) -> Self {
        match s.outcome {
            Outcome::Succeeded => {
                Stats::add(&stats.succeeded, 1);
                Self::Delete(s.message)
            }
            Outcome::Failed(f) => {
                let ran = f.kind.handler_ran();
                if ran {
                    Stats::add(&stats.failed, 1);
                }
                if f.is_permanent() && dlq {
                    Self::DeadLetter {
                        message: s.message,
                        kind: f.kind,
                        error: f.error.to_string(),
                        delay: f.retry_delay,
                        received,
                    }
                } else {
                    Self::Release {
                        message: s.message,
                        delay: f.retry_delay,
                        received,
                        retry: ran,
                    }
                }
            }
        }
    }
}

/// The dead-letter queue and what the schema says about the source.
pub(crate) struct DeadLetter {
    pub(crate) queue: DeadLetterQueue,
    pub(crate) source_arn: String,
}

/// What the settlement calls need.
pub(crate) struct Acker {
    pub(crate) inflight: Arc<InFlight>,
    pub(crate) dead_letter: Option<Arc<DeadLetter>>,
    pub(crate) flush_interval: Duration,
}

/// What a successful visibility change counts as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tally {
    /// `retried`: the handler failed, the message comes back after its delay.
    Retried,
    /// `released`: given back without (fully) running.
    Released,
    /// Nothing more: already counted (a failed dead-letter send).
    Counted,
}

struct Change {
    message: Message,
    seconds: i32,
    tally: Tally,
}

impl Acker {
    fn stats(&self) -> &Stats {
        &self.inflight.stats
    }

    /// Settles every job until the channel closes, then flushes and waits for
    /// every call in flight.
    pub(crate) async fn run(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<(Job, Lease)>) {
        let mut deletes: Vec<Message> = Vec::with_capacity(10);
        let mut changes: Vec<Change> = Vec::with_capacity(10);
        // The leases of the buffered deletes and changes.
        let (mut delete_leases, mut change_leases): (Lease, Lease) = (None, None);
        let mut tasks = JoinSet::new();
        let mut flush_at: Option<Instant> = None;
        // One timer, reset when a new flush is due (a timer made per job would
        // be registered and cancelled in the runtime's wheel every time).
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed_for: Option<Instant> = None;
        loop {
            let job = match flush_at {
                None => rx.recv().await,
                Some(at) => {
                    if armed_for != Some(at) {
                        timer.as_mut().reset(at.into());
                        armed_for = Some(at);
                    }
                    tokio::select! {
                        biased;
                        job = rx.recv() => job,
                        () = timer.as_mut() => {
                            self.flush(&mut tasks, (&mut deletes, &mut delete_leases), (&mut changes, &mut change_leases));
                            flush_at = None;
                            continue;
                        }
                    }
                }
            };
            let Some((job, lease)) = job else { break };
            match job {
                Job::Delete(m) => {
                    deletes.push(m);
                    hold(&mut delete_leases, lease);
                    if deletes.len() == 10 {
                        let batch = std::mem::take(&mut deletes);
                        tasks.spawn(holding(self.clone().delete(batch), delete_leases.take()));
                    }
                }
                Job::Release {
                    message,
                    delay,
                    received,
                    retry,
                } => {
                    changes.push(Change {
                        seconds: visibility_seconds(delay, received.elapsed()),
                        message,
                        tally: if retry {
                            Tally::Retried
                        } else {
                            Tally::Released
                        },
                    });
                    hold(&mut change_leases, lease);
                    if changes.len() == 10 {
                        let batch = std::mem::take(&mut changes);
                        tasks.spawn(holding(self.clone().change(batch), change_leases.take()));
                    }
                }
                Job::DeadLetter {
                    message,
                    kind,
                    error,
                    delay,
                    received,
                } => {
                    let call = self
                        .clone()
                        .dead_letter(message, kind, error, delay, received);
                    tasks.spawn(holding(call, lease));
                }
            }
            let now = Instant::now();
            if deletes.is_empty() && changes.is_empty() {
                flush_at = None;
            } else if let Some(at) = flush_at {
                if now >= at {
                    self.flush(
                        &mut tasks,
                        (&mut deletes, &mut delete_leases),
                        (&mut changes, &mut change_leases),
                    );
                    flush_at = None;
                }
            } else {
                flush_at = Some(now + self.flush_interval);
            }
            while tasks.try_join_next().is_some() {}
        }
        self.flush(
            &mut tasks,
            (&mut deletes, &mut delete_leases),
            (&mut changes, &mut change_leases),
        );
        while tasks.join_next().await.is_some() {}
    }

    fn flush(
        self: &Arc<Self>,
        tasks: &mut JoinSet<()>,
        (deletes, delete_leases): (&mut Vec<Message>, &mut Lease),
        (changes, change_leases): (&mut Vec<Change>, &mut Lease),
    ) {
        if !deletes.is_empty() {
            let call = self.clone().delete(std::mem::take(deletes));
            tasks.spawn(holding(call, delete_leases.take()));
        }
        if !changes.is_empty() {
            let call = self.clone().change(std::mem::take(changes));
            tasks.spawn(holding(call, change_leases.take()));
        }
    }

    fn call(&self) -> BatchCall<'_> {
        BatchCall {
            client: &self.inflight.client,
            queue_url: &self.inflight.queue_url,
            retry: settle_backoff(),
            gate: Some(&self.inflight.gate),
        }
    }

    /// Counts and logs the entries that failed for good; returns which succeeded.
    fn tally(&self, action: &'static str, messages: &[&Message], result: BatchResult) -> Vec<bool> {
        Stats::add(&self.stats().sdk_errors, result.sdk_errors);
        let mut ok = Vec::with_capacity(messages.len());
        for (m, entry) in messages.iter().zip(result.entries) {
            match entry {
                Ok(()) => ok.push(true),
                Err(f) => {
                    ok.push(false);
                    Stats::add(&self.stats().settlement_failures, 1);
                    metrics::counter!(names::SETTLEMENT_FAILURES, "action" => action).increment(1);
                    tracing::warn!(
                        messaging.message.id = m.id(),
                        action,
                        code = f.code,
                        detail = %f.detail,
                        "settling a message failed; it will come back when its visibility timeout ends"
                    );
                }
            }
        }
        ok
    }

    /// `DeleteMessageBatch`.
    async fn delete(self: Arc<Self>, batch: Vec<Message>) {
        let handles: Vec<&str> = batch.iter().map(Message::receipt_handle).collect();
        let result = self.call().delete(&handles).await;
        let messages: Vec<&Message> = batch.iter().collect();
        let ok = self.tally("delete", &messages, result);
        let deleted = ok.iter().filter(|ok| **ok).count();
        Stats::add(&self.stats().deleted, deleted as u64);
    }

    /// `ChangeMessageVisibilityBatch` for failed and released messages.
    async fn change(self: Arc<Self>, batch: Vec<Change>) {
        let entries: Vec<(&str, i32)> = batch
            .iter()
            .map(|c| (c.message.receipt_handle(), c.seconds))
            .collect();
        let result = self.call().change_visibility(&entries).await;
        let messages: Vec<&Message> = batch.iter().map(|c| &c.message).collect();
        let ok = self.tally("change_visibility", &messages, result);
        for (c, ok) in batch.iter().zip(ok) {
            match c.tally {
                _ if !ok => {}
                Tally::Retried => {
                    Stats::add(&self.stats().retried, 1);
                    metrics::counter!(names::RETRIED).increment(1);
                }
                Tally::Released => Stats::add(&self.stats().released, 1),
                Tally::Counted => {}
            }
        }
    }

    /// `SendMessage` to the dead-letter queue, then delete; if the send fails
    /// for good, the message gets its retry delay (counted as a failed
    /// settlement, not a retry).
    async fn dead_letter(
        self: Arc<Self>,
        message: Message,
        kind: FailureKind,
        error: String,
        delay: Duration,
        received: Instant,
    ) {
        let Some(dlq) = self.dead_letter.clone() else {
            return;
        };
        let source = SourceQueue {
            url: &self.inflight.queue_url,
            arn: &dlq.source_arn,
        };
        let sent = dead_letter::send(
            &self.inflight.client,
            &dlq.queue,
            source,
            &message,
            kind,
            &error,
            settle_backoff(),
        )
        .await;
        Stats::add(&self.stats().sdk_errors, sent.sdk_errors);
        if sent.result.is_ok() {
            Stats::add(&self.stats().dead_lettered, 1);
            self.delete(vec![message]).await;
        } else {
            Stats::add(&self.stats().settlement_failures, 1);
            self.change(vec![Change {
                seconds: visibility_seconds(delay, received.elapsed()),
                message,
                tally: Tally::Counted,
            }])
            .await;
        }
    }
}
