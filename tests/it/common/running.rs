//! Running an in-process poller with a stop channel, and waiting for a
//! condition with a time limit.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use sqs_worker::poller::{PollerBuilder, PollerError, RunSummary};
use sqs_worker_core::runner::Processor;
use tokio::sync::oneshot;

/// How long a stopped poller may take to wind down before the test fails.
const STOP_LIMIT: Duration = Duration::from_secs(90);

/// A running in-process poller and the means to stop it.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<RunSummary, PollerError>>,
}

impl Running {
    /// Builds the poller with a shutdown signal this handle controls and 1 s
    /// long polls, and spawns its run. At shutdown the poller lets the receive
    /// in flight finish (SQS would hand a message to an abandoned poll), so
    /// the default 20 s wait would add up to 20 s to every test.
    pub fn start<P: Processor>(builder: PollerBuilder<P>) -> Running {
        Running::start_as_configured(builder.wait_time(Duration::from_secs(1)))
    }

    /// As [`Running::start`], with the builder's own wait time.
    pub fn start_as_configured<P: Processor>(builder: PollerBuilder<P>) -> Running {
        let (tx, rx) = oneshot::channel::<()>();
        let poller = builder
            .shutdown_signal(async move {
                let _ = rx.await;
            })
            .build()
            .unwrap();
        Running {
            stop: Some(tx),
            task: tokio::spawn(poller.run()),
        }
    }

    /// Signals shutdown without waiting for the run to end.
    pub fn signal(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown and returns the run's summary; the run must end Ok.
    pub async fn stop(mut self) -> RunSummary {
        self.signal();
        tokio::time::timeout(STOP_LIMIT, self.task)
            .await
            .expect("the poller stops")
            .unwrap()
            .expect("the poller returns Ok")
    }
}

/// Runs a poller (long polls of 1 s) until `done` holds or `limit` passes,
/// then stops it and returns its summary.
pub async fn run_until<P: Processor>(
    builder: PollerBuilder<P>,
    limit: Duration,
    done: impl AsyncFnMut() -> bool,
) -> RunSummary {
    let running = Running::start(builder);
    until_async(limit, "the poller's work", done).await;
    running.stop().await
}

/// Waits until `cond` holds; fails the test after `limit`.
pub async fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the async `cond` (e.g. a call to the server) holds, asking
/// every 100 ms; fails the test after `limit`.
pub async fn until_async(limit: Duration, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
