//! Receive loops: take free capacity first, then long-poll for at most that
//! many messages, turn them into core [`Message`]s and hand each batch to the
//! engine as its own task. Each message holds one capacity permit until it
//! settles, so nothing waits invisible in memory for a worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use backon::BackoffBuilder;
use sqs_worker_core::runner::{MessageParts, Processor, Settled, VisibilityControl, observe};
use sqs_worker_core::{Message, MessageAttribute, MessageAttributes, SystemAttributes, Visibility};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::error::PollerError;
use crate::lease::Leases;
use crate::settle::Job;
use crate::stats::Stats;
use sqs_worker_sqs::classify::{classify, describe, receive_backoff};

/// How long a receive in flight at shutdown may still answer.
const STOP_RECEIVE_WAIT: Duration = Duration::from_secs(1);

/// While the queue has a backlog, how long a receive loop waits for enough
/// free capacity to ask for a full receive (rather than sending one
/// `ReceiveMessage` per freed slot, which costs a request each and keeps the
/// second receive loop from ever seeing a full receive).
const FILL_WAIT: Duration = Duration::from_millis(10);

/// Resolves once `stop` is true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// When something last happened (a non-empty receive or a settlement), and
/// whether a receive has come back empty since, for idle exit.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    empty_since_last: AtomicBool,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            empty_since_last: AtomicBool::new(false),
        }
    }

    pub(crate) fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Relaxed);
        self.empty_since_last.store(false, Relaxed);
    }

    fn empty_receive(&self) {
        self.empty_since_last.store(true, Relaxed);
    }

    /// How long the queue has looked empty: `None` until a receive came back
    /// empty after the last thing that happened.
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        if !self.empty_since_last.load(Relaxed) {
            return None;
        }
        Some(
            self.start
                .elapsed()
                .saturating_sub(Duration::from_millis(self.last_ms.load(Relaxed))),
        )
    }
}

/// What a receive loop needs.
pub(crate) struct Receiver<P> {
    pub(crate) client: aws_sdk_sqs::Client,
    pub(crate) queue_url: Arc<str>,
    pub(crate) queue_name: String,
    pub(crate) processor: P,
    pub(crate) capacity: Arc<Semaphore>,
    pub(crate) leases: Arc<Leases>,
    /// Backs every message's lease (shared by all messages).
    pub(crate) control: Arc<dyn VisibilityControl>,
    pub(crate) settle: mpsc::UnboundedSender<Job>,
    pub(crate) activity: Arc<Activity>,
    pub(crate) max_messages: usize,
    pub(crate) wait_seconds: i32,
    /// `VisibilityTimeout` to receive with (else the queue's).
    pub(crate) visibility_override: Option<i32>,
    /// The visibility timeout in force, for lease deadlines.
    pub(crate) visibility: Duration,
    pub(crate) dead_letter: bool,
    /// The first loop always polls; the others only while receives come back
    /// full (a backlog), so a trickle is not split into tiny receives.
    pub(crate) primary: bool,
    pub(crate) backlog: Arc<watch::Sender<bool>>,
    /// The global in-flight limit (the semaphore's size).
    pub(crate) concurrency: usize,
}

impl<P: Processor> Receiver<P> {
    /// Receives until `stop` turns true (or a non-transient error); returns
    /// the batch tasks still running.
    pub(crate) async fn run(
        self,
        mut stop: watch::Receiver<bool>,
    ) -> (JoinSet<()>, Option<PollerError>) {
        let mut batches = JoinSet::new();
        let mut backoff = receive_backoff().build();
        let stats = self.leases.stats.clone();
        loop {
            while batches.try_join_next().is_some() {}
            if *stop.borrow() {
                break;
            }
            if !self.primary && !*self.backlog.borrow() {
                let mut backlog = self.backlog.subscribe();
                tokio::select! {
                    biased;
                    () = stopped(&mut stop) => break,
                    _ = backlog.wait_for(|b| *b) => continue,
                }
            }
            let first = tokio::select! {
                biased;
                _ = crate::receive::stopped(&mut stop) => break,
                p = self.capacity.clone().acquire_owned() => p,
            };
            let Ok(mut permits) = first else { break };
            // With a backlog and room for at least two full receives, gather
            // a full receive's capacity first (briefly). Below that, waiting
            // for slots would leave capacity idle behind slow messages, so
            // the loop receives whatever is free.
            let fill = self.max_messages - 1;
            if self.concurrency >= 2 * self.max_messages
                && fill > 0
                && *self.backlog.borrow()
                && self.capacity.available_permits() < fill
                && let Ok(Ok(more)) = tokio::time::timeout(
                    FILL_WAIT,
                    self.capacity.clone().acquire_many_owned(fill as u32),
                )
                .await
            {
                permits.merge(more);
            }
            let extra = self
                .capacity
                .available_permits()
                .min(self.max_messages - permits.num_permits());
            if extra > 0
                && let Ok(more) = self.capacity.clone().try_acquire_many_owned(extra as u32)
            {
                permits.merge(more);
            }
            let asked = permits.num_permits();
            let span = tracing::debug_span!(
                "sqs.receive",
                messaging.system = "aws_sqs",
                messaging.destination.name = %self.queue_name,
                asked,
            );
            let call = self
                .client
                .receive_message()
                .queue_url(&*self.queue_url)
                .max_number_of_messages(asked as i32)
                .wait_time_seconds(self.wait_seconds)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .set_visibility_timeout(self.visibility_override)
                .send()
                .instrument(span);
            let mut call = std::pin::pin!(call);
            let result = tokio::select! {
                biased;
                r = &mut call => r,
                () = stopped(&mut stop) => {
                    // A receive SQS already answered must not be dropped (its
                    // messages would stay invisible for the whole visibility
                    // timeout): give it a moment, and release what it brings.
                    // A long poll on an empty queue is aborted.
                    if let Ok(Ok(out)) = tokio::time::timeout(STOP_RECEIVE_WAIT, &mut call).await {
                        self.park(out, permits);
                    }
                    break;
                }
            };
            let received_at = Instant::now();
            let out = match result {
                Ok(out) => {
                    observe::health().receive_succeeded();
                    backoff = receive_backoff().build();
                    out
                }
                Err(e) => {
                    observe::health().receive_failed();
                    Stats::add(&stats.sdk_errors, 1);
                    drop(permits);
                    if !classify(&e).is_transient() {
                        let err = crate::error::fatal(&e, &self.queue_url, "ReceiveMessage");
                        tracing::error!(error = %describe(&e), queue = %self.queue_url, "ReceiveMessage failed; stopping");
                        return (batches, Some(err));
                    }
                    let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(
                        error = %describe(&e),
                        queue = %self.queue_url,
                        retry_in_ms = delay.as_millis() as u64,
                        "ReceiveMessage failed; retrying"
                    );
                    tokio::select! {
                        biased;
                        _ = crate::receive::stopped(&mut stop) => break,
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            let messages = out.messages.unwrap_or_default();
            // Everything asked for came back: there may well be more waiting.
            let full = messages.len() >= asked;
            self.backlog
                .send_if_modified(|b| std::mem::replace(b, full) != full);
            if messages.is_empty() {
                self.activity.empty_receive();
                continue;
            }
            self.activity.touch();
            let deadline = received_at + self.visibility;
            let mut batch = Vec::with_capacity(messages.len());
            for m in messages {
                let Some(msg) = self.convert(m, deadline) else {
                    continue;
                };
                // SQS never returns more than asked; if it did, the extra
                // message is still tracked and settled, just without a permit.
                let permit = permits.split(1);
                self.leases.insert(msg.clone(), received_at, permit);
                batch.push(msg);
            }
            drop(permits);
            if batch.is_empty() {
                continue;
            }
            observe::received(&batch);
            Stats::add(&stats.received, batch.len() as u64);
            let span = if observe::info_spans_off() {
                tracing::Span::none()
            } else {
                tracing::info_span!(
                    "sqs.batch",
                    messaging.system = "aws_sqs",
                    messaging.destination.name = %self.queue_name,
                    messaging.batch.message_count = batch.len(),
                )
            };
            let processor = self.processor.clone();
            let leases = self.leases.clone();
            let tx = self.settle.clone();
            let activity = self.activity.clone();
            let dlq = self.dead_letter;
            batches.spawn(
                async move {
                    let settle = move |s: Settled| {
                        // Out of the lease table first: no extension can follow.
                        let Some(entry) = leases.remove(&s.message) else {
                            return;
                        };
                        activity.touch();
                        let job = Job::plan(s, entry.received, dlq, &leases.stats);
                        drop(entry);
                        if tx.send(job).is_err() {
                            tracing::error!(
                                "settlement stage is gone; message left to its visibility timeout"
                            );
                        }
                    };
                    processor.process(batch, None, settle).await;
                }
                .instrument(span),
            );
        }
        (batches, None)
    }

    /// Registers messages received while stopping without running them:
    /// shutdown releases them (visibility 0) with the other unfinished ones.
    fn park(&self, out: ReceiveMessageOutput, mut permits: OwnedSemaphorePermit) {
        let now = Instant::now();
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return;
        }
        tracing::info!(
            messages = messages.len(),
            "received while stopping: releasing these unstarted"
        );
        for m in messages {
            if let Some(msg) = self.convert(m, now + self.visibility) {
                Stats::add(&self.leases.stats.received, 1);
                self.leases.insert(msg, now, permits.split(1));
            }
        }
    }

    /// An SQS message as a core [`Message`]; `None` (logged) without a receipt handle.
    fn convert(&self, m: aws_sdk_sqs::types::Message, deadline: Instant) -> Option<Message> {
        let Some(handle) = m.receipt_handle else {
            tracing::warn!(
                messaging.message.id = m.message_id.as_deref(),
                "received a message without a receipt handle; skipped"
            );
            return None;
        };
        let message_attributes =
            m.message_attributes
                .map_or_else(MessageAttributes::new, |attrs| {
                    let mut out = MessageAttributes::with_capacity(attrs.len());
                    for (name, v) in attrs {
                        let binary = v.binary_value.map(|b| b.into_inner());
                        if let Some(a) =
                            MessageAttribute::from_parts(v.data_type, v.string_value, binary)
                        {
                            out.insert(name, a);
                        }
                    }
                    out
                });
        Some(
            MessageParts {
                id: m.message_id.unwrap_or_default(),
                receipt_handle: handle,
                body: m.body.unwrap_or_default(),
                attributes: SystemAttributes::from_pairs(m.attributes.unwrap_or_default()),
                message_attributes,
                // Shared by every message of the queue: a reference count, not a copy.
                source: Some((&self.queue_url).into()),
                visibility: Visibility::extendable(Some(deadline), self.control.clone()),
            }
            .into_message(),
        )
    }
}
