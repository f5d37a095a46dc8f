//! The heartbeat against moto: it extends every other tick, and a handler's
//! own extension racing it keeps the message invisible.

use super::*;
use crate::common;
use crate::common::sqs_proxy;
use sqs_proxy::{SqsProxy, Verdict};
use sqs_worker::poller::Poller;
use sqs_worker::{Error, Message};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

/// A message running for 4 visibility timeouts (3 s, heartbeat 1 s) is
/// extended when its deadline is within 1.75 ticks, each time by twice the
/// time held (at least VT, at most 2 × VT): at about 2 s (by 4 s), 5 s
/// (by 6 s) and 10 s (by 6 s): 3 calls, where VT-sized extensions took
/// about 6 (every other tick) and extending at every tick 12.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_extends_at_growing_intervals() {
    let plain = common::sqs().await;
    let url = common::create_queue(
        &plain,
        &common::unique("cadence"),
        &[("VisibilityTimeout", "3")],
    )
    .await;
    send(&plain, &url, 1, None).await;
    let runs = Runs::default();
    let running = common::Running::start_as_configured(
        Poller::builder(url.as_str(), counting(&runs, Duration::from_secs(12)))
            .client(plain.clone())
            .receivers(1)
            .heartbeat_interval(Duration::from_secs(1))
            .wait_time(Duration::from_secs(1)),
    );
    common::until(Duration::from_secs(30), "handled", || handled(&runs) == 1).await;
    drained(&plain, &url, Duration::from_secs(40)).await;
    let summary = running.stop().await;
    assert_eq!(duplicates(&runs), 0, "never visible again while running");
    assert!(
        (2..=4).contains(&summary.extensions),
        "{} extensions in 12 s (VT 3 s, heartbeat 1 s; VT-sized ones took about 6)",
        summary.extensions
    );
}

/// Extends its own message's visibility to 60 s as soon as a heartbeat
/// extension is on the wire, then works for 8 s.
struct Extending {
    runs: Runs,
    heartbeat_sent: Arc<AtomicBool>,
}

impl sqs_worker::Handler for Extending {
    async fn handle(&self, m: Message) -> Result<(), Error> {
        *self
            .runs
            .lock()
            .unwrap()
            .entry(m.id().to_owned())
            .or_default() += 1;
        while !self.heartbeat_sent.load(SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        m.extend_visibility(Duration::from_secs(60))
            .await
            .map_err(Error::retry)?;
        tokio::time::sleep(Duration::from_secs(8)).await;
        Ok(())
    }
}

/// A handler's own `extend_visibility` racing the heartbeat: SQS applies
/// calls in the order they arrive, so a heartbeat extension that arrives
/// after the handler's (the proxy holds each `ChangeMessageVisibilityBatch`
/// for 1 s, and each `ChangeMessageVisibility` answer for 1.5 s) sets the
/// shorter deadline. The poller must not then believe the handler's longer
/// one and stop extending: the message would come back while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_extension_racing_the_heartbeat_keeps_the_message_invisible() {
    let plain = common::sqs().await;
    let url = common::create_queue(
        &plain,
        &common::unique("extrace"),
        &[("VisibilityTimeout", "3")],
    )
    .await;
    send(&plain, &url, 1, None).await;
    let heartbeat_sent = Arc::new(AtomicBool::new(false));
    let h = heartbeat_sent.clone();
    let proxy = SqsProxy::start(
        &common::server().endpoint,
        move |req| match req.action.as_str() {
            "ChangeMessageVisibilityBatch" => {
                h.store(true, SeqCst);
                Verdict::HoldThenForward(Duration::from_secs(1))
            }
            "ChangeMessageVisibility" => Verdict::DelayResponse(Duration::from_millis(1500)),
            _ => Verdict::Forward,
        },
        |_, _, _| {},
    )
    .await;
    let runs = Runs::default();
    let handler = Extending {
        runs: runs.clone(),
        heartbeat_sent,
    };
    let running = common::Running::start_as_configured(
        Poller::builder(url.as_str(), handler)
            .client(proxied(&proxy.endpoint).await)
            .receivers(1)
            .heartbeat_interval(Duration::from_secs(1))
            .wait_time(Duration::from_secs(1)),
    );
    common::until(Duration::from_secs(30), "handled", || handled(&runs) == 1).await;
    drained(&plain, &url, Duration::from_secs(40)).await;
    running.stop().await;
    assert_eq!(
        duplicates(&runs),
        0,
        "the message came back while its handler ran"
    );
}
