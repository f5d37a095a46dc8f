//! The engine: runs a batch through a handler and reports every message.
//!
//! Runners hand it messages and settle what it reports; they never decide
//! what success means. It owns the processing rules:
//! - bounded concurrency, each message its own future (or task), so one slow
//!   message never holds back the others;
//! - FIFO: messages of a FIFO queue with a group id run strictly in order
//!   within their group, groups in parallel; after a failure the rest of the
//!   group in the batch is reported [`FailureKind::GroupBlocked`] without
//!   running. On a standard queue a group id is a fair-queue tenant label
//!   ([`Message::fifo_group_id`] is `None`): such messages run in parallel and
//!   one failure holds back nothing. With
//!   [`EngineConfig::fifo_stop_batch_on_failure`] a FIFO failure stops the
//!   whole batch: nothing more starts, the rest is [`FailureKind::Unstarted`];
//! - a panic fails that message only ([`FailureKind::Panicked`], with the
//!   panic text);
//! - an optional per-message time limit ([`FailureKind::TimedOut`]);
//! - an optional batch deadline: messages not started when its safety margin
//!   is reached are [`FailureKind::Unstarted`], messages still running at the
//!   deadline [`FailureKind::DeadlineExceeded`];
//! - the retry delay of each failure, from the [`RetryPolicy`](crate::RetryPolicy).

mod config;
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

pub use self::config::{EngineConfig, Execution};
use self::lanes::Lanes;
pub(crate) use self::outcome::kind_of as outcome_kind;
use self::outcome::kind_of;
pub use self::outcome::{BatchReport, Failure, FailureKind, Outcome, Settled};
use crate::error::Error;
use crate::handler::{Handler, IntoHandler};
use crate::message::Message;
use crate::runner::observe;
use crate::visibility::StartMark;

/// What runners drive: a batch in, every message settled exactly once out.
///
/// [`Engine`] (one message at a time) and [`BatchEngine`](crate::runner::BatchEngine)
/// (the whole batch at once) implement it.
pub trait Processor: Clone + Send + Sync + 'static {
    /// Processes `batch`, calling `settle` once per message as each finishes.
    /// With a `deadline`, returns by then. Marks each message as its handler
    /// starts ([`Visibility::mark_started`](crate::Visibility::mark_started)):
    /// the poller counts the maximum processing time from there.
    fn process<S>(
        &self,
        batch: Vec<Message>,
        deadline: Option<Instant>,
        settle: S,
    ) -> impl Future<Output = ()> + Send
    where
        S: FnMut(Settled) + Send;

    /// The longest one handler may run before the processor stops it, if
    /// it has such a limit (the [`EngineConfig::handler_timeout`] of
    /// [`Engine`] and [`BatchEngine`](crate::runner::BatchEngine)). The
    /// poller warns when a processor has none: a handler running past the
    /// maximum processing time would keep running while its message is
    /// handed to another consumer. Default: `None`.
    fn time_limit(&self) -> Option<Duration> {
        None
    }

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
    (started, mark): (tokio::time::Instant, StartMark),
) -> Attempt {
    // The poller counts the maximum processing time from here.
    msg.visibility().mark_started_at(mark);
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

    fn time_limit(&self) -> Option<Duration> {
        self.config.handler_timeout
    }
}

async fn drive<H: Handler, S: FnMut(Settled) + Send>(
    engine: &Engine<H>,
    batch: Vec<Message>,
    deadline: Option<Instant>,
    mut settle: S,
) {
    let cfg = &*engine.config;
    let mut st = State::new(cfg, batch);
    // tokio's clock (equal to std's, except under a paused test clock).
    let deadline = deadline.map(tokio::time::Instant::from_std);
    let start_by = deadline.map(|d| d.checked_sub(cfg.start_margin).unwrap_or(d));
    let (handler, limit) = (&*engine.handler, cfg.handler_timeout);
    // Polled only inside this batch: an inline handler future may borrow the handler.
    let inline = |msg, start, span| attempt(handler, msg, limit, start).instrument(span);
    // Both made on first need: a batch whose handlers all finish on their
    // first poll needs neither (each costs allocations).
    let mut running = None;
    let mut sleep = None;
    // The box of the last inline future that finished on its first poll, reused.
    let mut spare = None;

    loop {
        if len(&running) < cfg.concurrency && st.lanes.has_ready() {
            // One clock read for every message started in this round.
            let now = tokio::time::Instant::now();
            if start_by.is_some_and(|s| now >= s) {
                if len(&running) == 0 {
                    return st.finish_unstarted(&mut settle);
                }
                st.stop_starting(&mut settle, NEAR_DEADLINE);
            }
            let round = Round {
                engine,
                inline: &inline,
                now,
                mark: StartMark::of(now.into_std()),
            };
            round
                .start_ready(&mut st, &mut running, &mut spare, &mut settle)
                .await;
        }
        let Some(set) = running.as_mut().filter(|r| !r.is_empty()) else {
            break;
        };
        match next_finished(set, deadline, &mut sleep).await {
            Waited::Finished((i, started, result)) => {
                st.complete(i, Some(started), result, &mut settle);
            }
            Waited::Drained => break,
            Waited::Deadline => {
                drop(running);
                return st.finish_unstarted(&mut settle);
            }
        }
    }
}

/// The running handlers of a batch: inline futures (boxed, of type `F`) or tasks.
type RunningSet<F> = Option<FuturesUnordered<Tagged<Pin<Box<F>>>>>;

/// One round of starting messages: the engine, how to make an inline handler
/// future, and the round's start time (also as the messages' start mark).
struct Round<'a, H, M> {
    engine: &'a Engine<H>,
    inline: &'a M,
    now: tokio::time::Instant,
    mark: StartMark,
}

impl<H, M, F> Round<'_, H, M>
where
    H: Handler,
    M: Fn(Message, (tokio::time::Instant, StartMark), tracing::Span) -> F,
    F: Future<Output = Attempt>,
{
    /// Starts ready messages until the concurrency limit; an inline handler
    /// that finishes on its first poll settles at once, without joining `running`.
    async fn start_ready<S: FnMut(Settled)>(
        &self,
        st: &mut State<'_>,
        running: &mut RunningSet<F>,
        spare: &mut Option<Pin<Box<F>>>,
        settle: &mut S,
    ) {
        let cfg = st.cfg;
        let (now, mark) = (self.now, self.mark);
        let mut done_now = 0;
        while len(running) < cfg.concurrency {
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
                    let mut fut = boxed(spare, (self.inline)(msg, (now, mark), span));
                    if let Poll::Ready(a) = poll_once(fut.as_mut()).await {
                        *spare = Some(fut);
                        // Timed with the others of this round, below.
                        st.complete(i, None, a, settle);
                        done_now += 1;
                        continue;
                    }
                    Running::Inline { fut }
                }
                Execution::Spawn => {
                    let (h, limit) = (self.engine.handler.clone(), cfg.handler_timeout);
                    let fut =
                        async move { attempt(&*h, msg, limit, (now, mark)).await }.instrument(span);
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
        // One clock read for every handler that finished on its first poll.
        if done_now > 0 {
            st.tally.handler_times(now.elapsed(), done_now);
        }
    }
}

/// What waiting on the running set gave.
enum Waited<T> {
    /// A message finished.
    Finished(T),
    /// Nothing is running any more.
    Drained,
    /// The batch deadline was reached first.
    Deadline,
}

/// Waits for the next running message to finish, or for the batch deadline
/// (its timer made on first need, in `sleep`).
async fn next_finished<St: futures_util::Stream + Unpin>(
    set: &mut St,
    deadline: Option<tokio::time::Instant>,
    sleep: &mut Option<Pin<Box<tokio::time::Sleep>>>,
) -> Waited<St::Item> {
    let next = match deadline {
        None => set.next().await,
        Some(d) => {
            let sleep = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(d)));
            tokio::select! {
                biased;
                r = set.next() => r,
                () = sleep.as_mut() => return Waited::Deadline,
            }
        }
    };
    next.map_or(Waited::Drained, Waited::Finished)
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

impl<'a> State<'a> {
    /// The batch, none of it started.
    fn new(cfg: &'a EngineConfig, batch: Vec<Message>) -> Self {
        let n = batch.len();
        Self {
            cfg,
            lanes: Lanes::plan(&batch),
            slots: batch.into_iter().map(Some).collect(),
            in_flight: vec![false; n],
            tally: observe::Tally::default(),
        }
    }

    /// The start margin is reached: start nothing more and settle every
    /// message not yet started [`FailureKind::Unstarted`]; running ones go on
    /// until the deadline.
    fn stop_starting<S: FnMut(Settled)>(&mut self, settle: &mut S, why: &'static str) {
        self.lanes.clear_ready();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if !self.in_flight[i]
                && let Some(m) = slot.take()
            {
                unstarted(self.cfg, m, settle, &mut self.tally, why);
            }
        }
    }

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
        if failed && msg.fifo_group_id().is_some() {
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
            if cfg.fifo_stop_batch_on_failure {
                self.stop_starting(settle, STOPPED_AT_FAILURE);
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
            unstarted(cfg, m, settle, tally, NEAR_DEADLINE);
        }
    }
}

/// Why a message was not started: the batch deadline's margin.
const NEAR_DEADLINE: &str = "not started: too close to the batch deadline";
/// Why a message was not started: [`EngineConfig::fifo_stop_batch_on_failure`].
const STOPPED_AT_FAILURE: &str =
    "not started: an earlier message of this FIFO batch failed (fifo_stop_batch_on_failure)";

fn unstarted<S: FnMut(Settled)>(
    cfg: &EngineConfig,
    m: Message,
    settle: &mut S,
    tally: &mut observe::Tally,
    why: &'static str,
) {
    let e = Error::msg(why);
    let outcome = Outcome::Failed(cfg.failure(&m, FailureKind::Unstarted, e));
    tally.record(&m, &outcome, None);
    settle(Settled {
        message: m,
        outcome,
    });
}

#[cfg(test)]
mod tests;
