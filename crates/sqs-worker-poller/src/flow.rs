//! The receive loop's flow-control hooks: the circuit breaker (issue 16).
//! Without a breaker each hook is one `Option` check per receive or batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput;
use sqs_worker_core::flow::{Admit, CircuitBreaker};
use sqs_worker_core::runner::{Processor, Settled};
use tokio::sync::OwnedSemaphorePermit;

use crate::handoff::Handoff;
use crate::limits::Adaptive;
use crate::receive::Receiver;
use crate::stats::Stats;

impl<P: Processor> Receiver<P> {
    /// The capacity the breaker lets this receive use: all of it (no
    /// breaker, or closed), one message (half-open), or none and how long to
    /// wait (open).
    pub(crate) fn admit(
        &self,
        mut permits: OwnedSemaphorePermit,
    ) -> Result<OwnedSemaphorePermit, Duration> {
        let Some(breaker) = &self.breaker else {
            return Ok(permits);
        };
        match breaker.admit(permits.num_permits()) {
            Admit::All => Ok(permits),
            Admit::Probe(n) => permits.split(n).ok_or(Duration::ZERO),
            Admit::Wait(d) => Err(d),
        }
    }

    /// A receive admitted as a probe brought nothing: the probe may go again.
    pub(crate) fn probe_unused(&self) {
        if let Some(b) = &self.breaker {
            b.probe_returned();
        }
    }

    /// What a receive brought while the breaker opened during its wait: each
    /// message is made visible again after the rest of the cool-down,
    /// without running. `None` (the output back) when the breaker is closed.
    pub(crate) fn release_while_open(
        &self,
        out: ReceiveMessageOutput,
        mut permits: OwnedSemaphorePermit,
    ) -> Option<(ReceiveMessageOutput, OwnedSemaphorePermit)> {
        let Some(delay) = self.breaker.as_ref().and_then(|b| b.release_delay()) else {
            return Some((out, permits));
        };
        let now = Instant::now();
        let messages = out.messages.unwrap_or_default();
        if !messages.is_empty() {
            tracing::info!(
                messages = messages.len(),
                delay_ms = delay.as_millis() as u64,
                "circuit open: releasing received messages unstarted until the cool-down ends"
            );
        }
        for m in messages {
            if let Some(message) = self.convert(m, now + self.visibility) {
                Stats::add(&self.inflight.stats.received, 1);
                self.handoff.release(message, delay, now, permits.split(1));
            }
        }
        None
    }
}

/// The settle callback of a batch received at `received`: hands each result
/// to settlement, and with a breaker or adaptive concurrency counts it first.
pub(crate) fn settle_fn(
    handoff: Arc<Handoff>,
    breaker: Option<Arc<CircuitBreaker>>,
    adaptive: Option<Arc<Adaptive>>,
    received: Instant,
) -> impl FnMut(Settled) + Send + 'static {
    move |mut s: Settled| {
        if let Some(b) = &breaker {
            b.settle(&mut s);
        }
        if let Some(a) = &adaptive {
            a.record(&s, received);
        }
        handoff.settled(s);
    }
}
