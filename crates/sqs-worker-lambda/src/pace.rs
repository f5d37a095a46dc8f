//! The rate limit in Lambda (issue 16 §3): handlers of one invocation start
//! at most `n` per second, taking tokens from a bucket a warm container
//! keeps across invocations.
//!
//! The records are all in hand, so the service hands them to the processor
//! in rounds: each round takes what the bucket holds (see
//! [`RateLimiter`]) and runs to its end before the next round waits for
//! tokens. A round's records run concurrently up to the engine's
//! concurrency; a slow record holds the next round back. Records whose
//! tokens would come after the invocation's deadline do not start: they are
//! reported unstarted (retry delay 0). On a FIFO queue, the later records
//! of a group that failed in an earlier round are reported blocked, as the
//! engine does within one round.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqs_worker_core::flow::RateLimiter;
use sqs_worker_core::runner::{Failure, FailureKind, Outcome, Processor, Settled};
use sqs_worker_core::{Error, Message};

/// Runs `messages` through `processor` in rounds paced by `limiter`.
pub(crate) async fn run_paced<P: Processor, S: FnMut(Settled) + Send>(
    processor: &P,
    limiter: &Arc<RateLimiter>,
    mut messages: Vec<Message>,
    deadline: Option<Instant>,
    mut settle: S,
) {
    let mut failed_groups: HashSet<String> = HashSet::new();
    while !messages.is_empty() {
        let Some(mut tokens) = reserve(limiter, messages.len(), deadline).await else {
            for m in messages.drain(..) {
                settle(not_run(
                    m,
                    FailureKind::Unstarted,
                    "the rate limit's next token comes after the invocation deadline",
                ));
            }
            return;
        };
        let rest = messages.split_off(tokens.tokens().min(messages.len()));
        let round = std::mem::replace(&mut messages, rest);
        let mut run = Vec::with_capacity(round.len());
        for m in round {
            if m.fifo_group_id().is_some_and(|g| failed_groups.contains(g)) {
                settle(not_run(
                    m,
                    FailureKind::GroupBlocked,
                    "an earlier record of its FIFO group failed",
                ));
            } else {
                run.push(m);
            }
        }
        tokens.consume(run.len());
        drop(tokens);
        processor
            .process(run, deadline, |s: Settled| {
                if !s.is_success()
                    && let Some(g) = s.message.fifo_group_id()
                {
                    failed_groups.insert(g.to_owned());
                }
                settle(s);
            })
            .await;
    }
}

/// Tokens for up to `wanted` records, waiting for them unless they would
/// come after `deadline`.
async fn reserve(
    limiter: &Arc<RateLimiter>,
    wanted: usize,
    deadline: Option<Instant>,
) -> Option<sqs_worker_core::flow::Reservation> {
    loop {
        match limiter.try_reserve(wanted) {
            Ok(r) => return Some(r),
            Err(wait) => {
                if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                    return None;
                }
                tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
            }
        }
    }
}

fn not_run(message: Message, kind: FailureKind, why: &'static str) -> Settled {
    Settled {
        message,
        outcome: Outcome::Failed(Failure {
            kind,
            error: Error::msg(format!("not run: {why}")),
            retry_delay: Duration::ZERO,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use lambda_runtime::Context;
    use sqs_worker_core::flow::RateLimit;
    use sqs_worker_core::runner::Engine;
    use tokio::time::Instant as TokioInstant;

    use super::*;
    use crate::LambdaRunner;
    use crate::testing::{event, failed_ids, fifo_record, record};

    /// 50 records at 10 per second (burst 5): the starts in any second stay
    /// at most 10 + 5, all run, and a warm container's next invocation
    /// finds the bucket as the last left it.
    #[tokio::test(start_paused = true)]
    async fn records_of_an_invocation_start_at_the_rate() {
        let t0 = TokioInstant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let s = starts.clone();
        let handler = move |_m: Message| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(t0.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, Error>(())
            }
        };
        let service = LambdaRunner::from_processor(Engine::new(handler))
            .rate_limit(RateLimit::per_second(10.0))
            .build()
            .unwrap();
        let ctx = Context::default();
        let resp = service
            .handle(event((0..50).map(|i| record(format!("m{i}"), "{}"))), &ctx)
            .await
            .unwrap();
        assert!(failed_ids(&resp).is_empty());
        let starts = starts.lock().unwrap().clone();
        assert_eq!(starts.len(), 50);
        for w in 0..60 {
            let from = Duration::from_millis(w * 100);
            let n = starts
                .iter()
                .filter(|t| **t >= from && **t < from + Duration::from_secs(1))
                .count();
            assert!(n <= 15, "{n} starts from {from:?}");
        }
        let last = starts.iter().max().copied().unwrap_or_default();
        assert!(
            (Duration::from_millis(4400)..Duration::from_secs(6)).contains(&last),
            "the 50th started at {last:?}"
        );
    }

    /// A FIFO group that fails in one round stays blocked in the next.
    #[tokio::test(start_paused = true)]
    async fn a_failed_fifo_group_stays_blocked_across_rounds() {
        let handler = |m: Message| async move {
            if m.id() == "a1" {
                return Err(Error::msg("down"));
            }
            Ok(())
        };
        let service = LambdaRunner::from_processor(Engine::new(handler))
            .rate_limit(RateLimit::per_second(1.0).burst(2))
            .build()
            .unwrap();
        let ev = event([
            fifo_record("a1", "A", "{}"),
            fifo_record("b1", "B", "{}"),
            fifo_record("a2", "A", "{}"),
            fifo_record("b2", "B", "{}"),
        ]);
        let resp = service.handle(ev, &Context::default()).await.unwrap();
        let mut failed = failed_ids(&resp);
        failed.sort();
        assert_eq!(failed, ["a1", "a2"]);
    }
}
