//! The engine: runs a batch through a handler and reports every message.
//!
//! Runners hand it messages and settle what it reports; they never decide
//! what success means. It owns the processing rules:
//! - bounded concurrency, each message its own future (or task), so one slow
//!   message never holds back the others;
//! - FIFO: messages with a group id run strictly in order within their group,
//!   groups in parallel; after a failure the rest of the group in the batch is
//!   reported [`FailureKind::GroupBlocked`] without running;
//! - a panic fails that message only ([`FailureKind::Panicked`], with the
//!   panic text);
//! - an optional per-message time limit ([`FailureKind::TimedOut`]);
//! - an optional batch deadline: messages not started when its safety margin
//!   is reached are [`FailureKind::Unstarted`], messages still running at the
//!   deadline [`FailureKind::DeadlineExceeded`];
//! - the retry delay of each failure, from the [`RetryPolicy`].

mod lanes;
mod outcome;

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tracing::Instrument;

use self::lanes::Lanes;
pub(crate) use self::outcome::kind_of as outcome_kind;
use self::outcome::kind_of;
pub use self::outcome::{BatchReport, Failure, FailureKind, Outcome, Settled};
use crate::error::Error;
use crate::handler::{Handler, IntoHandler};
use crate::message::Message;
use crate::observe;
use crate::retry::{ExponentialBackoff, RetryPolicy};

/// How handler futures are driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Execution {
    /// Each message is polled inside the batch's own task: the messages of a
    /// batch interleave at their awaits, and separate batches (the poller
    /// runs each receive as a task) use the other worker threads. Cheapest;
    /// a handler that computes for long without awaiting holds back the rest
    /// of its batch meanwhile. The default of both runners.
    #[default]
    Inline,
    /// Each message is its own `tokio` task, so handlers that compute for
    /// long stretches use every worker thread even within one batch; costs
    /// a task per message.
    Spawn,
}

/// Engine settings. Build with [`EngineConfig::default`] and the setters.
#[derive(Clone)]
pub struct EngineConfig {
    concurrency: usize,
    execution: Execution,
    handler_timeout: Option<Duration>,
    pub(crate) start_margin: Duration,
    retry: Arc<dyn RetryPolicy>,
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("concurrency", &self.concurrency)
            .field("execution", &self.execution)
            .field("handler_timeout", &self.handler_timeout)
            .field("start_margin", &self.start_margin)
            .finish_non_exhaustive()
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            execution: Execution::Inline,
            handler_timeout: None,
            start_margin: Duration::ZERO,
            retry: Arc::new(ExponentialBackoff::default()),
        }
    }
}

impl EngineConfig {
    /// At most `n` handlers run at once within a batch (at least 1).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How handler futures are driven.
    #[must_use]
    pub fn execution(mut self, execution: Execution) -> Self {
        self.execution = execution;
        self
    }

    /// Stop a handler after `limit` and fail its message ([`FailureKind::TimedOut`]).
    #[must_use]
    pub fn handler_timeout(mut self, limit: Option<Duration>) -> Self {
        self.handler_timeout = limit;
        self
    }

    /// With a batch deadline, start no message when less than `margin` is left.
    #[must_use]
    pub fn start_margin(mut self, margin: Duration) -> Self {
        self.start_margin = margin;
        self
    }

    /// The retry policy that sets each failure's retry delay.
    #[must_use]
    pub fn retry_policy(mut self, policy: impl RetryPolicy) -> Self {
        self.retry = Arc::new(policy);
        self
    }

    /// The retry policy, shared.
    #[must_use]
    pub fn retry_policy_arc(mut self, policy: Arc<dyn RetryPolicy>) -> Self {
        self.retry = policy;
        self
    }

    /// The configured concurrency.
    pub fn get_concurrency(&self) -> usize {
        self.concurrency
    }

    /// The configured per-message time limit.
    pub fn get_handler_timeout(&self) -> Option<Duration> {
        self.handler_timeout
    }

    /// The retry policy.
    pub fn get_retry_policy(&self) -> &Arc<dyn RetryPolicy> {
        &self.retry
    }

    pub(crate) fn failure(&self, msg: &Message, kind: FailureKind, error: Error) -> Failure {
        let retry_delay = match kind {
            FailureKind::Unstarted | FailureKind::GroupBlocked => Duration::ZERO,
            _ => self.retry.delay(msg.receive_count(), &error),
        };
        Failure {
            kind,
            error,
            retry_delay,
        }
    }
}

/// What runners drive: a batch in, every message settled exactly once out.
///
/// [`Engine`] (one message at a time) and [`BatchEngine`](crate::BatchEngine)
/// (the whole batch at once) implement it.
pub trait Processor: Clone + Send + Sync + 'static {
    /// Processes `batch`, calling `settle` once per message as each finishes.
    /// With a `deadline`, returns by then.
    fn process<S>(
        &self,
        batch: Vec<Message>,
        deadline: Option<Instant>,
        settle: S,
    ) -> impl Future<Output = ()> + Send
    where
        S: FnMut(Settled) + Send;

    /// The engine settings.
    fn config(&self) -> &EngineConfig;

    /// Processes `batch` and collects the report.
    fn run(
        &self,
        batch: Vec<Message>,
        deadline: Option<Instant>,
    ) -> impl Future<Output = BatchReport> + Send {
        async move {
            let mut settled = Vec::with_capacity(batch.len());
            self.process(batch, deadline, |s| settled.push(s)).await;
            BatchReport { settled }
        }
    }
}

/// Runs a [`Handler`] over batches.
pub struct Engine<H> {
    handler: Arc<H>,
    config: Arc<EngineConfig>,
}

impl<H> Clone for Engine<H> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            config: self.config.clone(),
        }
    }
}

impl<H> std::fmt::Debug for Engine<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Engine<H> {
    /// An engine with default settings.
    pub fn new<A, F: IntoHandler<A, Handler = H>>(handler: F) -> Self {
        Self::with_config(handler, EngineConfig::default())
    }

    /// An engine with `config`.
    pub fn with_config<A, F: IntoHandler<A, Handler = H>>(
        handler: F,
        config: EngineConfig,
    ) -> Self {
        Self {
            handler: Arc::new(handler.into_handler()),
            config: Arc::new(config),
        }
    }

    /// The handler.
    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }
}

/// One attempt's result, before the retry policy.
enum Attempt {
    Ok,
    Err(Error),
    Panicked(String),
    TimedOut(Duration),
}

pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Runs one handler. With a time `limit` (counted from `started`), the
/// handler is polled once first: one that finishes without waiting (most do)
/// never needs a timer, so only handlers that wait pay for one.
async fn attempt<H: Handler>(
    handler: &H,
    msg: Message,
    limit: Option<Duration>,
    started: tokio::time::Instant,
) -> Attempt {
    let fut = AssertUnwindSafe(handler.handle(msg)).catch_unwind();
    let res = match limit {
        None => fut.await,
        Some(limit) => {
            let mut fut = std::pin::pin!(fut);
            match poll_once(fut.as_mut()).await {
                Poll::Ready(r) => r,
                Poll::Pending => match tokio::time::timeout_at(started + limit, fut).await {
                    Ok(r) => r,
                    Err(_) => return Attempt::TimedOut(limit),
                },
            }
        }
    };
    match res {
        Ok(Ok(())) => Attempt::Ok,
        Ok(Err(e)) => Attempt::Err(e),
        Err(payload) => Attempt::Panicked(panic_text(&*payload)),
    }
}

pin_project_lite::pin_project! {
    /// A running message: either polled in place or a spawned task.
    #[project = RunningProj]
    enum Running<F> {
        Inline { #[pin] fut: F },
        Task { handle: AbortOnDrop },
    }
}

/// A spawned handler task, aborted when dropped (batch deadline reached).
struct AbortOnDrop(tokio::task::JoinHandle<Attempt>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pin_project_lite::pin_project! {
    struct Tagged<F> {
        index: u32,
        started: tokio::time::Instant,
        #[pin]
        running: Running<F>,
    }
}

impl<F: Future<Output = Attempt>> Future for Tagged<F> {
    type Output = (u32, tokio::time::Instant, Attempt);
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = match this.running.project() {
            RunningProj::Inline { fut } => fut.poll(cx),
            RunningProj::Task { handle } => Pin::new(&mut handle.0).poll(cx).map(|r| match r {
                Ok(a) => a,
                Err(e) if e.is_panic() => Attempt::Panicked(panic_text(&*e.into_panic())),
                Err(_) => Attempt::Panicked("handler task was cancelled".to_owned()),
            }),
        };
        res.map(|a| (*this.index, *this.started, a))
    }
}

impl<H: Handler> Processor for Engine<H> {
    fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn process<S>(
        &self,
        batch: Vec<Message>,
        deadline: Option<Instant>,
        settle: S,
    ) -> impl Future<Output = ()> + Send
    where
        S: FnMut(Settled) + Send,
    {
        drive(self, batch, deadline, settle)
    }
}

async fn drive<H: Handler, S: FnMut(Settled) + Send>(
    engine: &Engine<H>,
    batch: Vec<Message>,
    deadline: Option<Instant>,
    mut settle: S,
) {
    let cfg = &*engine.config;
    let mut st = State {
        cfg,
        lanes: Lanes::plan(&batch),
        slots: batch.into_iter().map(Some).collect(),
        in_flight: Vec::new(),
        tally: observe::Tally::default(),
    };
    st.in_flight = vec![false; st.slots.len()];
    // tokio's clock (equal to std's, except under a paused test clock).
    let deadline = deadline.map(tokio::time::Instant::from_std);
    let start_by = deadline.map(|d| d.checked_sub(cfg.start_margin).unwrap_or(d));
    let limit = cfg.handler_timeout;
    // Both made on first need: a batch whose handlers all finish on their
    // first poll needs neither (each costs allocations).
    let mut running = None;
    let mut sleep = None;
    // Inline: the box of the last handler future that finished on its first
    // poll, reused for the next one (most handlers finish without waiting, so
    // a batch allocates one box instead of one task per message).
    let mut spare = None;

    loop {
        if len(&running) < cfg.concurrency && st.lanes.has_ready() {
            // One clock read for every message started in this round.
            let now = tokio::time::Instant::now();
            if start_by.is_some_and(|s| now >= s) {
                if len(&running) == 0 {
                    return st.finish_unstarted(&mut settle);
                }
                // Let the running ones finish (until the deadline); start nothing more.
                st.lanes.clear_ready();
                for (i, slot) in st.slots.iter_mut().enumerate() {
                    if !st.in_flight[i]
                        && let Some(m) = slot.take()
                    {
                        unstarted(cfg, m, &mut settle, &mut st.tally);
                    }
                }
            }
            let mut done_now = 0;
            while len(&running) < cfg.concurrency {
                let Some(i) = st.lanes.pop_ready() else {
                    break;
                };
                let Some(msg) = st.slots[i as usize].clone() else {
                    continue;
                };
                let span = observe::message_span(&msg);
                st.in_flight[i as usize] = true;
                let run = match cfg.execution {
                    Execution::Inline => {
                        // Polled only inside this batch: it may borrow the handler.
                        let fut = attempt(&*engine.handler, msg, limit, now).instrument(span);
                        let mut fut = boxed(&mut spare, fut);
                        // First poll now: a handler that finishes without
                        // waiting settles at once, without joining the set.
                        if let Poll::Ready(a) = poll_once(fut.as_mut()).await {
                            spare = Some(fut);
                            // Its handler time is read with the others of this
                            // round, once, below.
                            st.complete(i, None, a, &mut settle);
                            done_now += 1;
                            continue;
                        }
                        Running::Inline { fut }
                    }
                    Execution::Spawn => {
                        let h = engine.handler.clone();
                        let fut =
                            async move { attempt(&*h, msg, limit, now).await }.instrument(span);
                        Running::Task {
                            handle: AbortOnDrop(tokio::spawn(fut)),
                        }
                    }
                };
                running
                    .get_or_insert_with(FuturesUnordered::new)
                    .push(Tagged {
                        index: i,
                        started: now,
                        running: run,
                    });
            }
            // One clock read for every handler that finished on its first poll
            // in this round (each timed from the round's start, as before).
            if done_now > 0 {
                st.tally.handler_times(now.elapsed(), done_now);
            }
        }
        let Some(set) = running.as_mut().filter(|r| !r.is_empty()) else {
            break;
        };
        let next = match deadline {
            None => set.next().await,
            Some(d) => {
                let sleep = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(d)));
                tokio::select! {
                    biased;
                    r = set.next() => r,
                    () = sleep.as_mut() => {
                        drop(running);
                        return st.finish_unstarted(&mut settle);
                    }
                }
            }
        };
        let Some((i, started, result)) = next else {
            break;
        };
        st.complete(i, Some(started), result, &mut settle);
    }
}

/// How many messages are running.
fn len<T>(running: &Option<FuturesUnordered<T>>) -> usize {
    running.as_ref().map_or(0, FuturesUnordered::len)
}

/// `fut` in the spare box if there is one, else in a new one.
fn boxed<F>(spare: &mut Option<Pin<Box<F>>>, fut: F) -> Pin<Box<F>> {
    match spare.take() {
        Some(mut b) => {
            b.set(fut);
            b
        }
        None => Box::pin(fut),
    }
}

/// Polls `fut` once with the current task's context.
async fn poll_once<F: Future + ?Sized>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

/// A batch in progress: who may start, who is running, what is left.
struct State<'a> {
    cfg: &'a EngineConfig,
    lanes: Lanes,
    slots: Vec<Option<Message>>,
    in_flight: Vec<bool>,
    tally: observe::Tally,
}

impl State<'_> {
    /// Settles message `i`, whose handler (started at `started`; `None`: the
    /// caller records its time) returned `result`, and readies or blocks the
    /// rest of its FIFO group.
    fn complete<S: FnMut(Settled)>(
        &mut self,
        i: u32,
        started: Option<tokio::time::Instant>,
        result: Attempt,
        settle: &mut S,
    ) {
        let cfg = self.cfg;
        self.in_flight[i as usize] = false;
        let Some(msg) = self.slots[i as usize].take() else {
            return;
        };
        let outcome = match result {
            Attempt::Ok => Outcome::Succeeded,
            Attempt::Err(e) => {
                let kind = kind_of(&e);
                Outcome::Failed(cfg.failure(&msg, kind, e))
            }
            Attempt::Panicked(text) => Outcome::Failed(cfg.failure(
                &msg,
                FailureKind::Panicked,
                Error::msg(format_args!("handler panicked: {text}")),
            )),
            Attempt::TimedOut(limit) => Outcome::Failed(cfg.failure(
                &msg,
                FailureKind::TimedOut,
                Error::msg(format_args!(
                    "handler ran past its {limit:?} limit and was stopped"
                )),
            )),
        };
        let failed = matches!(outcome, Outcome::Failed(_));
        self.tally
            .record(&msg, &outcome, started.map(|t| t.elapsed()));
        if failed && msg.group_id().is_some() {
            let blocked: Vec<u32> = self.lanes.rest_of_lane(i).collect();
            settle(Settled {
                message: msg,
                outcome,
            });
            for j in blocked {
                if let Some(m) = self.slots[j as usize].take() {
                    let e = Error::msg("an earlier message of its FIFO group failed in this batch");
                    let outcome = Outcome::Failed(cfg.failure(&m, FailureKind::GroupBlocked, e));
                    self.tally.record(&m, &outcome, None);
                    settle(Settled {
                        message: m,
                        outcome,
                    });
                }
            }
        } else {
            let next = self.lanes.next(i);
            settle(Settled {
                message: msg,
                outcome,
            });
            if !failed && next != lanes::NONE {
                self.lanes.push_ready(next);
            }
        }
    }

    /// Settles every message still in `slots`: those in `in_flight` as
    /// [`FailureKind::DeadlineExceeded`], the rest as [`FailureKind::Unstarted`].
    fn finish_unstarted<S: FnMut(Settled)>(&mut self, settle: &mut S) {
        finish_unstarted(
            self.cfg,
            &mut self.slots,
            &self.in_flight,
            settle,
            &mut self.tally,
        );
    }
}

/// Settles every message still in `slots`: those in `in_flight` as
/// [`FailureKind::DeadlineExceeded`], the rest as [`FailureKind::Unstarted`].
fn finish_unstarted<S: FnMut(Settled)>(
    cfg: &EngineConfig,
    slots: &mut [Option<Message>],
    in_flight: &[bool],
    settle: &mut S,
    tally: &mut observe::Tally,
) {
    for (i, slot) in slots.iter_mut().enumerate() {
        let Some(m) = slot.take() else { continue };
        if in_flight[i] {
            let e = Error::msg("still running at the batch deadline; stopped");
            let outcome = Outcome::Failed(cfg.failure(&m, FailureKind::DeadlineExceeded, e));
            tally.record(&m, &outcome, None);
            settle(Settled {
                message: m,
                outcome,
            });
        } else {
            unstarted(cfg, m, settle, tally);
        }
    }
}

fn unstarted<S: FnMut(Settled)>(
    cfg: &EngineConfig,
    m: Message,
    settle: &mut S,
    tally: &mut observe::Tally,
) {
    let e = Error::msg("not started: too close to the batch deadline");
    let outcome = Outcome::Failed(cfg.failure(&m, FailureKind::Unstarted, e));
    tally.record(&m, &outcome, None);
    settle(Settled {
        message: m,
        outcome,
    });
}

#[cfg(test)]
mod tests;
