//! Flow control in Lambda (issue 16): the circuit breaker kept by a warm
//! container across invocations, failing the invocation when every record
//! failed, the rate limit (`pace`) and reading `maxReceiveCount` (`redrive`).
//! Without them, each hook is one `Option`/`bool` check per invocation or
//! record.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqs_worker_core::RetryPolicy;
use sqs_worker_core::flow::{
    Admit, CircuitBreaker, GroupAdmit, GroupLimit, RateLimiter, RetryBudget, limited_group,
};
use sqs_worker_core::runner::observe::names;
use sqs_worker_core::runner::{Failure, FailureKind};
use sqs_worker_core::{Error, Message};

/// The service's flow-control settings.
#[derive(Debug, Default)]
pub(crate) struct Flow {
    /// Shared by every invocation of this container.
    pub(crate) breaker: Option<CircuitBreaker>,
    /// `SQS_WORKER_FAIL_INVOCATION_WHEN_ALL_FAILED`.
    pub(crate) fail_when_all_failed: bool,
    /// The rate limit's bucket, shared by every invocation of this container.
    pub(crate) rate: Option<Arc<RateLimiter>>,
    /// The retry budget to tell the queue's `maxReceiveCount` (at its first need).
    #[cfg(feature = "sqs-client")]
    pub(crate) redrive: Option<crate::redrive::Redrive>,
    /// `SQS_WORKER_MAX_IN_FLIGHT_PER_GROUP`, and the queue's
    /// `maxReceiveCount` when known (`SQS_WORKER_MAX_RECEIVE_COUNT`).
    pub(crate) group_limit: Option<(usize, Option<u32>)>,
}

/// The records of this invocation over their fair-queue tenant's limit: of
/// each tenant (group id, standard queue) the first `limit` in the batch
/// run, the rest fail unstarted with a short delay
/// ([`release_delay`](sqs_worker_core::flow::release_delay)), which the SQS
/// client applies as their visibility (without one they come back after the
/// queue's visibility timeout). Counted in `sqs_worker_group_limited_total`.
pub(crate) fn limit_groups(
    (limit, max_receive_count): (usize, Option<u32>),
    messages: &mut Vec<Message>,
) -> Vec<(Message, Failure)> {
    if messages.iter().all(|m| limited_group(m).is_none()) {
        if messages.first().is_some_and(Message::is_fifo) {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "max_in_flight_per_group is ignored on a FIFO queue: each message group \
                     already runs one message at a time"
                );
            }
        }
        return Vec::new();
    }
    let groups = GroupLimit::new(limit, max_receive_count);
    let mut held = Vec::new();
    messages.retain(|m| match groups.admit(m) {
        GroupAdmit::Release(delay) => {
            let failure = Failure {
                kind: FailureKind::Unstarted,
                error: Error::msg("not run: its tenant is at max_in_flight_per_group"),
                retry_delay: delay,
            };
            held.push((m.clone(), failure));
            false
        }
        _ => true,
    });
    if !held.is_empty() {
        metrics::counter!(names::GROUP_LIMITED).increment(held.len() as u64);
        tracing::info!(
            records = held.len(),
            limit,
            "tenants at max_in_flight_per_group: reporting their further records without running them"
        );
    }
    held
}

/// The messages of this invocation the breaker does not let run: all of
/// them while it is open, all but the first when half-open (the probe). Each
/// fails unstarted with the rest of the cool-down (or the cool-down) as its
/// retry delay, which the SQS client applies as its visibility; with a retry
/// `budget`, at least the budget's delay for its receive count. The event
/// source mapping goes on delivering while the breaker is open, so each
/// delivery spends a receive: at the cool-down's pace (5 s doubling to
/// 5 min) `maxReceiveCount` 5 was spent within minutes and the messages went
/// to the DLQ; at the budget's pace an outage shorter than the retry window
/// dead-letters nothing, as it promises.
pub(crate) fn hold(
    breaker: &CircuitBreaker,
    messages: &mut Vec<Message>,
    budget: Option<&RetryBudget>,
) -> Vec<(Message, Failure)> {
    let (keep, delay) = match breaker.admit(messages.len()) {
        Admit::All => return Vec::new(),
        Admit::Probe(n) => (n, breaker.cool_down()),
        Admit::Wait(d) => (0, breaker.release_delay().unwrap_or(d)),
    };
    let held = messages.split_off(keep.min(messages.len()));
    if !held.is_empty() {
        tracing::info!(
            records = held.len(),
            delay_ms = delay.as_millis() as u64,
            "circuit {}: reporting records failed without running them",
            breaker.state().as_str()
        );
    }
    held.into_iter()
        .map(|m| {
            let error = Error::msg("not run: the circuit breaker is open");
            let paced = budget.map_or(Duration::ZERO, |b| b.delay(m.receive_count(), &error));
            let failure = Failure {
                kind: FailureKind::Unstarted,
                error,
                retry_delay: delay.max(paced).max(Duration::from_secs(1)),
            };
            (m, failure)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use lambda_runtime::Context;
    use sqs_worker_core::flow::BreakerConfig;
    use sqs_worker_core::runner::Engine;

    use super::*;
    use crate::LambdaRunner;
    use crate::testing::{event, failed_ids, record};

    /// Issue 16 §2 in Lambda: a dependency down, invocations of ten records
    /// in a loop on one warm container (one service). Once the breaker has
    /// opened, records are reported failed without running, except one probe
    /// per cool-down; after recovery the probe closes it and all run again.
    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_reports_records_without_running_them_until_a_probe_succeeds() {
        let down = Arc::new(AtomicBool::new(true));
        let calls = Arc::new(AtomicU64::new(0));
        let (d, c) = (down.clone(), calls.clone());
        let handler = move |_m: Message| {
            let (d, c) = (d.clone(), c.clone());
            async move {
                c.fetch_add(1, Ordering::Relaxed);
                if d.load(Ordering::Relaxed) {
                    return Err(Error::downstream(std::io::Error::other(
                        "payments API down",
                    )));
                }
                Ok(())
            }
        };
        let service = LambdaRunner::from_processor(Engine::new(handler))
            .circuit_breaker(BreakerConfig::default())
            .build()
            .unwrap();
        let mut n = 0;
        let mut batch = || {
            n += 1;
            event((0..10).map(|i| record(format!("m{n}-{i}"), "{}")))
        };
        // No deadline: `Context::default()` (the paused clock runs ahead of
        // the wall clock a real deadline is taken from).
        let ctx = Context::default();
        let resp = service.handle(batch(), &ctx).await.unwrap();
        assert_eq!(failed_ids(&resp).len(), 10);
        let first = calls.load(Ordering::Relaxed);
        assert_eq!(
            first, 10,
            "the first batch runs (its failures open the breaker)"
        );

        // Thirty seconds of outage, an invocation every 100 ms: 300 batches,
        // 3,000 records.
        for _ in 0..300 {
            tokio::time::advance(Duration::from_millis(100)).await;
            let resp = service.handle(batch(), &ctx).await.unwrap();
            assert_eq!(failed_ids(&resp).len(), 10, "nothing succeeds while down");
        }
        let during = calls.load(Ordering::Relaxed) - first;
        // Cool-downs of 5, 10, 20 s: probes at about 5, 15 and 35 s, so at
        // most 3 handler runs in 30 s instead of 3,000.
        assert!(
            (1..=3).contains(&during),
            "{during} handler runs while open"
        );

        down.store(false, Ordering::Relaxed);
        let mut recovered_after = None;
        for i in 0..400 {
            tokio::time::advance(Duration::from_millis(100)).await;
            let resp = service.handle(batch(), &ctx).await.unwrap();
            if failed_ids(&resp).is_empty() {
                recovered_after = Some(i);
                break;
            }
        }
        let i = recovered_after.expect("the breaker closed within 40 s of recovery");
        assert!(
            i <= 300,
            "closed {i} invocations after recovery (next probe ≤ 20 s)"
        );
    }

    /// An outage in Lambda: the event source mapping keeps delivering while
    /// the breaker is open, each delivery a receive. Records held with the
    /// cool-down (5 s here) came back within seconds and spent
    /// `maxReceiveCount` in minutes (fails on the code before: 5 s for every
    /// receive count); with the budget each waits at least the budget's delay
    /// for its receive count, so the receives are spread over the window.
    #[test]
    fn held_records_spend_their_receives_no_faster_than_the_retry_budget() {
        use sqs_worker_core::Jitter;
        use sqs_worker_core::flow::Verdict;
        let breaker = CircuitBreaker::new(BreakerConfig::default());
        breaker.record(Verdict::Downstream);
        assert!(matches!(breaker.admit(3), Admit::Wait(_)), "open");
        let budget = RetryBudget::new(Duration::from_secs(3600))
            .jitter(Jitter::None)
            .with_max_receive_count(5);
        let mut messages: Vec<Message> = (1..=3)
            .map(|n| record(format!("m{n}"), "{}").receive_count(n).message())
            .collect();
        let held = hold(&breaker, &mut messages, Some(&budget));
        assert!(messages.is_empty(), "none runs while open");
        let error = Error::msg("x");
        for (m, f) in &held {
            let want = budget.delay(m.receive_count(), &error);
            assert!(want > Duration::from_secs(60), "{want:?}");
            assert_eq!(f.retry_delay, want, "{}", m.id());
            assert_eq!(f.kind, FailureKind::Unstarted);
        }
        // Without a budget: the rest of the cool-down, as before.
        let mut messages = vec![record("m", "{}").receive_count(4).message()];
        let held = hold(&breaker, &mut messages, None);
        assert!(held[0].1.retry_delay <= Duration::from_secs(5));
    }

    #[tokio::test]
    async fn every_record_failed_fails_the_invocation_when_asked() {
        let handler = |_m: Message| async { Err::<(), _>(Error::msg("down")) };
        let service = LambdaRunner::from_processor(Engine::new(handler))
            .fail_invocation_when_all_failed(true)
            .build()
            .unwrap();
        let ctx = Context::default();
        let e = service
            .handle(event([record("a", "{}"), record("b", "{}")]), &ctx)
            .await
            .unwrap_err();
        assert_eq!(e.error_type(), "SqsWorker.AllRecordsFailed");
        // One success among them: the usual partial batch response.
        let handler = |m: Message| async move {
            if m.id() == "a" {
                Ok(())
            } else {
                Err(Error::msg("down"))
            }
        };
        let service = LambdaRunner::from_processor(Engine::new(handler))
            .fail_invocation_when_all_failed(true)
            .build()
            .unwrap();
        let resp = service
            .handle(event([record("a", "{}"), record("b", "{}")]), &ctx)
            .await
            .unwrap();
        assert_eq!(failed_ids(&resp), ["b"]);
    }
}
