//! Settlement: what the engine decided, as SQS calls. Deletes and visibility
//! changes are coalesced into batches of up to 10 (or whatever is pending
//! after the flush interval); every per-entry failure is looked at, retried
//! when transient, logged and counted when not. Permanent failures go to the
//! dead-letter queue when one is configured.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, MessageAttributeValue,
};
use backon::{BackoffBuilder, Retryable};
use sqs_worker_core::observe::names;
use sqs_worker_core::{
    AttributeValue, FailureKind, MAX_VISIBILITY_TIMEOUT, Message, Outcome, Settled,
};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinSet;

use crate::lease::Leases;
use crate::sdk;
use crate::stats::Stats;

/// Message attributes added to a dead-lettered message.
pub mod dlq_attributes {
    /// The failure kind (`permanent`).
    pub const ERROR_KIND: &str = "SqsWorker.ErrorKind";
    /// The error text, truncated to 1 KiB.
    pub const ERROR: &str = "SqsWorker.Error";
    /// The URL of the queue the message came from.
    pub const SOURCE_QUEUE: &str = "SqsWorker.SourceQueue";
    /// The message id in the source queue.
    pub const MESSAGE_ID: &str = "SqsWorker.MessageId";
}

const MAX_ERROR_TEXT: usize = 1024;

/// A message's in-flight slot (capacity permit), held until its settlement
/// call has been sent (back-pressure: receiving waits for slow settlement).
pub(crate) type Slot = Option<OwnedSemaphorePermit>;

/// Adds `slot` to the slots held for a batch (one permit, merged).
fn hold(held: &mut Slot, slot: Slot) {
    match (held.as_mut(), slot) {
        (Some(h), Some(s)) => h.merge(s),
        (None, s) => *held = s,
        (Some(_), None) => {}
    }
}

/// Runs a settlement call, then frees the slots it held.
async fn holding(call: impl Future<Output = ()>, slots: Slot) {
    call.await;
    drop(slots);
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
    /// Send to the dead-letter queue, then delete.
    DeadLetter {
        message: Message,
        kind: FailureKind,
        error: String,
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

/// What the settlement calls need.
pub(crate) struct Acker {
    pub(crate) leases: Arc<Leases>,
    pub(crate) dead_letter_queue: Option<String>,
    pub(crate) flush_interval: Duration,
}

struct Change {
    message: Message,
    seconds: i32,
    retry: bool,
}

impl Acker {
    fn stats(&self) -> &Stats {
        &self.leases.stats
    }

    /// Settles every job until the channel closes, then flushes and waits for
    /// every call in flight.
    pub(crate) async fn run(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<(Job, Slot)>) {
        let mut deletes: Vec<Message> = Vec::with_capacity(10);
        let mut changes: Vec<Change> = Vec::with_capacity(10);
        // The slots of the buffered deletes and changes.
        let (mut delete_slots, mut change_slots): (Slot, Slot) = (None, None);
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
                            self.flush(&mut tasks, (&mut deletes, &mut delete_slots), (&mut changes, &mut change_slots));
                            flush_at = None;
                            continue;
                        }
                    }
                }
            };
            let Some((job, slot)) = job else { break };
            match job {
                Job::Delete(m) => {
                    deletes.push(m);
                    hold(&mut delete_slots, slot);
                    if deletes.len() == 10 {
                        let batch = std::mem::take(&mut deletes);
                        tasks.spawn(holding(self.clone().delete(batch), delete_slots.take()));
                    }
                }
                Job::Release {
                    message,
                    delay,
                    received,
                    retry,
                } => {
                    changes.push(Change {
                        seconds: release_seconds(delay, received),
                        message,
                        retry,
                    });
                    hold(&mut change_slots, slot);
                    if changes.len() == 10 {
                        let batch = std::mem::take(&mut changes);
                        tasks.spawn(holding(self.clone().change(batch), change_slots.take()));
                    }
                }
                Job::DeadLetter {
                    message,
                    kind,
                    error,
                    received,
                } => {
                    let call = self.clone().dead_letter(message, kind, error, received);
                    tasks.spawn(holding(call, slot));
                }
            }
            let now = Instant::now();
            if deletes.is_empty() && changes.is_empty() {
                flush_at = None;
            } else if let Some(at) = flush_at {
                if now >= at {
                    self.flush(
                        &mut tasks,
                        (&mut deletes, &mut delete_slots),
                        (&mut changes, &mut change_slots),
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
            (&mut deletes, &mut delete_slots),
            (&mut changes, &mut change_slots),
        );
        while tasks.join_next().await.is_some() {}
    }

    fn flush(
        self: &Arc<Self>,
        tasks: &mut JoinSet<()>,
        (deletes, delete_slots): (&mut Vec<Message>, &mut Slot),
        (changes, change_slots): (&mut Vec<Change>, &mut Slot),
    ) {
        if !deletes.is_empty() {
            let call = self.clone().delete(std::mem::take(deletes));
            tasks.spawn(holding(call, delete_slots.take()));
        }
        if !changes.is_empty() {
            let call = self.clone().change(std::mem::take(changes));
            tasks.spawn(holding(call, change_slots.take()));
        }
    }

    fn failed_for_good(&self, action: &'static str, message: &Message, code: &str, detail: &str) {
        Stats::add(&self.stats().settlement_failures, 1);
        metrics::counter!(names::SETTLEMENT_FAILURES, "action" => action).increment(1);
        tracing::warn!(
            messaging.message.id = message.id(),
            action,
            code,
            detail = %sdk::redact(detail),
            "settling a message failed; it will come back when its visibility timeout ends"
        );
    }

    /// `DeleteMessageBatch`, retrying transient failures (whole call or entry).
    async fn delete(self: Arc<Self>, mut pending: Vec<Message>) {
        let mut backoff = sdk::settle_backoff().build();
        loop {
            let mut entries = Vec::with_capacity(pending.len());
            for (i, m) in pending.iter().enumerate() {
                match DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle())
                    .build()
                {
                    Ok(e) => entries.push(e),
                    // Both required fields are set, so this cannot happen; if
                    // it did, the message comes back after its visibility timeout.
                    Err(e) => {
                        tracing::error!(messaging.message.id = m.id(), error = %e, "cannot build a delete entry")
                    }
                }
            }
            let out = {
                let _gate = self.leases.gate.read().await;
                self.leases
                    .client
                    .delete_message_batch()
                    .queue_url(&self.leases.queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
            };
            let mut retry = Vec::new();
            match out {
                Ok(out) => {
                    Stats::add(&self.stats().deleted, out.successful().len() as u64);
                    for f in out.failed() {
                        let Some(m) = f.id().parse::<usize>().ok().and_then(|i| pending.get(i))
                        else {
                            continue;
                        };
                        if sdk::transient_entry(f.code(), f.sender_fault()) {
                            retry.push(m.clone());
                        } else {
                            self.failed_for_good("delete", m, f.code(), f.message().unwrap_or(""));
                        }
                    }
                }
                Err(e) => {
                    Stats::add(&self.stats().sdk_errors, 1);
                    let class = sdk::classify(&e);
                    tracing::warn!(error = %sdk::describe(&e), messages = pending.len(), transient = class.retryable_after_start(), "DeleteMessageBatch failed");
                    if class.retryable_after_start() {
                        retry = pending;
                    } else {
                        for m in &pending {
                            self.failed_for_good(
                                "delete",
                                m,
                                "call_failed",
                                "DeleteMessageBatch failed",
                            );
                        }
                    }
                }
            }
            if retry.is_empty() {
                return;
            }
            let Some(delay) = backoff.next() else {
                for m in &retry {
                    self.failed_for_good("delete", m, "retries_exhausted", "gave up retrying");
                }
                return;
            };
            tokio::time::sleep(delay).await;
            pending = retry;
        }
    }

    /// `ChangeMessageVisibilityBatch` for failed and released messages.
    async fn change(self: Arc<Self>, mut pending: Vec<Change>) {
        let mut backoff = sdk::settle_backoff().build();
        loop {
            let mut entries = Vec::with_capacity(pending.len());
            for (i, c) in pending.iter().enumerate() {
                match ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(c.message.receipt_handle())
                    .visibility_timeout(c.seconds)
                    .build()
                {
                    Ok(e) => entries.push(e),
                    // Required fields are set, so this cannot happen; if it did,
                    // the message comes back after its visibility timeout.
                    Err(e) => {
                        tracing::error!(messaging.message.id = c.message.id(), error = %e, "cannot build a visibility entry")
                    }
                }
            }
            let out = {
                let _gate = self.leases.gate.read().await;
                self.leases
                    .client
                    .change_message_visibility_batch()
                    .queue_url(&self.leases.queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
            };
            let mut retry = Vec::new();
            match out {
                Ok(out) => {
                    let mut ok = vec![false; pending.len()];
                    for s in out.successful() {
                        if let Some(slot) = s.id().parse::<usize>().ok().and_then(|i| ok.get_mut(i))
                        {
                            *slot = true;
                        }
                    }
                    let failed: HashMap<usize, (&str, bool, &str)> = out
                        .failed()
                        .iter()
                        .filter_map(|f| {
                            let i = f.id().parse::<usize>().ok()?;
                            Some((i, (f.code(), f.sender_fault(), f.message().unwrap_or(""))))
                        })
                        .collect();
                    for (i, c) in pending.into_iter().enumerate() {
                        if ok[i] {
                            self.count_change(&c);
                        } else if let Some((code, sender_fault, detail)) = failed.get(&i) {
                            if sdk::transient_entry(code, *sender_fault) {
                                retry.push(c);
                            } else {
                                self.failed_for_good("change_visibility", &c.message, code, detail);
                            }
                        }
                    }
                }
                Err(e) => {
                    Stats::add(&self.stats().sdk_errors, 1);
                    let class = sdk::classify(&e);
                    tracing::warn!(error = %sdk::describe(&e), messages = pending.len(), transient = class.retryable_after_start(), "ChangeMessageVisibilityBatch failed");
                    if class.retryable_after_start() {
                        retry = pending;
                    } else {
                        for c in &pending {
                            self.failed_for_good(
                                "change_visibility",
                                &c.message,
                                "call_failed",
                                "ChangeMessageVisibilityBatch failed",
                            );
                        }
                    }
                }
            }
            if retry.is_empty() {
                return;
            }
            let Some(delay) = backoff.next() else {
                for c in &retry {
                    self.failed_for_good(
                        "change_visibility",
                        &c.message,
                        "retries_exhausted",
                        "gave up retrying",
                    );
                }
                return;
            };
            tokio::time::sleep(delay).await;
            pending = retry;
        }
    }

    fn count_change(&self, c: &Change) {
        if c.retry {
            Stats::add(&self.stats().retried, 1);
            metrics::counter!(names::RETRIED).increment(1);
        } else {
            Stats::add(&self.stats().released, 1);
        }
    }

    /// `SendMessage` to the dead-letter queue, then delete; if the send fails
    /// for good, the message is made visible again for the redrive policy.
    async fn dead_letter(
        self: Arc<Self>,
        message: Message,
        kind: FailureKind,
        error: String,
        received: Instant,
    ) {
        let Some(dlq) = self.dead_letter_queue.clone() else {
            return;
        };
        let attributes = dlq_message_attributes(&message, kind, &error, &self.leases.queue_url);
        let fifo = dlq.ends_with(".fifo");
        let send = || {
            let mut req = self
                .leases
                .client
                .send_message()
                .queue_url(&dlq)
                .message_body(message.body())
                .set_message_attributes(Some(attributes.clone()));
            if fifo {
                req = req
                    .message_group_id(message.group_id().unwrap_or("sqs-worker-dlq"))
                    .message_deduplication_id(message.id());
            }
            req.send()
        };
        let sent = send
            .retry(sdk::settle_backoff())
            .when(|e| sdk::classify(e).retryable_after_start())
            .notify(|e, d| {
                Stats::add(&self.stats().sdk_errors, 1);
                tracing::warn!(error = %sdk::describe(e), retry_in = ?d, "SendMessage to the dead-letter queue failed; retrying");
            })
            .await;
        match sent {
            Ok(_) => {
                Stats::add(&self.stats().dead_lettered, 1);
                metrics::counter!(names::DEAD_LETTERED).increment(1);
                tracing::info!(
                    messaging.message.id = message.id(),
                    kind = kind.as_str(),
                    "message sent to the dead-letter queue"
                );
                self.delete(vec![message]).await;
            }
            Err(e) => {
                Stats::add(&self.stats().sdk_errors, 1);
                self.failed_for_good(
                    "dead_letter",
                    &message,
                    "send_failed",
                    &sdk::describe(&e).to_string(),
                );
                // Left to the queue's redrive policy.
                self.change(vec![Change {
                    message,
                    seconds: release_seconds(Duration::ZERO, received),
                    retry: true,
                }])
                .await;
            }
        }
    }
}

/// Whole seconds for a retry delay (rounded up), kept within SQS's 12 hours
/// from receipt.
fn release_seconds(delay: Duration, received: Instant) -> i32 {
    let room = MAX_VISIBILITY_TIMEOUT
        .saturating_sub(received.elapsed())
        .saturating_sub(Duration::from_secs(1));
    delay.min(room).as_secs_f64().ceil() as i32
}

/// The original message attributes plus ours, within SQS's limit of 10.
fn dlq_message_attributes(
    message: &Message,
    kind: FailureKind,
    error: &str,
    source: &str,
) -> HashMap<String, MessageAttributeValue> {
    let mut out = HashMap::new();
    for (name, a) in message.message_attributes() {
        let b = MessageAttributeValue::builder().data_type(&a.data_type);
        let b = match &a.value {
            AttributeValue::String(s) | AttributeValue::Number(s) => b.string_value(s),
            AttributeValue::Binary(v) => b.binary_value(Blob::new(v.clone())),
        };
        if let Ok(v) = b.build() {
            out.insert(name.clone(), v);
        }
    }
    let mut text = error.to_owned();
    if text.len() > MAX_ERROR_TEXT {
        let mut cut = MAX_ERROR_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    let ours = [
        (dlq_attributes::ERROR_KIND, kind.as_str().to_owned()),
        (dlq_attributes::ERROR, text),
        (dlq_attributes::SOURCE_QUEUE, source.to_owned()),
        (dlq_attributes::MESSAGE_ID, message.id().to_owned()),
    ];
    for (name, value) in ours {
        if out.len() >= 10 {
            tracing::warn!(
                messaging.message.id = message.id(),
                attribute = name,
                "no room for this dead-letter attribute (SQS allows 10)"
            );
            continue;
        }
        if value.is_empty() {
            continue;
        }
        if let Ok(v) = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
        {
            out.insert(name.to_owned(), v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use sqs_worker_core::MessageAttribute;

    use super::*;

    #[test]
    fn dead_letter_attributes_keep_the_originals_and_truncate() {
        let m = Message::builder("m-1", "body")
            .message_attribute("trace", MessageAttribute::string("t"))
            .message_attribute("n", MessageAttribute::number(3))
            .build();
        let long = "é".repeat(2000);
        let a = dlq_message_attributes(&m, FailureKind::Permanent, &long, "http://q");
        assert_eq!(a["trace"].string_value(), Some("t"));
        assert_eq!(a["n"].data_type(), "Number");
        assert_eq!(
            a[dlq_attributes::ERROR_KIND].string_value(),
            Some("permanent")
        );
        assert!(a[dlq_attributes::ERROR].string_value().unwrap().len() <= MAX_ERROR_TEXT + 3);
        assert_eq!(
            a[dlq_attributes::SOURCE_QUEUE].string_value(),
            Some("http://q")
        );
        let mut full = Message::builder("m-2", "b");
        for i in 0..10 {
            full = full.message_attribute(format!("a{i}"), MessageAttribute::string("x"));
        }
        assert_eq!(
            dlq_message_attributes(&full.build(), FailureKind::Permanent, "e", "q").len(),
            10
        );
    }

    #[test]
    fn release_seconds_round_up_and_stay_under_twelve_hours() {
        let now = Instant::now();
        assert_eq!(release_seconds(Duration::ZERO, now), 0);
        assert_eq!(release_seconds(Duration::from_millis(1500), now), 2);
        assert!(release_seconds(Duration::from_secs(13 * 3600), now) < 12 * 3600);
    }
}
