//! The producer and large payloads, against moto's SQS and S3 (moto 5.2
//! enforces SQS's 1 MiB maximum message size and refuses a batch whose
//! bodies total over 1 MiB with `BatchRequestTooLong`).
#![allow(clippy::unwrap_used, missing_docs)]

use crate::common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use sqs_worker::idempotency::Layer;
use sqs_worker::lambda::testing::{
    assert_all_succeeded, assert_failed_ids, event, record, run_event,
};
use sqs_worker::poller::Poller;
use sqs_worker::producer::payload::{LargePayloads, PayloadLayer, S3Pointer};
use sqs_worker::producer::{Outgoing, SendError, Sender};
use sqs_worker::{Error, Handler, Message, handler_fn};

/// Receives (and deletes) every message of a queue until it stays empty.
async fn drain(client: &aws_sdk_sqs::Client, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let mut all = Vec::new();
    let mut empty = 0;
    while empty < 2 {
        let out = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let msgs = out.messages().to_vec();
        if msgs.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        for m in &msgs {
            let rh = m.receipt_handle().unwrap();
            client
                .delete_message()
                .queue_url(url)
                .receipt_handle(rh)
                .send()
                .await
                .unwrap();
        }
        all.extend(msgs);
    }
    all
}

fn body_of(n: usize, len: usize) -> String {
    let mut s = format!("{n}:");
    s.extend(std::iter::repeat_n('x', len.saturating_sub(s.len())));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_2500_messages_of_mixed_sizes_in_batches_none_lost() {
    let client = common::sqs().await;
    // Several queues: moto slows down as one queue gets deep.
    let mut tasks = Vec::new();
    for q in 0..5 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let url = common::queue(&client, &format!("prod-mixed-{q}")).await;
            let sender = Sender::new(client.clone(), &url).await.unwrap();
            // Mostly small, some near the limit: requests must split by bytes.
            let sizes: Vec<usize> = (0..500)
                .map(|i| match i % 100 {
                    0 => sqs_worker::MAX_MESSAGE_SIZE - 64,
                    37 => 400_000,
                    _ => 10 + (i * 7_919) % 8_000,
                })
                .collect();
            let msgs = sizes.iter().enumerate().map(|(i, len)| {
                Outgoing::new(body_of(q * 500 + i, *len)).string_attribute("q", q.to_string())
            });
            let results = sender.send_batch(msgs.collect::<Vec<_>>()).await;
            for (i, r) in results.iter().enumerate() {
                assert!(
                    r.is_ok(),
                    "message {i} to queue {q}: {:?}",
                    r.as_ref().err()
                );
            }
            let got = drain(&client, &url).await;
            got.iter()
                .map(|m| {
                    let body = m.body().unwrap();
                    let n: usize = body.split(':').next().unwrap().parse().unwrap();
                    assert_eq!(body.len(), sizes[n - q * 500], "message {n} arrived whole");
                    n
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        for n in t.await.unwrap() {
            assert!(seen.insert(n), "message {n} delivered twice");
        }
    }
    assert_eq!(seen.len(), 2500, "every message delivered once");
}

#[tokio::test]
async fn fifo_batch_gets_distinct_dedup_ids_and_all_arrive_in_order() {
    let client = common::sqs().await;
    let name = format!("{}.fifo", common::unique("prod-fifo"));
    let url = common::create_queue(&client, &name, &[("FifoQueue", "true")]).await;
    let sender = Sender::new(client.clone(), &url).await.unwrap();
    assert!(sender.is_fifo());
    // Identical bodies with distinct keys, and distinct bodies without a key:
    // none may be dropped as a duplicate of another.
    let msgs: Vec<_> = (0..25)
        .map(|i| {
            if i % 2 == 0 {
                Outgoing::new("same body")
                    .group_id("g")
                    .deduplication_key(format!("k{i}"))
            } else {
                Outgoing::new(format!("body {i}")).group_id("g")
            }
        })
        .collect();
    for r in sender.send_batch(msgs).await {
        assert!(r.unwrap().sequence_number.is_some());
    }
    let got = drain(&client, &url).await;
    assert_eq!(got.len(), 25, "all 25 delivered");
    let ids: HashSet<_> = got
        .iter()
        .map(|m| {
            m.attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::MessageDeduplicationId))
                .cloned()
                .unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 25, "one dedup id per message");
    let odd: Vec<_> = got
        .iter()
        .filter_map(|m| m.body())
        .filter(|b| *b != "same body")
        .collect();
    let want: Vec<_> = (0..25)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("body {i}"))
        .collect();
    assert_eq!(odd, want, "group order kept");

    // Content-based deduplication on the queue: no id is sent, SQS derives it.
    let name = format!("{}.fifo", common::unique("prod-cbd"));
    let url = common::create_queue(
        &client,
        &name,
        &[("FifoQueue", "true"), ("ContentBasedDeduplication", "true")],
    )
    .await;
    let sender = Sender::new(client.clone(), &url).await.unwrap();
    let msgs = (0..3).map(|i| Outgoing::new(format!("b{i}")).group_id("g"));
    assert!(
        sender
            .send_batch(msgs.collect::<Vec<_>>())
            .await
            .iter()
            .all(Result::is_ok)
    );
    assert_eq!(drain(&client, &url).await.len(), 3);
}

#[tokio::test]
async fn fifo_without_group_id_and_overlong_delays_are_clear_errors() {
    let client = common::sqs().await;
    let name = format!("{}.fifo", common::unique("prod-nogroup"));
    let url = common::create_queue(&client, &name, &[("FifoQueue", "true")]).await;
    let sender = Sender::new(client.clone(), &url).await.unwrap();
    let results = sender
        .send_batch([Outgoing::new("a").group_id("g"), Outgoing::new("b")])
        .await;
    assert!(results[0].is_ok(), "the valid message is still sent");
    let err = results[1].as_ref().unwrap_err();
    assert!(
        matches!(err, SendError::MissingGroupId { index: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("group id"), "{err}");
    assert_eq!(drain(&client, &url).await.len(), 1);

    let standard = common::queue(&client, "prod-delay").await;
    let sender = Sender::new(client.clone(), &standard).await.unwrap();
    let err = sender
        .send_message(Outgoing::new("x").delay(Duration::from_secs(901)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("EventBridge Scheduler"), "{err}");
    let big = "x".repeat(sqs_worker::MAX_MESSAGE_SIZE + 1);
    let err = sender.send_message(Outgoing::new(big)).await.unwrap_err();
    assert!(matches!(err, SendError::TooLarge { .. }), "{err}");
    assert!(
        sender
            .send_message(Outgoing::new("ok").delay(Duration::from_secs(1)))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn group_id_on_a_standard_queue_is_sent_and_queue_names_resolve() {
    let client = common::sqs().await;
    let name = common::unique("prod-fair");
    common::create_queue(&client, &name, &[]).await;
    let sender = Sender::new(client.clone(), &name).await.unwrap();
    assert!(sender.queue_url().ends_with(&name));
    sender
        .send_message(Outgoing::new("tenant message").group_id("tenant-a"))
        .await
        .unwrap();
    let got = drain(&client, sender.queue_url()).await;
    let group = got[0]
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId));
    assert_eq!(group.map(String::as_str), Some("tenant-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_enqueues_resolve_once_sqs_accepted_them() {
    let client = common::sqs().await;
    let url = common::queue(&client, "prod-coalesce").await;
    let sender = Sender::new(client.clone(), &url).await.unwrap();
    let coalescer = sender.coalescing(Duration::from_millis(5));
    let mut pending = Vec::new();
    for i in 0..35 {
        pending.push(coalescer.enqueue(format!("m{i}")).await);
    }
    let mut ids = HashSet::new();
    for p in pending {
        ids.insert(p.await.unwrap().message_id);
    }
    coalescer.close().await;
    let got = drain(&client, &url).await;
    assert_eq!(got.len(), 35);
    let delivered: HashSet<_> = got
        .iter()
        .map(|m| m.message_id().unwrap().to_owned())
        .collect();
    assert_eq!(
        delivered, ids,
        "the ids the handles gave are the delivered ones"
    );
}

async fn payload_sender(
    sqs: &aws_sdk_sqs::Client,
    s3: &aws_sdk_s3::Client,
    url: &str,
    bucket: &str,
) -> Sender {
    Sender::new(sqs.clone(), url)
        .await
        .unwrap()
        .large_payloads(LargePayloads::new(s3.clone(), bucket).key_prefix("payloads/"))
}

fn five_mib() -> String {
    (0..5 * 1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_mib_payload_round_trip_through_the_poller() {
    let (sqs, s3) = (common::sqs().await, common::s3().await);
    let url = common::queue(&sqs, "prod-large").await;
    let bucket = common::bucket(&s3, "prod-large").await;
    let payload = five_mib();
    let sender = payload_sender(&sqs, &s3, &url, &bucket).await;
    sender
        .send_message(Outgoing::new(payload.clone()))
        .await
        .unwrap();
    // What went to SQS is the Java client's pointer.
    let peek = sqs
        .receive_message()
        .queue_url(&url)
        .message_attribute_names("All")
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    let raw = &peek.messages()[0];
    let pointer = S3Pointer::parse(raw.body().unwrap()).unwrap();
    assert!(
        raw.body().unwrap().starts_with(
            r#"["software.amazon.payloadoffloading.PayloadS3Pointer",{"s3BucketName":"#
        )
    );
    assert!(pointer.key.starts_with("payloads/"));
    let size = raw.message_attributes().unwrap()["ExtendedPayloadSize"].clone();
    assert_eq!(
        (size.data_type(), size.string_value()),
        ("Number", Some("5242880"))
    );

    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let handler = PayloadLayer::new(s3.clone())
        .allow_buckets([bucket.clone()])
        .layer(handler_fn(move |m: Message| {
            let s = s.clone();
            async move {
                // The resolved message is still the delivery the poller
                // holds: its visibility can be extended.
                m.extend_visibility(Duration::from_secs(30)).await?;
                s.lock().unwrap().push((
                    m.body().len(),
                    m.body() == five_mib(),
                    m.payload_origin().cloned(),
                ));
                Ok::<(), Error>(())
            }
        }));
    let summary = Poller::builder(url.as_str(), handler)
        .client(sqs.clone())
        .wait_time(Duration::from_secs(1))
        .idle_exit(Duration::from_secs(2))
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    let _ = summary;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (len, same, origin) = &seen[0];
    assert_eq!((*len, *same), (payload.len(), true));
    let origin = origin.clone().unwrap();
    assert_eq!(
        (origin.bucket.as_str(), origin.key.as_str(), origin.size),
        (bucket.as_str(), pointer.key.as_str(), 5_242_880)
    );
    assert!(
        !common::object_exists(&s3, &bucket, &pointer.key).await,
        "deleted after success"
    );
    assert_eq!(common::depth(&sqs, &url).await, (0, 0));
}

/// Sends a payload through the producer and returns the SQS message's body
/// and size attribute, as a Lambda record would carry them.
async fn offloaded(
    sqs: &aws_sdk_sqs::Client,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    body: String,
) -> (String, String) {
    let url = common::queue(sqs, "prod-lambda").await;
    let sender = payload_sender(sqs, s3, &url, bucket).await;
    sender.send_message(Outgoing::new(body)).await.unwrap();
    let got = drain(sqs, &url).await;
    let attr = got[0].message_attributes().unwrap()["ExtendedPayloadSize"]
        .string_value()
        .unwrap()
        .to_owned();
    (got[0].body().unwrap().to_owned(), attr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_mib_payload_round_trip_through_a_lambda_event() {
    let (sqs, s3) = (common::sqs().await, common::s3().await);
    let bucket = common::bucket(&s3, "prod-lambda").await;
    let (body, size) = offloaded(&sqs, &s3, &bucket, five_mib()).await;
    let key = S3Pointer::parse(&body).unwrap().key;
    let handler = PayloadLayer::new(s3.clone()).layer(handler_fn(|m: Message| async move {
        let from_s3 = m
            .payload_origin()
            .map(|o| (o.size, o.key.starts_with("payloads/")));
        if m.body() == five_mib() && from_s3 == Some((5_242_880, true)) {
            Ok(())
        } else {
            Err(Error::msg("wrong payload"))
        }
    }));
    let ev = event([record("m1", body).number_attribute("ExtendedPayloadSize", size)]);
    assert_all_succeeded(&run_event(handler, ev).await.unwrap());
    assert!(
        !common::object_exists(&s3, &bucket, &key).await,
        "deleted after success"
    );
}

#[tokio::test]
async fn pointers_written_by_the_java_and_python_clients_are_read() {
    let s3 = common::s3().await;
    let bucket = common::bucket(&s3, "prod-compat").await;
    for key in ["java-key", "python-key", "legacy-key"] {
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(format!("payload of {key}").into_bytes().into())
            .send()
            .await
            .unwrap();
    }
    // Java 2.x (Jackson, compact), Python (json.dumps: spaces, String size),
    // and the old plain object with `SQSLargePayloadSize`.
    let java = format!(
        r#"["software.amazon.payloadoffloading.PayloadS3Pointer",{{"s3BucketName":"{bucket}","s3Key":"java-key"}}]"#
    );
    let python = format!(
        r#"["software.amazon.payloadoffloading.PayloadS3Pointer", {{"s3BucketName": "{bucket}", "s3Key": "python-key"}}]"#
    );
    let legacy = format!(r#"{{"s3BucketName":"{bucket}","s3Key":"legacy-key"}}"#);
    let ev = event([
        record("java", java).number_attribute("ExtendedPayloadSize", 20),
        record("python", python).string_attribute("ExtendedPayloadSize", "22"),
        record("legacy", legacy).number_attribute("SQSLargePayloadSize", 22),
    ]);
    let handler = PayloadLayer::new(s3.clone())
        .keep_objects()
        .layer(handler_fn(|m: Message| async move {
            let want = format!("payload of {}-key", m.id());
            if m.body() == want {
                Ok(())
            } else {
                Err(Error::msg(format!("{} saw the wrong body", m.id())))
            }
        }));
    assert_all_succeeded(&run_event(handler, ev).await.unwrap());
    assert!(
        common::object_exists(&s3, &bucket, "java-key").await,
        "kept with keep_objects"
    );
}

#[tokio::test]
async fn the_object_stays_when_the_handler_fails() {
    let (sqs, s3) = (common::sqs().await, common::s3().await);
    let bucket = common::bucket(&s3, "prod-fail").await;
    let (body, size) = offloaded(&sqs, &s3, &bucket, "x".repeat(2 * 1024 * 1024)).await;
    let key = S3Pointer::parse(&body).unwrap().key;
    let handler = PayloadLayer::new(s3.clone()).layer(handler_fn(|_m: Message| async {
        Err::<(), _>(Error::msg("downstream down"))
    }));
    let ev = event([record("m1", body).number_attribute("ExtendedPayloadSize", size)]);
    assert_failed_ids(&run_event(handler, ev).await.unwrap(), ["m1"]);
    assert!(
        common::object_exists(&s3, &bucket, &key).await,
        "kept for the retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_object_goes_to_the_dlq_with_an_error_naming_bucket_and_key() {
    let (sqs, s3) = (common::sqs().await, common::s3().await);
    let url = common::queue(&sqs, "prod-missing").await;
    let dlq = common::queue(&sqs, "prod-missing-dlq").await;
    let bucket = common::bucket(&s3, "prod-missing").await;
    let pointer = S3Pointer {
        bucket: bucket.clone(),
        key: "gone/1".into(),
    };
    sqs.send_message()
        .queue_url(&url)
        .message_body(pointer.to_body())
        .message_attributes(
            "ExtendedPayloadSize",
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("Number")
                .string_value("10")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let ran = Arc::new(Mutex::new(0));
    let r = ran.clone();
    let handler = PayloadLayer::new(s3.clone()).layer(handler_fn(move |_m: Message| {
        *r.lock().unwrap() += 1;
        async { Ok::<(), Error>(()) }
    }));
    Poller::builder(url.as_str(), handler)
        .client(sqs.clone())
        .dead_letter_queue(dlq.as_str())
        .wait_time(Duration::from_secs(1))
        .idle_exit(Duration::from_secs(2))
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(*ran.lock().unwrap(), 0, "the handler never saw it");
    let dead = drain(&sqs, &dlq).await;
    assert_eq!(dead.len(), 1);
    let error = dead[0].message_attributes().unwrap()["SqsWorker.Error"]
        .string_value()
        .unwrap()
        .to_owned();
    assert!(
        error.contains(&bucket) && error.contains("gone/1"),
        "{error}"
    );
    assert_eq!(
        dead[0].body(),
        Some(pointer.to_body().as_str()),
        "the pointer is kept"
    );
    assert_eq!(common::depth(&sqs, &url).await, (0, 0));
}

#[tokio::test]
async fn a_bucket_outside_the_allow_list_is_a_permanent_failure() {
    let s3 = common::s3().await;
    let bucket = common::bucket(&s3, "prod-other").await;
    s3.put_object()
        .bucket(&bucket)
        .key("k")
        .body(b"secret".to_vec().into())
        .send()
        .await
        .unwrap();
    let pointer = S3Pointer {
        bucket: bucket.clone(),
        key: "k".into(),
    };
    let handler = PayloadLayer::new(s3.clone())
        .allow_buckets(["payloads-only"])
        .layer(handler_fn(|_m: Message| async { Ok::<(), Error>(()) }));
    let msg = Message::builder("m-9", pointer.to_body())
        .message_attribute(
            "ExtendedPayloadSize",
            sqs_worker::MessageAttribute::number(6),
        )
        .build();
    let err = handler.handle(msg).await.unwrap_err();
    assert!(err.is_permanent());
    let text = err.to_string();
    assert!(
        text.contains("m-9") && text.contains(&bucket) && !text.contains("secret"),
        "{text}"
    );
    assert!(common::object_exists(&s3, &bucket, "k").await);
}
