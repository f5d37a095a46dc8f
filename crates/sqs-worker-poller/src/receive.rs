//! Receive loops: decide how many messages to ask for (free handler slots,
//! plus on a standard queue what will start soon: `crate::ahead`), take a
//! lease for each, long-poll, turn what comes into core [`Message`]s and hand
//! those with a free slot to the engine as one batch task (the rest wait for
//! slots in `crate::ahead`). Each message holds its lease until its
//! settlement call has been sent, so slow settlement slows receiving, and its
//! handler slot while its handler runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::operation::receive_message::{ReceiveMessageError, ReceiveMessageOutput};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use sqs_worker_core::flow::CircuitBreaker;
use sqs_worker_core::runner::observe::{self, names};
use sqs_worker_core::runner::{MessageParts, Processor, VisibilityControl};
use sqs_worker_core::{Message, MessageAttribute, MessageAttributes, SystemAttributes, Visibility};
use sqs_worker_sqs::classify::{self as sdk, Class};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::error::PollerError;
use crate::handoff::Handoff;
use crate::inflight::InFlight;
use crate::stats::{Activity, Stats};
use crate::stop::stopped;

/// How often a receive loop warns about the same lasting condition (the
/// in-flight limit, failing credentials); in between it logs at debug.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What a receive loop needs.
pub(crate) struct Receiver<P> {
    pub(crate) client: aws_sdk_sqs::Client,
    pub(crate) queue_url: Arc<str>,
    pub(crate) queue_name: String,
    pub(crate) processor: P,
    /// Handler slots (the concurrency): held from a message's start until
    /// its handler finished.
    pub(crate) slots: Arc<Semaphore>,
    /// Leases: held from a message's receipt until its settlement call was
    /// sent ([`crate::ahead::lease_bound`]).
    pub(crate) leases: Arc<Semaphore>,
    /// Receive ahead, when on.
    pub(crate) ahead: Option<Arc<crate::ahead::Ahead>>,
    pub(crate) inflight: Arc<InFlight>,
    /// Backs every message's lease (shared by all messages).
    pub(crate) control: Arc<dyn VisibilityControl>,
    pub(crate) handoff: Arc<Handoff>,
    pub(crate) activity: Arc<Activity>,
    pub(crate) max_messages: usize,
    pub(crate) wait_seconds: i32,
    /// `VisibilityTimeout` to receive with (else the queue's).
    pub(crate) visibility_override: Option<i32>,
    /// The visibility timeout in force, for lease deadlines.
    pub(crate) visibility: Duration,
    /// The first loop always polls; the others only while receives come back
    /// full (a backlog), so a trickle is not split into tiny receives.
    pub(crate) primary: bool,
    pub(crate) backlog: Arc<watch::Sender<bool>>,
    /// The global in-flight limit (the semaphore's size).
    pub(crate) concurrency: usize,
    /// How long a receive in flight at shutdown may still answer: SQS keeps
    /// a long poll going after its client leaves, so it is awaited (it
    /// returns within the wait time), up to the grace period.
    pub(crate) stop_wait: Duration,
    /// Set by the first successful receive of any loop: from then on,
    /// failing credentials and refused permissions are waited out.
    pub(crate) started: Arc<AtomicBool>,
    /// On a FIFO queue, the prefix of each receive's fresh
    /// `ReceiveRequestAttemptId` (the SDK resends the same one on its own
    /// retries, so SQS answers a retried receive with the same messages).
    pub(crate) attempt_prefix: Option<String>,
    /// The circuit breaker, when configured (shared by the receive loops).
    pub(crate) breaker: Option<Arc<CircuitBreaker>>,
    /// What each batch task needs to hold failed FIFO groups.
    pub(crate) groups: Arc<crate::fifo::Groups>,
    /// The rate limit and adaptive concurrency, when configured.
    pub(crate) limits: crate::limits::Limits,
}

/// A receive loop's backoffs and warning clocks.
struct Backoffs {
    /// Transient errors: 100 ms doubling to 10 s.
    short: ExponentialBackoff,
    /// The in-flight limit, and credentials failing mid-run: 1 s doubling to 60 s.
    long: ExponentialBackoff,
    /// Empty short polls (`wait_time` 0): 100 ms doubling to 1 s.
    empty: ExponentialBackoff,
    warned: [Option<Instant>; 2],
}

impl Backoffs {
    fn new() -> Self {
        Self {
            short: sdk::receive_backoff().build(),
            long: sdk::long_backoff().build(),
            empty: empty_poll_backoff().build(),
            warned: [None; 2],
        }
    }

    /// Whether to warn about lasting condition `i` now (once per [`WARN_EVERY`]).
    fn warn_now(&mut self, i: usize) -> bool {
        let due = self.warned[i].is_none_or(|t| t.elapsed() >= WARN_EVERY);
        if due {
            self.warned[i] = Some(Instant::now());
        }
        due
    }
}

fn empty_poll_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(1))
        .without_max_times()
}

/// How a receive call ended.
#[allow(clippy::large_enum_variant)] // moved once per receive call, never stored
enum Receipt {
    Answered(Result<ReceiveMessageOutput, SdkError<ReceiveMessageError>>),
    /// Stopped while it was in flight: what it brought, if it answered in time.
    Stopped(Option<ReceiveMessageOutput>),
}

impl<P: Processor> Receiver<P> {
    /// Receives until `stop` turns true (or a non-transient error); returns
    /// the batch tasks still running.
    pub(crate) async fn run(
        self,
        mut stop: watch::Receiver<bool>,
    ) -> (JoinSet<()>, Option<PollerError>) {
        let mut batches = JoinSet::new();
        let mut backoffs = Backoffs::new();
        let mut attempts = 0u64;
        loop {
            while batches.try_join_next().is_some() {}
            if *stop.borrow() || !self.wait_for_backlog(&mut stop).await {
                break;
            }
            let Some((slots, leases, mut tokens)) = self.grant(&mut stop).await else {
                break;
            };
            let Some(leases) = leases else { continue };
            attempts += 1;
            let asked = leases.num_permits();
            let sent = Instant::now();
            let receipt = self.receive_once(asked, attempts, &mut stop).await;
            if let Some(a) = &self.ahead {
                let got = match &receipt {
                    Receipt::Answered(Ok(out)) => out.messages().len(),
                    _ => 0,
                };
                a.answered(asked, got, sent.elapsed());
            }
            let result = match receipt {
                Receipt::Answered(result) => {
                    if let Ok(out) = &result {
                        crate::limits::spend(&mut tokens, out.messages().len());
                    }
                    result
                }
                Receipt::Stopped(out) => {
                    if let Some(out) = out {
                        self.release_unstarted(out, leases);
                    }
                    break;
                }
            };
            let pause = match result {
                Ok(out) => {
                    observe::health().receive_succeeded();
                    self.started.store(true, Relaxed);
                    backoffs.short = sdk::receive_backoff().build();
                    backoffs.long = sdk::long_backoff().build();
                    let dispatched = match self.release_while_open(out, leases) {
                        Some((out, leases)) => {
                            self.dispatch(out, slots, leases, &mut batches, &stop)
                        }
                        None => 1,
                    };
                    if dispatched > 0 {
                        backoffs.empty = empty_poll_backoff().build();
                        None
                    } else if self.wait_seconds == 0 {
                        // An empty short poll: no busy loop.
                        backoffs.empty.next()
                    } else {
                        None
                    }
                }
                Err(e) => {
                    drop((slots, leases));
                    self.probe_unused();
                    match self.retry_delay(&e, &mut backoffs) {
                        Ok(delay) => Some(delay),
                        Err(err) => return (batches, Some(err)),
                    }
                }
            };
            if let Some(pause) = pause {
                tokio::select! {
                    biased;
                    () = stopped(&mut stop) => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
        (batches, None)
    }

    /// A secondary loop waits for a backlog; `false` when stopped meanwhile.
    async fn wait_for_backlog(&self, stop: &mut watch::Receiver<bool>) -> bool {
        if self.primary || *self.backlog.borrow() {
            return true;
        }
        let mut backlog = self.backlog.subscribe();
        tokio::select! {
            biased;
            () = stopped(stop) => false,
            _ = backlog.wait_for(|b| *b) => true,
        }
    }

    /// One `ReceiveMessage` for up to `asked` messages. At stop, a receive in
    /// flight is not abandoned: SQS would hand what arrives during the rest
    /// of its wait to the dead connection, invisible for the visibility timeout.
    async fn receive_once(
        &self,
        asked: usize,
        attempt: u64,
        stop: &mut watch::Receiver<bool>,
    ) -> Receipt {
        let span = tracing::debug_span!(
            "sqs.receive",
            otel.kind = "client",
            messaging.system = "aws_sqs",
            messaging.operation.name = "receive",
            messaging.operation.type = "receive",
            messaging.destination.name = %self.queue_name,
            aws.sqs.queue.url = &*self.queue_url,
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
            .set_receive_request_attempt_id(
                self.attempt_prefix
                    .as_ref()
                    .map(|p| format!("{p}-{attempt}")),
            )
            .send()
            .instrument(span);
        let mut call = std::pin::pin!(call);
        tokio::select! {
            biased;
            r = &mut call => Receipt::Answered(r),
            () = stopped(stop) => {
                match tokio::time::timeout(self.stop_wait, &mut call).await {
                    Ok(Ok(out)) => Receipt::Stopped(Some(out)),
                    Ok(Err(_)) => Receipt::Stopped(None),
                    Err(_) => {
                        tracing::warn!(
                            stop_wait_ms = self.stop_wait.as_millis() as u64,
                            "a receive in flight did not answer within the grace period; \
                             abandoned (keep the grace period above the wait time)"
                        );
                        Receipt::Stopped(None)
                    }
                }
            }
        }
    }

    /// How long to wait before receiving again after `e`, or the error that
    /// ends the run. Credentials and permissions failing after the first
    /// successful receive are waited out (unhealthy meanwhile); the in-flight
    /// limit always is (degraded meanwhile).
    fn retry_delay(
        &self,
        e: &SdkError<ReceiveMessageError>,
        b: &mut Backoffs,
    ) -> Result<Duration, PollerError> {
        Stats::add(&self.inflight.stats.sdk_errors, 1);
        let class = sdk::classify(e);
        let error = sdk::describe(e);
        let queue = &*self.queue_url;
        let (kind, delay) = match class {
            Class::Transient | Class::Throttled => ("transient", b.short.next()),
            Class::OverLimit => ("over_limit", b.long.next()),
            c if c.is_credentials() && self.started.load(Relaxed) => ("credentials", b.long.next()),
            _ => {
                observe::health().receive_failed();
                tracing::error!(%error, queue, "ReceiveMessage failed; stopping");
                return Err(crate::error::fatal(e, queue, "ReceiveMessage"));
            }
        };
        if class == Class::OverLimit {
            observe::health().receive_limited();
        } else {
            observe::health().receive_failed();
        }
        metrics::counter!(names::RECEIVE_ERRORS, "kind" => kind).increment(1);
        let delay = delay.unwrap_or(Duration::from_secs(10));
        let retry_in_ms = delay.as_millis() as u64;
        match kind {
            "transient" => {
                tracing::warn!(%error, queue, retry_in_ms, "ReceiveMessage failed; retrying");
            }
            "over_limit" if b.warn_now(0) => tracing::warn!(
                %error, queue, retry_in_ms,
                "the queue is at its in-flight limit (OverLimit): backing off until receives succeed"
            ),
            "credentials" if b.warn_now(1) => tracing::warn!(
                %error, queue, retry_in_ms,
                "credentials or permissions failing after start-up: backing off until receives succeed"
            ),
            _ => {
                tracing::debug!(%error, queue, retry_in_ms, kind, "ReceiveMessage failed; retrying")
            }
        }
        Ok(delay)
    }

    /// Hands what a receive brought to the engine as one batch task (those
    /// with a slot; the rest wait for one in `crate::ahead`); the number of
    /// messages.
    fn dispatch(
        &self,
        out: ReceiveMessageOutput,
        slots: Option<OwnedSemaphorePermit>,
        mut leases: OwnedSemaphorePermit,
        batches: &mut JoinSet<()>,
        stop: &watch::Receiver<bool>,
    ) -> usize {
        let received_at = Instant::now();
        let asked = leases.num_permits();
        let messages = out.messages.unwrap_or_default();
        // Everything asked for came back: there may well be more waiting.
        let full = messages.len() >= asked;
        self.backlog
            .send_if_modified(|b| std::mem::replace(b, full) != full);
        if messages.is_empty() {
            self.activity.empty_receive();
            self.probe_unused();
            return 0;
        }
        self.activity.touch();
        let deadline = received_at + self.visibility;
        let mut slots = match (&self.ahead, slots) {
            (Some(a), None) => a.direct_slots(messages.len()),
            (_, slots) => slots,
        };
        let mut batch = Vec::with_capacity(messages.len());
        let mut waiting = Vec::new();
        for m in messages {
            let Some(msg) = self.convert(m, deadline) else {
                continue;
            };
            let Some(msg) = self.admit_group(msg, received_at, &mut leases) else {
                continue;
            };
            // SQS never returns more than asked; if it did, the extra
            // message is still tracked and settled, just without a lease.
            let lease = leases.split(1);
            let slot = slots.as_mut().and_then(|s| s.split(1));
            let starts = slot.is_some() || self.ahead.is_none();
            self.inflight.insert(msg.clone(), received_at, lease, slot);
            if starts {
                batch.push(msg);
            } else {
                waiting.push(msg);
            }
        }
        drop((slots, leases));
        let n = batch.len() + waiting.len();
        Stats::add(&self.inflight.stats.received, n as u64);
        if let Some(a) = &self.ahead
            && !waiting.is_empty()
        {
            observe::received(&waiting);
            // Stopping meanwhile: released at once, like a receive that
            // answered after the signal.
            for m in a.wait(waiting, received_at) {
                self.handoff.release_unstarted(m);
            }
        }
        if batch.is_empty() {
            return n;
        }
        observe::received(&batch);
        let span = observe::batch_span(&self.queue_name, &self.queue_url, &batch);
        let run = crate::fifo::run_batch(
            self.processor.clone(),
            batch,
            received_at,
            self.groups.clone(),
            stop.clone(),
        );
        batches.spawn(run.instrument(span));
        n
    }

    /// Messages received while stopping are not run: each is made visible
    /// again at once (visibility 0), with its lease.
    fn release_unstarted(&self, out: ReceiveMessageOutput, mut leases: OwnedSemaphorePermit) {
        let now = Instant::now();
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return;
        }
        tracing::info!(
            messages = messages.len(),
            "received while stopping: releasing these unstarted (visibility 0)"
        );
        for m in messages {
            if let Some(message) = self.convert(m, now + self.visibility) {
                Stats::add(&self.inflight.stats.received, 1);
                self.handoff
                    .release(message, Duration::ZERO, now, leases.split(1));
            }
        }
    }

    /// An SQS message as a core [`Message`]; `None` (logged) without a receipt handle.
    pub(crate) fn convert(
        &self,
        m: aws_sdk_sqs::types::Message,
        deadline: Instant,
    ) -> Option<Message> {
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
