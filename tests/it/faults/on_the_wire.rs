//! Faults in this process: a handler that hangs, and deletes that fail or
//! are throttled on the wire (an SDK interceptor, a throttling proxy).

#![allow(clippy::unwrap_used)] // tests may unwrap

use super::send_many;
use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::config::interceptors::{
    BeforeSerializationInterceptorContextMut, FinalizerInterceptorContextMut,
};
use aws_sdk_sqs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sqs::error::BoxError;
use aws_sdk_sqs::operation::delete_message_batch::{
    DeleteMessageBatchInput, DeleteMessageBatchOutput,
};
use aws_sdk_sqs::types::BatchResultErrorEntry;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use sqs_worker::poller::Poller;
use sqs_worker::{Error, Message};

type Calls = Arc<Mutex<Vec<(String, String, u32)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_hangs_forever_is_released_after_the_max_processing_time() {
    let client = common::sqs().await;
    let url = common::create_queue(
        &client,
        &common::unique("hang"),
        &[("VisibilityTimeout", "2")],
    )
    .await;
    let calls: Calls = Arc::default();
    let c = calls.clone();
    let handler = move |m: Message| {
        let c = c.clone();
        async move {
            c.lock()
                .unwrap()
                .push((m.id().to_owned(), m.body().to_owned(), m.receive_count()));
            if m.body() == "hang" {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, Error>(())
        }
    };
    let limit = Duration::from_secs(3);
    let running = common::Running::start_as_configured(
        Poller::builder(url.as_str(), handler)
            .client(client.clone())
            .concurrency(4)
            .wait_time(Duration::from_secs(1))
            .max_processing_time(limit)
            .retry_policy(sqs_worker::FixedDelay(Duration::from_secs(30)))
            .grace_period(Duration::from_millis(200)),
    );
    client
        .send_message()
        .queue_url(&url)
        .message_body("hang")
        .send()
        .await
        .unwrap();
    // Other messages keep flowing while it hangs, through the 3 other slots,
    // long past the visibility timeout (the heartbeat extends the hung one).
    let mut sent = HashSet::new();
    for round in 0..6 {
        let bodies: Vec<String> = (0..10).map(|i| format!("m{round}-{i}")).collect();
        sent.extend(common::send(&client, &url, &bodies).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    common::until(
        Duration::from_secs(30),
        "every other message handled",
        || {
            let got: HashSet<String> = calls
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, b, _)| b != "hang")
                .map(|(id, _, _)| id.clone())
                .collect();
            got == sent
        },
    )
    .await;
    // Stopped at the limit and failed (retry in 30 s): the slot is free and
    // the message is not delivered again meanwhile.
    let summary = running.stop().await;
    let calls = calls.lock().unwrap().clone();
    let hang: Vec<_> = calls.iter().filter(|(_, b, _)| b == "hang").collect();
    assert_eq!(hang.len(), 1, "the hung message ran once: {hang:?}");
    assert_eq!(
        summary.failed, 1,
        "the hung handler was stopped and failed: {summary}"
    );
    assert_eq!(summary.retried, 1, "and given its retry delay: {summary}");
    assert_eq!(summary.succeeded as usize, sent.len(), "{summary}");
    assert_eq!(summary.settlement_failures, 0, "{summary}");
    let (visible, hidden) = common::depth(&client, &url).await;
    assert_eq!(
        (visible, hidden),
        (0, 1),
        "only the hung message remains, waiting for its retry"
    );
}

/// Injects failed entries into `DeleteMessageBatch`: every other call with
/// two or more entries loses its last entry on the way out (the server never
/// sees it) and reports it back as `Failed` with a transient code, as SQS does
/// under throttling.
#[derive(Debug, Clone, Default)]
struct FailSomeDeletes {
    calls: Arc<AtomicU64>,
    injected: Arc<AtomicU64>,
}

#[derive(Debug, Clone)]
struct Dropped(String);

impl Storable for Dropped {
    type Storer = StoreReplace<Self>;
}

impl Intercept for FailSomeDeletes {
    fn name(&self) -> &'static str {
        "FailSomeDeletes"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(input) = context
            .input_mut()
            .downcast_mut::<DeleteMessageBatchInput>()
        else {
            return Ok(());
        };
        let Some(entries) = input.entries.as_mut() else {
            return Ok(());
        };
        if entries.len() < 2 || self.calls.fetch_add(1, Ordering::SeqCst) % 2 == 1 {
            return Ok(());
        }
        let dropped = entries.pop().expect("two entries or more");
        self.injected.fetch_add(1, Ordering::SeqCst);
        cfg.interceptor_state()
            .store_put(Dropped(dropped.id().to_owned()));
        Ok(())
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Dropped(id)) = cfg.load::<Dropped>().cloned() else {
            return Ok(());
        };
        if let Some(Ok(output)) = context.output_or_error_mut()
            && let Some(out) = output.downcast_mut::<DeleteMessageBatchOutput>()
        {
            let code = if id.len() % 2 == 0 {
                "ThrottlingException"
            } else {
                "InternalError"
            };
            out.failed.push(
                BatchResultErrorEntry::builder()
                    .id(id)
                    .code(code)
                    .sender_fault(false)
                    .message("injected by the fault test")
                    .build()?,
            );
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_delete_entries_are_retried_and_nothing_runs_twice() {
    let plain = common::sqs().await;
    let url = common::create_queue(
        &plain,
        &common::unique("delfail"),
        &[("VisibilityTimeout", "5")],
    )
    .await;
    let faults = FailSomeDeletes::default();
    let conf = aws_sdk_sqs::config::Builder::from(&common::sdk_config().await)
        .interceptor(faults.clone())
        .build();
    let faulty = aws_sdk_sqs::Client::from_conf(conf);
    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let r = runs.clone();
    let handler = move |m: Message| {
        let r = r.clone();
        async move {
            *r.lock().unwrap().entry(m.id().to_owned()).or_default() += 1;
            Ok::<_, Error>(())
        }
    };
    let running = common::Running::start_as_configured(
        Poller::builder(url.as_str(), handler)
            .client(faulty)
            .concurrency(20)
            // One receive loop: moto's ReceiveMessage takes no lock, so two
            // concurrent receives can get the same message (SQS does not).
            .receivers(1)
            .wait_time(Duration::from_secs(1))
            // Long enough to gather several deletes per call.
            .flush_interval(Duration::from_millis(100)),
    );
    let messages = 300;
    let sent = send_many(&plain, &url, messages).await;
    common::until(Duration::from_secs(60), "every message handled", || {
        runs.lock().unwrap().len() == messages
    })
    .await;
    common::until_async(Duration::from_secs(30), "every message deleted", || {
        let plain = plain.clone();
        let url = url.clone();
        async move { common::depth(&plain, &url).await == (0, 0) }
    })
    .await;
    // Past the visibility timeout: an entry not really deleted would be back.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let summary = running.stop().await;
    let runs = runs.lock().unwrap().clone();
    let injected = faults.injected.load(Ordering::SeqCst);
    let twice = runs.values().filter(|n| **n > 1).count();
    println!(
        "FIGURES failed DeleteMessageBatch entries: messages {messages}, faults {injected} \
         (entries reported Failed with ThrottlingException/InternalError), lost 0, duplicates {twice}"
    );
    assert!(injected > 0, "faults were injected");
    assert_eq!(runs.keys().cloned().collect::<HashSet<_>>(), sent);
    assert_eq!(twice, 0, "no message ran twice: {runs:?}");
    assert_eq!(summary.settlement_failures, 0, "{summary}");
    assert_eq!(summary.deleted as usize, messages, "{summary}");
    assert_eq!(common::depth(&plain, &url).await, (0, 0));
}

/// An HTTP proxy to the local server that answers every other
/// `DeleteMessageBatch` itself, without forwarding it, alternately with
/// HTTP 400 `ThrottlingException` and HTTP 503 `ServiceUnavailable`. One
/// request per connection (moto closes each connection after its response).
struct ThrottlingProxy {
    endpoint: String,
    throttled: Arc<AtomicU64>,
}

impl ThrottlingProxy {
    async fn start(upstream: &str) -> ThrottlingProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let throttled = Arc::new(AtomicU64::new(0));
        let deletes = Arc::new(AtomicU64::new(0));
        let t = throttled.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (t, deletes, target) = (t.clone(), deletes.clone(), target.clone());
                tokio::spawn(async move {
                    // One request: headers, then Content-Length bytes of body.
                    let mut req = Vec::new();
                    let mut buf = [0u8; 16 * 1024];
                    let head_end = loop {
                        let Ok(n) = client.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        req.extend_from_slice(&buf[..n]);
                        if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&req[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while req.len() < head_end + len {
                        let Ok(n) = client.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        req.extend_from_slice(&buf[..n]);
                    }
                    if head.contains("amazonsqs.deletemessagebatch")
                        && deletes.fetch_add(1, Ordering::SeqCst) % 2 == 0
                    {
                        let n = t.fetch_add(1, Ordering::SeqCst);
                        let (status, kind) = if n % 2 == 0 {
                            ("400 Bad Request", "ThrottlingException")
                        } else {
                            ("503 Service Unavailable", "ServiceUnavailable")
                        };
                        let body = format!(
                            r#"{{"__type":"com.amazonaws.sqs#{kind}","message":"Rate exceeded (injected)"}}"#
                        );
                        let resp = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.0\r\n\
                             x-amzn-query-error: {kind};Sender\r\n\
                             x-amzn-requestid: 00000000-0000-0000-0000-000000000000\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = client.write_all(resp.as_bytes()).await;
                        let _ = client.shutdown().await;
                        return;
                    }
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    if server.write_all(&req).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy(&mut server, &mut client).await;
                    let _ = client.shutdown().await;
                });
            }
        });
        ThrottlingProxy {
            endpoint,
            throttled,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_delete_calls_are_retried_and_nothing_runs_twice() {
    let plain = common::sqs().await;
    let url = common::create_queue(
        &plain,
        &common::unique("delthrottle"),
        &[("VisibilityTimeout", "5")],
    )
    .await;
    let proxy = ThrottlingProxy::start(&common::server().endpoint).await;
    let client = aws_sdk_sqs::Client::new(&common::sdk_config_for(&proxy.endpoint).await);
    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let r = runs.clone();
    let handler = move |m: Message| {
        let r = r.clone();
        async move {
            *r.lock().unwrap().entry(m.id().to_owned()).or_default() += 1;
            Ok::<_, Error>(())
        }
    };
    let running = common::Running::start_as_configured(
        Poller::builder(url.as_str(), handler)
            .client(client)
            .concurrency(20)
            // One receive loop: moto's ReceiveMessage takes no lock, so two
            // concurrent receives can get the same message (SQS does not).
            .receivers(1)
            .wait_time(Duration::from_secs(1)),
    );
    let messages = 200;
    let sent = send_many(&plain, &url, messages).await;
    common::until(Duration::from_secs(60), "every message handled", || {
        runs.lock().unwrap().len() == messages
    })
    .await;
    common::until_async(Duration::from_secs(30), "every message deleted", || {
        let plain = plain.clone();
        let url = url.clone();
        async move { common::depth(&plain, &url).await == (0, 0) }
    })
    .await;
    // Past the visibility timeout: a delete that never happened would show.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let summary = running.stop().await;
    let runs = runs.lock().unwrap().clone();
    let throttled = proxy.throttled.load(Ordering::SeqCst);
    let twice = runs.values().filter(|n| **n > 1).count();
    println!(
        "FIGURES throttled DeleteMessageBatch calls: messages {messages}, faults {throttled} \
         (HTTP 400 ThrottlingException / 503, not forwarded), lost 0, duplicates {twice}"
    );
    assert!(throttled > 0, "throttling was injected");
    assert_eq!(runs.keys().cloned().collect::<HashSet<_>>(), sent);
    assert_eq!(twice, 0, "no message ran twice");
    assert_eq!(summary.settlement_failures, 0, "{summary}");
    assert_eq!(common::depth(&plain, &url).await, (0, 0));
}
