//! The Lambda service: an `SqsEvent` in, the engine in the middle, an
//! `SqsBatchResponse` out.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Context, LambdaEvent, Service};
use sqs_worker_core::flow::Verdict;
use sqs_worker_core::runner::{Processor, Settled, observe};

use crate::flow::Flow;
use sqs_worker_core::{Message, Visibility};
use tracing::Instrument;

use crate::payload::SqsPayload;
use crate::record::{Converted, EventError, Record};

/// The default [safety margin](crate::LambdaRunner::safety_margin): the engine
/// stops this long before the invocation deadline.
pub const DEFAULT_SAFETY_MARGIN: Duration = Duration::from_millis(500);

/// Why a handler cannot extend visibility without an SQS client.
#[cfg(not(feature = "sqs-client"))]
const FIXED_LEASE: &str = "a Lambda invocation cannot change message visibility without an SQS \
                           client (the `sqs-client` feature of sqs-worker-lambda)";
#[cfg(feature = "sqs-client")]
const FIXED_LEASE: &str = "no SQS client is configured for this Lambda function, or the record \
                           has no receipt handle or queue ARN";

/// A `tower::Service<LambdaEvent<SqsEvent>>` that runs every record of the
/// event through a [`Processor`] ([`Engine`](sqs_worker_core::runner::Engine) or
/// [`BatchEngine`](sqs_worker_core::runner::BatchEngine)) and answers the partial
/// batch response.
///
/// - The engine's deadline is the invocation deadline minus the safety
///   margin: records not started by then (and handlers still running then)
///   are failed and reported, so they come back instead of timing out the
///   whole batch. A [`Context`] with no deadline (`Context::default()`, whose
///   deadline is 0, or a local emulator's value that is no Unix time) means
///   no deadline.
/// - `batchItemFailures` lists every failed and unstarted record, in the
///   order they settled (the order carries no meaning to Lambda). A batch
///   where everything failed answers the full list, never an error.
/// - A record without a body is reported failed without running the handler
///   (on a FIFO queue, later records of its group too), so nothing is
///   deleted unseen. On a standard queue a group id is a fair-queue tenant
///   label: it holds nothing back.
/// - The invocation fails (the whole batch returns to the queue) only when
///   the event cannot be answered record by record: a record that is not from
///   SQS, or one without a `messageId` ([`EventError`]). Nothing runs then.
///
/// Clone it freely: clones share the processor and settings.
pub struct LambdaService<P> {
    inner: Arc<Inner<P>>,
}

struct Inner<P> {
    processor: P,
    /// Whether no invocation has started yet: the first is the cold start.
    cold: AtomicBool,
    safety_margin: Duration,
    flow: Flow,
    #[cfg(feature = "sqs-client")]
    client: Option<crate::client::SqsSettler>,
}

impl<P> Clone for LambdaService<P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<P> std::fmt::Debug for LambdaService<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("LambdaService");
        d.field("safety_margin", &self.inner.safety_margin);
        #[cfg(feature = "sqs-client")]
        d.field("sqs_client", &self.inner.client);
        d.finish_non_exhaustive()
    }
}

impl<P: Processor> LambdaService<P> {
    /// A service with the default safety margin and no SQS client (use
    /// [`LambdaRunner`](crate::LambdaRunner) for the other settings).
    pub fn new(processor: P) -> Self {
        Self::from_parts(
            processor,
            DEFAULT_SAFETY_MARGIN,
            Flow::default(),
            #[cfg(feature = "sqs-client")]
            None,
        )
    }

    pub(crate) fn from_parts(
        processor: P,
        safety_margin: Duration,
        flow: Flow,
        #[cfg(feature = "sqs-client")] client: Option<crate::client::SqsSettler>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                processor,
                cold: AtomicBool::new(true),
                safety_margin,
                flow,
                #[cfg(feature = "sqs-client")]
                client,
            }),
        }
    }

    /// The processor.
    pub fn processor(&self) -> &P {
        &self.inner.processor
    }

    /// How long before the invocation deadline the engine stops.
    pub fn safety_margin(&self) -> Duration {
        self.inner.safety_margin
    }

    /// Handles one invocation (what [`Service::call`] does, without the
    /// `&mut self`).
    pub async fn handle(
        &self,
        event: SqsEvent,
        context: &Context,
    ) -> Result<SqsBatchResponse, EventError> {
        let first_arn = event
            .records
            .first()
            .and_then(|r| r.event_source_arn.as_deref());
        let cold = self.cold_start();
        let span = batch_span(first_arn, event.records.len(), context, cold);
        let mut records = event.records;
        // Each record converted in place as it is reached: no intermediate
        // vector; what the messages do not keep is dropped with the event.
        self.handle_records(records.iter_mut(), span, (context, cold))
            .await
    }

    /// Handles one invocation deserialized as the lean [`SqsPayload`] (what
    /// [`run`](crate::run) does).
    pub async fn handle_payload(
        &self,
        event: SqsPayload,
        context: &Context,
    ) -> Result<SqsBatchResponse, EventError> {
        let first_arn = event
            .records
            .first()
            .and_then(|r| r.event_source_arn.as_deref());
        let cold = self.cold_start();
        let span = batch_span(first_arn, event.records.len(), context, cold);
        let mut records = event.records;
        self.handle_records(records.iter_mut(), span, (context, cold))
            .await
    }

    /// Whether this is the service's first invocation (the container's cold
    /// start, since a container runs one service); counts it once.
    fn cold_start(&self) -> bool {
        let cold = self.inner.cold.load(Ordering::Relaxed)
            && self.inner.cold.swap(false, Ordering::Relaxed);
        if cold {
            metrics::counter!(observe::names::COLD_STARTS).increment(1);
        }
        cold
    }

    async fn handle_records<'r, R: Record + 'r>(
        &self,
        records: impl ExactSizeIterator<Item = &'r mut R>,
        span: tracing::Span,
        (context, cold): (&Context, bool),
    ) -> Result<SqsBatchResponse, EventError> {
        let now = Instant::now();
        let invocation = invocation_deadline(context, now);
        if cold
            && let Some(w) = margin_warning(invocation.map(|d| d - now), self.inner.safety_margin)
        {
            tracing::warn!("{w}");
        }
        let deadline = invocation.map(|d| {
            d.checked_sub(self.inner.safety_margin)
                .map_or(now, |d| d.max(now))
        });
        let count = records.len();

        let mut response = SqsBatchResponse::default();
        let mut messages = Vec::with_capacity(count);
        let mut blocked_groups: Vec<String> = Vec::new();
        let leases = self.leases(deadline);
        for (index, record) in records.enumerate() {
            match record.convert(index, |has_handle, arn| leases.for_record(has_handle, arn))? {
                Converted::Message(m) => {
                    if blocked(&blocked_groups, &m) {
                        let _g = span.enter();
                        tracing::warn!(
                            messaging.message.id = m.id(),
                            "not run: an earlier record of its FIFO group has no body"
                        );
                        response.add_failure(m.id());
                    } else {
                        messages.push(m);
                    }
                }
                Converted::NoBody { id, group } => {
                    let _g = span.enter();
                    tracing::warn!(
                        messaging.message.id = id.as_str(),
                        "record has no body: reported failed without running the handler"
                    );
                    blocked_groups.extend(group);
                    response.add_failure(id);
                }
            }
        }

        // Links to every producer's trace (with `link_producer_traces`).
        observe::batch_span_created(&span, &messages);
        async {
            observe::received(&messages);
            self.process(messages, deadline, invocation, &mut response)
                .await;
            let failed = response.batch_item_failures.len();
            if failed > 0 {
                metrics::counter!(observe::names::RETRIED).increment(failed as u64);
                tracing::info!(
                    failed,
                    succeeded = count - failed,
                    "batch done: reporting failed records"
                );
            }
        }
        .instrument(span)
        .await;
        // A message delivered twice within one event (rare, at-least-once) is
        // listed once.
        dedup_failures(&mut response);
        if self.inner.flow.fail_when_all_failed
            && count > 0
            && response.batch_item_failures.len() == count
        {
            observe::emf::flush();
            return Err(EventError::AllFailed { records: count });
        }
        // CloudWatch EMF lines for this invocation (a no-op unless the EMF
        // recorder is installed, as `sqs_worker::run` does inside Lambda).
        observe::emf::flush();
        Ok(response)
    }

    async fn process(
        &self,
        mut messages: Vec<Message>,
        deadline: Option<Instant>,
        invocation: Option<Instant>,
        response: &mut SqsBatchResponse,
    ) {
        let breaker = self.inner.flow.breaker.as_ref();
        #[cfg(feature = "sqs-client")]
        let budget = self.inner.flow.redrive.as_ref().map(|r| r.budget());
        #[cfg(not(feature = "sqs-client"))]
        let budget = None;
        let mut held =
            breaker.map_or_else(Vec::new, |b| crate::flow::hold(b, &mut messages, budget));
        if let Some(limit) = self.inner.flow.group_limit {
            held.extend(crate::flow::limit_groups(limit, &mut messages));
        }
        #[cfg(feature = "sqs-client")]
        if let Some(settler) = &self.inner.client {
            let mut failed = held;
            let ran_from = failed.len();
            // Failures the breaker held away longer (index in `failed`, at least this long).
            let mut holds = Vec::new();
            self.run_records(messages, deadline, |s| {
                // What `CircuitBreaker::settle` does, keeping the hold.
                let hold = breaker.and_then(|b| b.record(Verdict::of(&s)));
                if let sqs_worker_core::runner::Outcome::Failed(mut f) = s.outcome {
                    if let Some(h) = hold {
                        f.retry_delay = f.retry_delay.max(h);
                        holds.push((failed.len(), h));
                    }
                    failed.push((s.message, f));
                }
            })
            .await;
            // The queue's `maxReceiveCount` at its first need: the first
            // invocation in which a handler failed (`redrive.rs`).
            if let Some(r) = &self.inner.flow.redrive
                && r.pending()
                && failed.len() > ran_from
            {
                let arn = failed[ran_from].0.source();
                // Boxed: once per container (see `run_records`).
                if Box::pin(r.learn(settler.client(), arn)).await {
                    crate::redrive::redelay(r.budget(), &mut failed[ran_from..]);
                    for (i, h) in holds {
                        let f = &mut failed[i].1;
                        f.retry_delay = f.retry_delay.max(h);
                    }
                }
            }
            return settler.settle(failed, invocation, response).await;
        }
        let _ = invocation;
        for (m, _) in &held {
            response.add_failure(m.id());
        }
        self.run_records(messages, deadline, |s| {
            if let Some(b) = breaker {
                b.record(Verdict::of(&s));
            }
            if !s.is_success() {
                response.add_failure(s.message.id());
            }
        })
        .await;
    }

    /// Runs the records through the processor, paced by the rate limit when
    /// there is one.
    async fn run_records<S: FnMut(Settled) + Send>(
        &self,
        messages: Vec<Message>,
        deadline: Option<Instant>,
        settle: S,
    ) {
        match &self.inner.flow.rate {
            None => {
                self.inner
                    .processor
                    .process(messages, deadline, settle)
                    .await
            }
            // Boxed: off the hot path, and it keeps the service future's
            // type shallow (deeply nested futures overflow rustc's layout
            // query depth in programs such as `examples/idempotency.rs`).
            Some(rate) => {
                Box::pin(crate::pace::run_paced(
                    &self.inner.processor,
                    rate,
                    messages,
                    deadline,
                    settle,
                ))
                .await
            }
        }
    }

    /// The leases of this invocation's messages, made once and cloned per
    /// record.
    fn leases(&self, deadline: Option<Instant>) -> InvocationLeases {
        InvocationLeases {
            fixed: match deadline {
                Some(d) => Visibility::fixed(d, FIXED_LEASE),
                None => Visibility::unbacked(),
            },
            #[cfg(feature = "sqs-client")]
            extendable: self.inner.client.as_ref().map(|settler| {
                // The handler stops at the deadline whatever SQS's
                // visibility: an extension never moves it later.
                let lease = Visibility::extendable(deadline, settler.visibility());
                match deadline {
                    Some(d) => lease.capped_at(d),
                    None => lease,
                }
            }),
        }
    }
}

/// An invocation's lease templates.
struct InvocationLeases {
    /// For records the adapter cannot extend.
    fixed: Visibility,
    /// With an SQS client: for records with a receipt handle and queue ARN.
    #[cfg(feature = "sqs-client")]
    extendable: Option<Visibility>,
}

impl InvocationLeases {
    fn for_record(&self, has_handle: bool, arn: Option<&str>) -> Visibility {
        #[cfg(feature = "sqs-client")]
        if let Some(lease) = &self.extendable
            && has_handle
            && arn.is_some()
        {
            return lease.clone();
        }
        let _ = (has_handle, arn);
        self.fixed.clone()
    }
}

/// Removes repeated `itemIdentifier`s, keeping the first of each (what
/// Lambda reads; the order carries no meaning). Costs nothing without failures.
fn dedup_failures(response: &mut SqsBatchResponse) {
    let failures = &mut response.batch_item_failures;
    if failures.len() < 2 {
        return;
    }
    let mut seen = std::collections::HashSet::with_capacity(failures.len());
    failures.retain(|f| seen.insert(f.item_identifier.clone()));
}

/// The invocation's span (none when no subscriber takes INFO spans), named
/// after the queue of the first record. It carries the request id
/// (`faas.invocation_id`), the X-Ray trace id when Lambda passes one
/// (`xray_trace_id`) and `cold_start = true` on a container's first
/// invocation, so every line logged while a record is handled names its
/// invocation (JSON lines list their enclosing spans).
fn batch_span(
    first_arn: Option<&str>,
    count: usize,
    context: &Context,
    cold: bool,
) -> tracing::Span {
    if observe::info_spans_off() {
        return tracing::Span::none();
    }
    let queue = first_arn
        .and_then(|arn| arn.rsplit(':').next())
        .unwrap_or_default();
    tracing::info_span!(
        "sqs.batch",
        otel.kind = "consumer",
        messaging.system = "aws_sqs",
        messaging.operation.name = "process",
        messaging.operation.type = "process",
        messaging.destination.name = queue,
        messaging.batch.message_count = count,
        faas.invocation_id = context.request_id.as_str(),
        xray_trace_id = context.xray_trace_id.as_deref(),
        cold_start = cold.then_some(true),
    )
}

fn blocked(groups: &[String], m: &Message) -> bool {
    !groups.is_empty()
        && m.fifo_group_id()
            .is_some_and(|g| groups.iter().any(|b| b == g))
}

/// On the first invocation: a warning when the safety margin leaves the
/// handlers no time to run in what the function has `left` (its timeout, on
/// a cold start); every record would be reported unstarted.
fn margin_warning(left: Option<Duration>, margin: Duration) -> Option<String> {
    let left = left?;
    (margin >= left).then(|| {
        format!(
            "the safety margin ({margin:?}, SQS_WORKER_SAFETY_MARGIN_SECONDS) is not below the \
             {left:?} this invocation has: no record can run, every one is reported unstarted; \
             lower the margin or raise the function timeout"
        )
    })
}

/// Deadlines below this (2001-09-09) are not Unix times in milliseconds.
const MIN_EPOCH_MS: u64 = 1_000_000_000_000;

/// The invocation deadline as an [`Instant`]; `None` when the context has
/// none: 0, as in `Context::default()`, or a value that is no Unix time in
/// milliseconds (`cargo lambda watch` sends the function timeout, `600000`,
/// instead; such an invocation runs without a deadline, with a warning).
fn invocation_deadline(context: &Context, now: Instant) -> Option<Instant> {
    if context.deadline < MIN_EPOCH_MS {
        if context.deadline != 0 {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    deadline_ms = context.deadline,
                    "the invocation deadline is not a Unix time in milliseconds (a local \
                     emulator?): running without a deadline"
                );
            }
        }
        return None;
    }
    Some(match context.deadline().duration_since(SystemTime::now()) {
        Ok(left) => now + left,
        Err(_) => now,
    })
}

impl<P: Processor> Service<LambdaEvent<SqsEvent>> for LambdaService<P> {
    type Response = SqsBatchResponse;
    type Error = EventError;
    type Future = Pin<Box<dyn Future<Output = Result<SqsBatchResponse, EventError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), EventError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: LambdaEvent<SqsEvent>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.handle(req.payload, &req.context).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15 §6: the safety margin is checked against what the first
    /// invocation has left.
    #[test]
    fn a_safety_margin_that_leaves_no_time_is_warned_about() {
        let s = Duration::from_secs;
        assert!(margin_warning(Some(s(3)), s(1)).is_none());
        assert!(margin_warning(None, s(1)).is_none(), "no deadline");
        let w = margin_warning(Some(s(2)), s(2)).expect("a warning");
        assert!(w.contains("SQS_WORKER_SAFETY_MARGIN_SECONDS"), "{w}");
        assert!(margin_warning(Some(s(1)), s(5)).is_some());
    }
}
