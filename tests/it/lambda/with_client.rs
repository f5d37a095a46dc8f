//! The Lambda adapter with an SQS client, against the local SQS server: a
//! permanent failure to the dead-letter queue, retry delays as visibility
//! changes, extensions and their cap at the invocation deadline.

use super::*;

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};
use sqs_worker_lambda::dead_letter;

/// Sends `body` to `url` and receives it, as Lambda's poller would, and
/// turns it into an event record.
async fn receive_as_record(sqs: &aws_sdk_sqs::Client, url: &str, body: &str) -> (SqsEvent, String) {
    sqs.send_message()
        .queue_url(url)
        .message_body(body)
        .message_attributes(
            "tenant",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("acme")
                .build()
                .expect("local SQS"),
        )
        .send()
        .await
        .expect("local SQS");
    let out = sqs
        .receive_message()
        .queue_url(url)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .expect("local SQS");
    let msg = out.messages().first().cloned().expect("the message");
    let arn = common::queue_arn(sqs, url).await;
    let mut r = record(
        msg.message_id().expect("local SQS"),
        msg.body().expect("local SQS"),
    )
    .receipt_handle(msg.receipt_handle().expect("local SQS"))
    .queue_arn(&arn)
    .string_attribute("tenant", "acme");
    for (k, v) in msg.attributes().into_iter().flatten() {
        r = r.system_attribute(k.as_str(), v);
    }
    (event([r]), msg.message_id().expect("local SQS").to_owned())
}

async fn receive_now(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    sqs.receive_message()
        .queue_url(url)
        .message_attribute_names("All")
        .wait_time_seconds(0)
        .max_number_of_messages(10)
        .send()
        .await
        .expect("local SQS")
        .messages()
        .to_vec()
}

#[tokio::test]
async fn with_a_client_a_permanent_failure_goes_to_the_dlq_and_counts_as_handled() {
    let sqs = common::sqs().await;
    let url = common::queue(&sqs, "lambda-src").await;
    let dlq = common::queue(&sqs, "lambda-dlq").await;
    let (ev, id) = receive_as_record(&sqs, &url, r#"{"order_id": 0}"#).await;

    let mut svc = LambdaRunner::new(orders)
        .sqs_client(sqs.clone())
        .dead_letter_queue(&dlq)
        .build()
        .unwrap();
    let resp = call(&mut svc, ev, Duration::from_secs(30)).await.unwrap();
    assert_all_succeeded(&resp);

    let dead = receive_now(&sqs, &dlq).await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.body(), Some(r#"{"order_id": 0}"#));
    let attrs = d.message_attributes().unwrap();
    let text = |k: &str| {
        attrs
            .get(k)
            .and_then(|v| v.string_value())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(text("tenant"), "acme", "original attributes kept");
    assert!(text(dead_letter::ERROR).contains("order 0 does not exist"));
    assert_eq!(text(dead_letter::ERROR_KIND), "permanent");
    assert_eq!(text(dead_letter::MESSAGE_ID), id);
    assert!(text(dead_letter::SOURCE_QUEUE_ARN).ends_with(url.rsplit('/').next().unwrap()));

    // When the DLQ send fails, the record is reported instead (nothing lost).
    let (ev, id) = receive_as_record(&sqs, &url, r#"{"order_id": 0}"#).await;
    let missing = format!("{}-missing", dlq);
    let mut svc = LambdaRunner::new(orders)
        .sqs_client(sqs.clone())
        .dead_letter_queue(missing)
        .build()
        .unwrap();
    let resp = call(&mut svc, ev, Duration::from_secs(30)).await.unwrap();
    assert_failed_ids(&resp, [id]);
}

#[tokio::test]
async fn with_a_client_a_retryable_failure_gets_its_retry_delay_as_visibility() {
    let sqs = common::sqs().await;
    let name = common::unique("lambda-backoff");
    let url = common::create_queue(&sqs, &name, &[("VisibilityTimeout", "60")]).await;
    let (ev, id) = receive_as_record(&sqs, &url, r#"{"order_id": 1}"#).await;

    let handler = |_m: Message| async {
        Err::<(), _>(Error::retry_after(
            Duration::from_secs(2),
            std::io::Error::other("busy"),
        ))
    };
    let mut svc = LambdaRunner::new(handler)
        .sqs_client(sqs.clone())
        .build()
        .unwrap();
    let t = Instant::now();
    let resp = call(&mut svc, ev, Duration::from_secs(30)).await.unwrap();
    assert_failed_ids(&resp, [&id]);

    assert!(
        receive_now(&sqs, &url).await.is_empty(),
        "invisible right after the invocation"
    );
    tokio::time::sleep(Duration::from_millis(2600).saturating_sub(t.elapsed())).await;
    let mut back = Vec::new();
    for _ in 0..20 {
        back = receive_now(&sqs, &url).await;
        if !back.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        back.first().and_then(|m| m.message_id()),
        Some(id.as_str()),
        "visible again after the 2 s retry delay, not the 60 s visibility timeout"
    );
}

#[tokio::test]
async fn with_a_client_handlers_can_extend_visibility() {
    let sqs = common::sqs().await;
    let name = common::unique("lambda-extend");
    let url = common::create_queue(&sqs, &name, &[("VisibilityTimeout", "1")]).await;
    let (ev, _id) = receive_as_record(&sqs, &url, "{}").await;

    let handler = |m: Message| async move {
        assert!(m.visibility().is_extendable());
        m.extend_visibility(Duration::from_secs(30)).await?;
        Ok::<(), Error>(())
    };
    let mut svc = LambdaRunner::new(handler)
        .sqs_client(sqs.clone())
        .build()
        .expect("service");
    let resp = call(&mut svc, ev, Duration::from_secs(30))
        .await
        .expect("answer");
    assert_all_succeeded(&resp);
    // Past the queue's 1 s visibility timeout, the extension keeps it hidden.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(receive_now(&sqs, &url).await.is_empty(), "extended to 30 s");
}

/// Issue 15 §6: in Lambda the deadline a handler sees is the invocation's,
/// and an extension (which moves the message's visibility in SQS) does not
/// move it past that: the handler is stopped there whatever SQS says.
#[tokio::test]
async fn an_extension_never_moves_the_deadline_past_the_invocation() {
    let sqs = common::sqs().await;
    let name = common::unique("lambda-extend-cap");
    let url = common::create_queue(&sqs, &name, &[("VisibilityTimeout", "5")]).await;
    let (ev, _id) = receive_as_record(&sqs, &url, "{}").await;

    let invocation = Duration::from_secs(10);
    let called = Instant::now();
    let handler = move |m: Message| async move {
        let end = called + invocation;
        let before = m.deadline().expect("a deadline");
        assert!(before <= end, "{:?} past the invocation", before - end);
        m.extend_visibility(Duration::from_secs(600)).await?;
        let after = m.deadline().expect("a deadline");
        assert!(
            after <= end,
            "deadline {:?} past the invocation's after extending",
            after - end
        );
        assert!(m.time_left().expect("a deadline") <= invocation);
        Ok::<(), Error>(())
    };
    let mut svc = LambdaRunner::new(handler)
        .sqs_client(sqs.clone())
        .build()
        .expect("service");
    let resp = call(&mut svc, ev, invocation).await.expect("answer");
    assert_all_succeeded(&resp);
}
