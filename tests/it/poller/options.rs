//! The long-poll runner's start-up checks and options against moto: a
//! missing queue, a visibility timeout of zero, a 1 MiB body, idle exit, a
//! batch engine, the maximum processing time, spawned execution.

use crate::common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqs_worker::poller::Poller;
use sqs_worker::{Error, FixedDelay, Message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_queue_is_an_error_naming_it() {
    common::init_logs();
    let client = common::sqs().await;
    let handler = |_m: Message| async { Ok::<_, Error>(()) };
    let url = format!(
        "{}/123456789012/no-such-queue-4711",
        common::server().endpoint
    );
    let err = Poller::builder(url.as_str(), handler)
        .client(client.clone())
        .build()
        .unwrap()
        .run()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-queue-4711"), "{err}");
    let err = Poller::builder("no-such-queue-4712", handler)
        .client(client)
        .build()
        .unwrap()
        .run()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-queue-4712"), "{err}");
}

/// A queue whose own visibility timeout is 0 would hand every running message
/// to other consumers: the poller refuses to start on it (it only warned
/// before), naming the setting, and receives nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_with_a_visibility_timeout_of_zero_is_refused_at_start_up() {
    common::init_logs();
    let client = common::sqs().await;
    let url = common::create_queue(
        &client,
        &common::unique("vt-zero"),
        &[("VisibilityTimeout", "0")],
    )
    .await;
    common::send(&client, &url, &["one".to_owned()]).await;
    let ran = Arc::new(Mutex::new(0_u32));
    let counter = ran.clone();
    let handler = move |_m: Message| {
        let counter = counter.clone();
        async move {
            *counter.lock().unwrap() += 1;
            Ok::<_, Error>(())
        }
    };
    let err = Poller::builder(url.as_str(), handler)
        .client(client.clone())
        .wait_time(Duration::from_secs(1))
        .shutdown_signal(tokio::time::sleep(Duration::from_secs(30)))
        .build()
        .unwrap()
        .run()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("visibility_timeout"), "{err}");
    assert_eq!(*ran.lock().unwrap(), 0, "nothing ran");
    assert_eq!(
        common::depth(&client, &url).await,
        (1, 0),
        "nothing received"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mib_body_is_processed() {
    common::init_logs();
    let client = common::sqs().await;
    let url = common::queue(&client, "big").await;
    let body = "x".repeat(sqs_worker::MAX_MESSAGE_SIZE);
    let got: Arc<Mutex<Option<usize>>> = Arc::default();
    let g = got.clone();
    let handler = move |m: Message| {
        let g = g.clone();
        async move {
            *g.lock().unwrap() = Some(m.body().len());
            Ok::<_, Error>(())
        }
    };
    let running =
        common::Running::start(Poller::builder(url.as_str(), handler).client(client.clone()));
    client
        .send_message()
        .queue_url(&url)
        .message_body(&body)
        .send()
        .await
        .unwrap();
    common::until(Duration::from_secs(30), "the big message", || {
        got.lock().unwrap().is_some()
    })
    .await;
    let summary = running.stop().await;
    assert_eq!(*got.lock().unwrap(), Some(sqs_worker::MAX_MESSAGE_SIZE));
    assert_eq!(summary.deleted, 1);
    assert_eq!(common::depth(&client, &url).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_exit_stops_a_drained_queue_by_itself() {
    common::init_logs();
    let client = common::sqs().await;
    let url = common::queue(&client, "idle").await;
    common::send(
        &client,
        &url,
        &(0..20).map(|i| i.to_string()).collect::<Vec<_>>(),
    )
    .await;
    let handler = |_m: Message| async { Ok::<_, Error>(()) };
    let poller = Poller::builder(url.as_str(), handler)
        .client(client.clone())
        .receivers(1)
        .idle_exit(Duration::from_secs(1))
        .shutdown_signal(std::future::pending())
        .build()
        .unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(30), poller.run())
        .await
        .expect("stops by itself, without a signal")
        .unwrap();
    assert_eq!((summary.succeeded, summary.deleted), (20, 20));
    assert_eq!(common::depth(&client, &url).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_engine_runs_under_the_poller() {
    use sqs_worker::BatchResults;
    use sqs_worker_core::runner::BatchEngine;
    common::init_logs();
    let client = common::sqs().await;
    let url = common::queue(&client, "batch").await;
    let sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
    let s = sizes.clone();
    let engine = BatchEngine::new(move |batch: Vec<Message>| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(batch.len());
            let mut r = BatchResults::new();
            for m in &batch {
                if m.body() == "bad" && m.receive_count() == 1 {
                    r.fail(m, Error::msg("bad on first try"));
                } else {
                    r.succeed(m);
                }
            }
            r
        }
    });
    let running = common::Running::start(
        Poller::with_processor(url.as_str(), engine)
            .client(client.clone())
            .receivers(1),
    );
    let mut bodies: Vec<String> = (0..29).map(|i| i.to_string()).collect();
    bodies.push("bad".into());
    common::send(&client, &url, &bodies).await;
    let start = Instant::now();
    while common::depth(&client, &url).await != (0, 0) {
        assert!(start.elapsed() < Duration::from_secs(30), "not drained");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let summary = running.stop().await;
    assert_eq!(summary.succeeded, 30);
    assert_eq!(summary.retried, 1);
    assert!(
        sizes.lock().unwrap().iter().any(|n| *n > 1),
        "whole batches"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_handler_is_stopped_at_the_max_processing_time_and_retried() {
    common::init_logs();
    let client = common::sqs().await;
    let url = common::create_queue(
        &client,
        &common::unique("hung"),
        &[("VisibilityTimeout", "2")],
    )
    .await;
    let calls: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let c = calls.clone();
    let handler = move |m: Message| {
        let c = c.clone();
        async move {
            c.lock().unwrap().push(Instant::now());
            if m.receive_count() == 1 {
                tokio::time::sleep(Duration::from_secs(600)).await; // hangs
            }
            Ok::<_, Error>(())
        }
    };
    let limit = Duration::from_secs(3);
    let running = common::Running::start(
        Poller::builder(url.as_str(), handler)
            .client(client.clone())
            .receivers(1)
            .max_processing_time(limit)
            .retry_policy(FixedDelay(Duration::ZERO)),
    );
    common::send(&client, &url, &["hangs once".into()]).await;
    common::until(Duration::from_secs(30), "the retry", || {
        calls.lock().unwrap().len() >= 2
    })
    .await;
    let start = Instant::now();
    while common::depth(&client, &url).await != (0, 0) {
        assert!(start.elapsed() < Duration::from_secs(10), "not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summary = running.stop().await;
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "not redelivered while it was still running");
    assert!(
        calls[1] - calls[0] >= limit - Duration::from_millis(100),
        "extended past the 2 s visibility timeout until the limit: {:?}",
        calls[1] - calls[0]
    );
    assert!(summary.extensions >= 1, "{summary}");
    assert_eq!(
        (summary.failed, summary.retried, summary.succeeded),
        (1, 1, 1)
    );
}

/// `Execution::Spawn`: handlers that compute without awaiting run on both
/// worker threads even within one receive (the default `Inline` runs a
/// receive's messages inside its batch task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_execution_spreads_computing_handlers_over_threads() {
    common::init_logs();
    let client = common::sqs().await;
    let url = common::queue(&client, "spawn").await;
    let threads: Arc<Mutex<Vec<std::thread::ThreadId>>> = Arc::default();
    let t = threads.clone();
    let handler = move |_m: Message| {
        // 30 ms of computing, no await: only its own task lets a second
        // thread run the next message meanwhile.
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(30) {
            std::hint::spin_loop();
        }
        t.lock().unwrap().push(std::thread::current().id());
        async { Ok::<_, Error>(()) }
    };
    let bodies: Vec<String> = (0..10).map(|i| format!("{{\"n\":{i}}}")).collect();
    common::send(&client, &url, &bodies).await;
    let running = common::Running::start(
        Poller::builder(url.as_str(), handler)
            .client(client.clone())
            .receivers(1)
            .execution(sqs_worker::Execution::Spawn),
    );
    common::until(Duration::from_secs(30), "10 messages handled", || {
        threads.lock().unwrap().len() >= 10
    })
    .await;
    let summary = running.stop().await;
    assert_eq!(summary.deleted, 10);
    let distinct: HashSet<_> = threads.lock().unwrap().iter().copied().collect();
    assert_eq!(distinct.len(), 2, "handlers ran on both worker threads");
}
