use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::batch::{BatchEngine, BatchResults};
use crate::retry::FixedDelay;

fn batch(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| Message::builder(format!("m{i}"), format!("{i}")).build())
        .collect()
}

fn fifo(spec: &[(&str, &str)]) -> Vec<Message> {
    spec.iter()
        .map(|(id, g)| {
            Message::builder(*id, *id)
                .group_id(*g)
                .source("https://sqs.eu-west-1.amazonaws.com/1/q.fifo")
                .build()
        })
        .collect()
}

#[tokio::test]
async fn ten_messages_where_the_third_fails_report_exactly_the_third() {
    for execution in [Execution::Inline, Execution::Spawn] {
        let engine = Engine::with_config(
            |m: Message| async move {
                if m.id() == "m2" {
                    Err(Error::msg("boom"))
                } else {
                    Ok(())
                }
            },
            EngineConfig::default().execution(execution),
        );
        let report = engine.run(batch(10), None).await;
        assert_eq!(report.settled.len(), 10);
        assert_eq!(report.failed_ids(), ["m2"]);
        let (_, f) = report.failed().next().unwrap();
        assert_eq!(f.kind, FailureKind::Retry);
        assert_eq!(f.error.to_string(), "boom");
        assert_eq!(report.succeeded().count(), 9);
    }
}

#[tokio::test]
async fn fifo_group_failure_stops_its_group_only() {
    let ran = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
    let r = ran.clone();
    let engine = Engine::new(move |m: Message| {
        let r = r.clone();
        async move {
            // Yield so groups interleave.
            tokio::task::yield_now().await;
            r.lock().unwrap().push(m.id().to_owned());
            if m.id() == "a2" {
                Err(Error::msg("a2 fails"))
            } else {
                Ok(())
            }
        }
    });
    let msgs = fifo(&[
        ("a1", "A"),
        ("b1", "B"),
        ("a2", "A"),
        ("b2", "B"),
        ("a3", "A"),
        ("b3", "B"),
        ("a4", "A"),
        ("b4", "B"),
    ]);
    let report = engine.run(msgs, None).await;
    let ran = ran.lock().unwrap().clone();
    let a: Vec<_> = ran.iter().filter(|s| s.starts_with('a')).cloned().collect();
    let b: Vec<_> = ran.iter().filter(|s| s.starts_with('b')).cloned().collect();
    assert_eq!(a, ["a1", "a2"], "A's later messages never run");
    assert_eq!(b, ["b1", "b2", "b3", "b4"], "B runs all, in order");
    let mut failed = report.failed_ids();
    failed.sort();
    assert_eq!(failed, ["a2", "a3", "a4"]);
    for (m, f) in report.failed() {
        let expect = if m.id() == "a2" {
            FailureKind::Retry
        } else {
            FailureKind::GroupBlocked
        };
        assert_eq!(f.kind, expect, "{}", m.id());
        if f.kind == FailureKind::GroupBlocked {
            assert_eq!(
                f.retry_delay,
                Duration::ZERO,
                "blocked messages come back at once"
            );
        }
    }
}

#[tokio::test]
async fn a_fair_queue_group_runs_in_parallel_and_a_failure_blocks_nothing() {
    let running = std::sync::Arc::new(AtomicUsize::new(0));
    let peak = std::sync::Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let engine = Engine::with_config(
        move |m: Message| {
            let (r, p) = (r.clone(), p.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                // Wait for the others to start, so a serial run shows as peak 1.
                for _ in 0..100 {
                    tokio::task::yield_now().await;
                }
                r.fetch_sub(1, Ordering::SeqCst);
                if m.id() == "t0" {
                    Err(Error::msg("first fails"))
                } else {
                    Ok(())
                }
            }
        },
        EngineConfig::default().concurrency(10),
    );
    let batch: Vec<Message> = (0..10)
        .map(|i| {
            Message::builder(format!("t{i}"), "")
                .group_id("t1")
                .source("https://sqs.eu-west-1.amazonaws.com/1/q")
                .build()
        })
        .collect();
    let report = engine.run(batch, None).await;
    assert_eq!(report.failed_ids(), ["t0"]);
    assert_eq!(report.succeeded().count(), 9);
    assert_eq!(
        peak.load(Ordering::SeqCst),
        10,
        "one tenant's messages ran in parallel"
    );
}

#[tokio::test]
async fn a_panic_fails_only_its_message_with_the_panic_text() {
    for execution in [Execution::Inline, Execution::Spawn] {
        let engine = Engine::with_config(
            |m: Message| async move {
                if m.id() == "m4" {
                    panic!("handler exploded on purpose");
                }
                Ok::<(), Error>(())
            },
            EngineConfig::default().execution(execution),
        );
        let report = engine.run(batch(6), None).await;
        assert_eq!(report.failed_ids(), ["m4"]);
        let (_, f) = report.failed().next().unwrap();
        assert_eq!(f.kind, FailureKind::Panicked);
        assert!(
            f.error.to_string().contains("handler exploded on purpose"),
            "{}",
            f.error
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_deadline_leaves_messages_unstarted_and_stops_the_running() {
    let started = std::sync::Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let engine = Engine::with_config(
        move |m: Message| {
            let s = s.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                let ms: u64 = m.body().parse().unwrap();
                tokio::time::sleep(Duration::from_millis(100 + ms * 1000)).await;
                Ok::<(), Error>(())
            }
        },
        EngineConfig::default()
            .concurrency(2)
            .start_margin(Duration::from_millis(500))
            .retry_policy(FixedDelay(Duration::from_secs(7))),
    );
    // m0 takes 0.1 s, m1 takes 1.1 s; deadline at 1 s, margin 0.5 s: m0 and m1
    // start; m0 finishes at 0.1 s so m2 starts (0.1 < 0.5), and runs past the
    // deadline; nothing else may start.
    let deadline = Instant::now() + Duration::from_secs(1);
    let report = engine.run(batch(6), Some(deadline)).await;
    assert_eq!(report.settled.len(), 6);
    assert_eq!(started.load(Ordering::SeqCst), 3);
    let kinds: std::collections::HashMap<_, _> = report
        .failed()
        .map(|(m, f)| (m.id().to_owned(), (f.kind, f.retry_delay)))
        .collect();
    assert_eq!(
        report.succeeded().map(Message::id).collect::<Vec<_>>(),
        ["m0"]
    );
    assert_eq!(
        kinds["m1"],
        (FailureKind::DeadlineExceeded, Duration::from_secs(7))
    );
    assert_eq!(
        kinds["m2"],
        (FailureKind::DeadlineExceeded, Duration::from_secs(7))
    );
    for id in ["m3", "m4", "m5"] {
        assert_eq!(kinds[id], (FailureKind::Unstarted, Duration::ZERO), "{id}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_deadline_already_inside_the_margin_starts_nothing() {
    let engine = Engine::with_config(
        |_m: Message| async { panic!("must not start") as Result<(), Error> },
        EngineConfig::default().start_margin(Duration::from_secs(1)),
    );
    let report = engine
        .run(batch(3), Some(Instant::now() + Duration::from_millis(900)))
        .await;
    assert_eq!(report.failed_ids().len(), 3);
    assert!(
        report
            .failed()
            .all(|(_, f)| f.kind == FailureKind::Unstarted)
    );
}

#[tokio::test(start_paused = true)]
async fn handler_timeout_stops_a_hanging_handler_and_others_flow() {
    let engine = Engine::with_config(
        |m: Message| async move {
            if m.id() == "m1" {
                std::future::pending::<()>().await;
            }
            Ok::<(), Error>(())
        },
        EngineConfig::default()
            .concurrency(1)
            .handler_timeout(Some(Duration::from_secs(30))),
    );
    let report = engine.run(batch(4), None).await;
    assert_eq!(report.failed_ids(), ["m1"]);
    assert_eq!(
        report.failed().next().unwrap().1.kind,
        FailureKind::TimedOut
    );
    assert_eq!(report.succeeded().count(), 3);
}

#[tokio::test]
async fn the_concurrency_limit_holds() {
    for (execution, limit) in [(Execution::Inline, 3), (Execution::Spawn, 4)] {
        let now = std::sync::Arc::new(AtomicUsize::new(0));
        let max = std::sync::Arc::new(AtomicUsize::new(0));
        let (n, mx) = (now.clone(), max.clone());
        let engine = Engine::with_config(
            move |_m: Message| {
                let (n, mx) = (n.clone(), mx.clone());
                async move {
                    let c = n.fetch_add(1, Ordering::SeqCst) + 1;
                    mx.fetch_max(c, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    n.fetch_sub(1, Ordering::SeqCst);
                    Ok::<(), Error>(())
                }
            },
            EngineConfig::default()
                .concurrency(limit)
                .execution(execution),
        );
        let report = engine.run(batch(20), None).await;
        assert!(report.all_succeeded());
        assert_eq!(max.load(Ordering::SeqCst), limit, "{execution:?}");
    }
}

#[tokio::test]
async fn a_slow_message_does_not_hold_back_the_others() {
    let engine = Engine::with_config(
        |m: Message| async move {
            if m.id() == "m0" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok::<(), Error>(())
        },
        EngineConfig::default().concurrency(2),
    );
    let mut order = vec![];
    engine
        .process(batch(10), None, |s| order.push(s.message.id().to_owned()))
        .await;
    assert_eq!(order.last().map(String::as_str), Some("m0"), "{order:?}");
    assert_eq!(order.len(), 10);
}

#[tokio::test]
async fn permanent_errors_and_bad_bodies() {
    #[derive(serde::Deserialize)]
    struct Order {
        #[allow(dead_code)]
        order_id: u64,
    }
    let engine = Engine::new(|crate::Json(_o): crate::Json<Order>| async { Ok::<(), Error>(()) });
    let msgs = vec![
        Message::builder("good", r#"{"order_id":1}"#).build(),
        Message::builder("bad", r#"{"order_id":"x"}"#).build(),
    ];
    let report = engine.run(msgs, None).await;
    let (m, f) = report.failed().next().unwrap();
    assert_eq!(m.id(), "bad");
    assert_eq!(f.kind, FailureKind::Permanent);
    assert!(f.error.to_string().contains("message bad"), "{}", f.error);
}

#[tokio::test]
async fn retry_delay_comes_from_the_policy_and_the_receive_count() {
    let engine = Engine::with_config(
        |_m: Message| async { Err::<(), _>(Error::msg("again")) },
        EngineConfig::default().retry_policy(
            crate::ExponentialBackoff::new(Duration::from_secs(2), Duration::from_secs(100))
                .jitter(crate::Jitter::None),
        ),
    );
    let msgs = vec![
        Message::builder("a", "").receive_count(1).build(),
        Message::builder("b", "").receive_count(4).build(),
        Message::builder("c", "").receive_count(30).build(),
    ];
    let report = engine.run(msgs, None).await;
    let delays: std::collections::HashMap<_, _> = report
        .failed()
        .map(|(m, f)| (m.id().to_owned(), f.retry_delay))
        .collect();
    assert_eq!(delays["a"], Duration::from_secs(2));
    assert_eq!(delays["b"], Duration::from_secs(16));
    assert_eq!(delays["c"], Duration::from_secs(100));
}

#[tokio::test]
async fn batch_handler_omitting_an_id_fails_it() {
    let engine = BatchEngine::new(|batch: Vec<Message>| async move {
        let mut r = BatchResults::new();
        for m in &batch {
            match m.id() {
                "m1" => {}
                "m2" => {
                    r.fail(m, Error::permanent("bad row"));
                }
                _ => {
                    r.succeed(m);
                }
            }
        }
        r.set("not-in-batch", Ok(()));
        r
    });
    let report = engine.run(batch(4), None).await;
    assert_eq!(report.settled.len(), 4, "only batch messages are reported");
    let kinds: std::collections::HashMap<_, _> = report
        .failed()
        .map(|(m, f)| (m.id().to_owned(), f.kind))
        .collect();
    assert_eq!(kinds.len(), 2);
    assert_eq!(kinds["m1"], FailureKind::Missing);
    assert_eq!(kinds["m2"], FailureKind::Permanent);
}

#[tokio::test]
async fn batch_handler_panic_fails_the_batch_only() {
    let engine = BatchEngine::new(|_b: Vec<Message>| async move {
        panic!("bulk insert blew up");
        #[allow(unreachable_code)]
        BatchResults::new()
    });
    let report = engine.run(batch(3), None).await;
    assert_eq!(report.failed_ids().len(), 3);
    assert!(report.failed().all(|(_, f)| f.kind == FailureKind::Panicked
        && f.error.to_string().contains("bulk insert blew up")));
}

#[tokio::test]
async fn empty_batch_is_fine() {
    let engine = Engine::new(|_m: Message| async { Ok::<(), Error>(()) });
    assert!(engine.run(vec![], None).await.settled.is_empty());
}

fn assert_send<T: Send>(_: &T) {}

#[test]
fn engine_futures_are_send() {
    let engine = Engine::new(|_m: Message| async { Ok::<(), Error>(()) });
    let fut = engine.run(vec![], None);
    assert_send(&fut);
}

#[tokio::test(start_paused = true)]
async fn past_the_margin_running_messages_may_still_finish_before_the_deadline() {
    let engine = Engine::with_config(
        |m: Message| async move {
            let ms: u64 = m.body().parse().unwrap();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<(), Error>(())
        },
        EngineConfig::default()
            .concurrency(2)
            .start_margin(Duration::from_millis(500)),
    );
    // Deadline 1 s, margin 0.5 s. "a" (700 ms) and "b" (100 ms) start at 0;
    // "c" (300 ms) starts at 0.1 s and ends at 0.4 s; "d" starts at 0.4 s
    // (still before 0.5 s) and takes 800 ms, past the deadline; "e" would
    // start at 0.7 s, past the margin, so it never starts. "a" ends at 0.7 s
    // inside the deadline and succeeds.
    let msgs = [("a", 700), ("b", 100), ("c", 300), ("d", 800), ("e", 1)]
        .iter()
        .map(|(id, ms)| Message::builder(*id, ms.to_string()).build())
        .collect();
    let report = engine
        .run(msgs, Some(Instant::now() + Duration::from_secs(1)))
        .await;
    let mut ok: Vec<_> = report.succeeded().map(Message::id).collect();
    ok.sort();
    assert_eq!(ok, ["a", "b", "c"]);
    let kinds: std::collections::HashMap<_, _> = report
        .failed()
        .map(|(m, f)| (m.id().to_owned(), f.kind))
        .collect();
    assert_eq!(kinds["d"], FailureKind::DeadlineExceeded);
    assert_eq!(kinds["e"], FailureKind::Unstarted);
}

/// Issue 15 §6: AWS's documented FIFO behaviour for partial batch responses,
/// as an option: after the first failure nothing more of the batch starts
/// (any group), and everything not started is reported. By default only the
/// failed message's group stops; on a standard queue the option changes
/// nothing.
#[tokio::test]
async fn fifo_stop_batch_on_failure_reports_everything_unstarted_after_the_first_failure() {
    let ran = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
    let engine = |stop: bool| {
        let r = ran.clone();
        Engine::with_config(
            move |m: Message| {
                let r = r.clone();
                async move {
                    r.lock().unwrap().push(m.id().to_owned());
                    if m.id() == "a1" {
                        Err(Error::msg("a1 fails"))
                    } else {
                        Ok(())
                    }
                }
            },
            EngineConfig::default()
                .concurrency(1)
                .fifo_stop_batch_on_failure(stop),
        )
    };
    let msgs = || {
        fifo(&[("a1", "a"), ("b1", "b"), ("c1", "c"), ("a2", "a")])
            .into_iter()
            .map(|m| {
                Message::builder(m.id(), m.body())
                    .group_id(m.group_id().unwrap())
                    .sequence_number("1")
                    .build()
            })
            .collect::<Vec<_>>()
    };
    let kinds = |r: &BatchReport| {
        let mut k: Vec<(String, FailureKind)> = r
            .failed()
            .map(|(m, f)| (m.id().to_owned(), f.kind))
            .collect();
        k.sort_by(|a, b| a.0.cmp(&b.0));
        k
    };

    let report = engine(true).run(msgs(), None).await;
    assert_eq!(*ran.lock().unwrap(), ["a1"]);
    assert_eq!(
        kinds(&report),
        [
            ("a1".to_owned(), FailureKind::Retry),
            ("a2".to_owned(), FailureKind::GroupBlocked),
            ("b1".to_owned(), FailureKind::Unstarted),
            ("c1".to_owned(), FailureKind::Unstarted),
        ]
    );
    assert!(
        report
            .failed()
            .all(|(m, f)| m.id() == "a1" || f.retry_delay.is_zero()),
        "what never ran comes back at once"
    );

    ran.lock().unwrap().clear();
    let report = engine(false).run(msgs(), None).await;
    assert_eq!(report.failed_ids().len(), 2, "default: the group only");
    assert_eq!(ran.lock().unwrap().len(), 3);

    ran.lock().unwrap().clear();
    let report = engine(true).run(batch(3), None).await;
    assert!(report.failed_ids().is_empty());
    let standard = vec![
        Message::builder("a1", "").group_id("t").build(),
        Message::builder("x", "").group_id("t").build(),
    ];
    let report = engine(true).run(standard, None).await;
    assert_eq!(report.failed_ids(), ["a1"], "a fair queue stops nothing");
}
