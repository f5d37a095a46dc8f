//! Dead-lettering under the poller, against moto: through the queue's redrive
//! policy, to the configured dead-letter queue at once with the error, and
//! what happens when that send cannot succeed (too large, a missing queue).

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::MessageAttributeValue;
use sqs_worker::poller::{Poller, dead_letter};
use sqs_worker::{Error, FixedDelay, Message};

type Seen = Arc<Mutex<Vec<String>>>;

/// The first message that reaches `dlq` (with its attributes), within 20 s.
async fn first_dead_letter(client: &aws_sdk_sqs::Client, dlq: &str) -> aws_sdk_sqs::types::Message {
    let start = Instant::now();
    loop {
        let out = client
            .receive_message()
            .queue_url(dlq)
            .message_attribute_names("All")
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        if let Some(m) = out.messages().first() {
            return m.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nothing in the DLQ"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_reaches_the_dlq_through_the_redrive_policy() {
    common::init_logs();
    let client = common::sqs().await;
    let dlq = common::queue(&client, "poison-dlq").await;
    let redrive = format!(
        r#"{{"deadLetterTargetArn":"{}","maxReceiveCount":"3"}}"#,
        common::queue_arn(&client, &dlq).await
    );
    let url = common::create_queue(
        &client,
        &common::unique("poison"),
        &[("RedrivePolicy", &redrive)],
    )
    .await;
    let calls: Seen = Arc::default();
    let c = calls.clone();
    let handler = move |m: Message| {
        let c = c.clone();
        async move {
            c.lock().unwrap().push(m.id().to_owned());
            Err::<(), _>(Error::msg("always fails"))
        }
    };
    let running = common::Running::start(
        Poller::builder(url.as_str(), handler)
            .client(client.clone())
            .receivers(1)
            .retry_policy(FixedDelay(Duration::ZERO)),
    );
    common::send(&client, &url, &["poison".to_owned()]).await;
    let start = Instant::now();
    loop {
        if common::depth(&client, &dlq).await.0 == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "poison never reached the DLQ"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summary = running.stop().await;
    assert_eq!(
        calls.lock().unwrap().len(),
        3,
        "handled maxReceiveCount times"
    );
    assert_eq!(summary.dead_lettered, 0, "moved by SQS, not by the poller");
    assert_eq!(common::depth(&client, &url).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_goes_to_the_configured_dlq_at_once_with_the_error() {
    common::init_logs();
    let client = common::sqs().await;
    let url = common::queue(&client, "perm").await;
    let dlq = common::queue(&client, "perm-dlq").await;
    let calls: Seen = Arc::default();
    let c = calls.clone();
    let handler = move |m: Message| {
        let c = c.clone();
        async move {
            c.lock().unwrap().push(m.id().to_owned());
            Err::<(), _>(Error::permanent("card 4242 declined"))
        }
    };
    let running = common::Running::start(
        Poller::builder(url.as_str(), handler)
            .client(client.clone())
            .receivers(1)
            .dead_letter_queue(dlq.as_str()),
    );
    let sent = client
        .send_message()
        .queue_url(&url)
        .message_body(r#"{"order_id":7}"#)
        .message_attributes(
            "tenant",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("acme")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let id = sent.message_id().unwrap().to_owned();
    let dead = first_dead_letter(&client, &dlq).await;
    let summary = running.stop().await;
    assert_eq!(
        calls.lock().unwrap().as_slice(),
        std::slice::from_ref(&id),
        "handled once, not retried"
    );
    assert_eq!(dead.body(), Some(r#"{"order_id":7}"#));
    let attrs = dead.message_attributes().unwrap();
    let text = |k: &str| {
        attrs
            .get(k)
            .and_then(|a| a.string_value())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(text("tenant"), "acme", "original attributes kept");
    assert_eq!(text(dead_letter::ERROR_KIND), "permanent");
    assert!(text(dead_letter::ERROR).contains("card 4242 declined"));
    assert_eq!(text(dead_letter::SOURCE_QUEUE_URL), url);
    assert_eq!(text(dead_letter::MESSAGE_ID), id);
    assert_eq!(summary.dead_lettered, 1);
    assert_eq!(
        common::depth(&client, &url).await,
        (0, 0),
        "deleted from the source"
    );
}

/// Issue 14, point 4: a permanent failure whose dead-letter send fails for
/// good (the DLQ's `MaximumMessageSize` is 1,024 bytes, the body 2,000; moto
/// refuses it with `InvalidParameterValue` as SQS does) and no redrive
/// policy: the message gets its retry delay instead of coming straight back,
/// is not lost, and is counted as a failed settlement, not as a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_dead_letter_does_not_loop() {
    common::init_logs();
    let client = common::sqs().await;
    let url = common::queue(&client, "big-perm").await;
    let dlq = common::create_queue(
        &client,
        &common::unique("big-perm-dlq"),
        &[("MaximumMessageSize", "1024")],
    )
    .await;
    let calls: Seen = Arc::default();
    let c = calls.clone();
    let handler = move |m: Message| {
        let c = c.clone();
        async move {
            c.lock().unwrap().push(m.id().to_owned());
            Err::<(), _>(Error::permanent("cannot be handled"))
        }
    };
    let running = common::Running::start(
        Poller::builder(url.as_str(), handler)
            .client(client.clone())
            .receivers(1)
            .retry_policy(FixedDelay(Duration::from_secs(60)))
            .dead_letter_queue(dlq.as_str()),
    );
    common::send(&client, &url, &["x".repeat(2000)]).await;
    common::until(Duration::from_secs(20), "the first call", || {
        !calls.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let summary = running.stop().await;
    let n = calls.lock().unwrap().len();
    assert!(n <= 2, "handled {n} times in 10 s: the message loops");
    assert_eq!(summary.dead_lettered, 0);
    assert_eq!(summary.settlement_failures, 1, "{summary}");
    assert_eq!(
        summary.retried, 0,
        "a failed dead-letter send is not a retry: {summary}"
    );
    assert_eq!(
        common::depth(&client, &url).await,
        (0, 1),
        "kept in the source queue, waiting out its retry delay"
    );
    assert_eq!(common::depth(&client, &dlq).await, (0, 0));
}

/// Issue 14, point 4, any other terminal failure: the dead-letter queue is
/// gone (`NonExistentQueue`). The message gets its retry delay, and the
/// summary counts a failed settlement, not a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_to_a_missing_queue_gets_the_retry_delay() {
    common::init_logs();
    let client = common::sqs().await;
    let url = common::queue(&client, "gone-perm").await;
    let dlq = common::queue(&client, "gone-perm-dlq").await;
    let calls: Seen = Arc::default();
    let c = calls.clone();
    let handler = move |m: Message| {
        let c = c.clone();
        async move {
            c.lock().unwrap().push(m.id().to_owned());
            Err::<(), _>(Error::permanent("cannot be handled"))
        }
    };
    let running = common::Running::start(
        Poller::builder(url.as_str(), handler)
            .client(client.clone())
            .receivers(1)
            .retry_policy(FixedDelay(Duration::from_secs(60)))
            .dead_letter_queue(dlq.as_str()),
    );
    // Started (the start-up check found the DLQ); now it disappears.
    tokio::time::sleep(Duration::from_secs(2)).await;
    client.delete_queue().queue_url(&dlq).send().await.unwrap();
    common::send(&client, &url, &["order".to_owned()]).await;
    common::until(Duration::from_secs(20), "the first call", || {
        !calls.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let summary = running.stop().await;
    let n = calls.lock().unwrap().len();
    assert_eq!(n, 1, "handled {n} times in 5 s: the message loops");
    assert_eq!(summary.settlement_failures, 1, "{summary}");
    assert_eq!(
        summary.retried, 0,
        "a failed dead-letter send is not a retry: {summary}"
    );
    assert_eq!(common::depth(&client, &url).await, (0, 1), "not lost");
}

/// The dead-letter fit rule end to end: the DLQ's `MaximumMessageSize` is
/// 1,024 bytes (read at start-up), the body 600 and the error text 500: the
/// message arrives without `SqsWorker.Error`, with its own attribute and the
/// source queue, and is deleted from the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_over_the_dlq_size_limit_drops_the_error_text() {
    common::init_logs();
    let client = common::sqs().await;
    let url = common::queue(&client, "trim").await;
    let dlq = common::create_queue(
        &client,
        &common::unique("trim-dlq"),
        &[("MaximumMessageSize", "1024")],
    )
    .await;
    let handler = |_m: Message| async { Err::<(), _>(Error::permanent("e".repeat(500))) };
    let running = common::Running::start(
        Poller::builder(url.as_str(), handler)
            .client(client.clone())
            .receivers(1)
            .dead_letter_queue(dlq.as_str()),
    );
    client
        .send_message()
        .queue_url(&url)
        .message_body("x".repeat(600))
        .message_attributes(
            "tenant",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("acme")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let dead = first_dead_letter(&client, &dlq).await;
    let summary = running.stop().await;
    let attrs = dead.message_attributes().unwrap();
    assert!(attrs.contains_key("tenant"), "original attributes kept");
    assert!(
        !attrs.contains_key(dead_letter::ERROR),
        "error text dropped for size"
    );
    assert_eq!(
        attrs[dead_letter::SOURCE_QUEUE_URL].string_value(),
        Some(url.as_str())
    );
    assert_eq!(summary.dead_lettered, 1);
    assert_eq!(common::depth(&client, &url).await, (0, 0));
}
