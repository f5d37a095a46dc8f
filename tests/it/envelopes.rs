//! Envelopes and routing, end to end: the AWS documentation's sample bodies
//! through the extractors; three message types on one queue (SNS wrapped and
//! raw from a real topic, EventBridge-shaped, plain JSON) reaching three
//! typed handlers through a `Router`, in the poller (against the local
//! server) and in Lambda (through the testing helpers); unrouted types
//! dead-lettered with their type named; S3's test event acknowledged
//! without a handler call; arbitrary bodies never panic.

#![allow(clippy::unwrap_used)] // tests may unwrap

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use sqs_worker::poller::Poller;
use sqs_worker::{
    Error, EventBridge, Extracted, FromMessage, Handler, Json, Message, Router, S3Event, Sns,
    SnsDelivery, TypeSource,
};
use sqs_worker_lambda::testing::{assert_failed_ids, event, record, run_event};

#[derive(Debug, serde::Deserialize)]
struct Placed {
    order_id: u64,
}
#[derive(Debug, serde::Deserialize)]
struct Cancelled {
    order_id: u64,
    reason: String,
}
#[derive(Debug, serde::Deserialize)]
struct Shipped {
    order_id: u64,
    carrier: String,
}

type Seen = Arc<Mutex<Vec<String>>>;

/// Three routes, each with its own extractor, recording what they saw.
fn router(seen: &Seen) -> Router {
    let (a, b, c) = (seen.clone(), seen.clone(), seen.clone());
    Router::new()
        .type_from([
            TypeSource::attribute("type"),
            TypeSource::DetailType,
            TypeSource::SnsSubject,
            TypeSource::sns_attribute("type"),
            TypeSource::field("kind"),
        ])
        .route("OrderPlaced", move |Json(p): Json<Placed>| {
            let seen = a.clone();
            async move {
                seen.lock().unwrap().push(format!("placed {}", p.order_id));
                Ok::<_, Error>(())
            }
        })
        .route("OrderCancelled", move |ev: EventBridge<Vec<Cancelled>>| {
            let seen = b.clone();
            async move {
                for c in ev.detail {
                    seen.lock()
                        .unwrap()
                        .push(format!("cancelled {} {}", c.order_id, c.reason));
                }
                Ok::<_, Error>(())
            }
        })
        .route("OrderShipped", move |sns: Sns<Shipped>| {
            let seen = c.clone();
            async move {
                let how = match sns.delivery {
                    SnsDelivery::Wrapped => "wrapped",
                    SnsDelivery::Raw => "raw",
                };
                let m = sns.message;
                seen.lock()
                    .unwrap()
                    .push(format!("shipped {} {} {how}", m.order_id, m.carrier));
                Ok::<_, Error>(())
            }
        })
}

fn sorted(seen: &Seen) -> Vec<String> {
    let mut v = seen.lock().unwrap().clone();
    v.sort();
    v
}

fn extract<X: FromMessage>(body: &str) -> Result<Extracted<X>, Error> {
    X::from_message(&Message::builder("fixture-1", body).build())
}

fn value<X: FromMessage>(body: &str) -> X {
    match extract::<X>(body) {
        Ok(Extracted::Value(x)) => x,
        Ok(Extracted::Acknowledge(r)) => panic!("acknowledged: {r:?}"),
        Err(e) => panic!("{e}"),
    }
}

// ------------------------------------------------------------ fixtures

#[test]
fn sns_fixtures_unwrap_with_their_metadata() {
    let sns: Sns<Shipped> = value(&common::fixture("sns-wrapped.json"));
    assert_eq!((sns.message.order_id, &*sns.message.carrier), (42, "UPS"));
    assert_eq!(sns.delivery, SnsDelivery::Wrapped);
    assert_eq!(sns.subject.as_deref(), Some("OrderShipped"));
    assert_eq!(
        sns.topic_arn.as_deref(),
        Some("arn:aws:sns:us-west-2:123456789012:MyTopic")
    );
    assert_eq!(
        sns.message_id.as_deref(),
        Some("22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324")
    );
    assert_eq!(sns.timestamp.as_deref(), Some("2012-05-02T00:54:06.655Z"));
    assert!(sns.attributes.is_empty());

    let sns: Sns<Shipped> = value(&common::fixture("sns-wrapped-attributes.json"));
    assert_eq!(sns.message.order_id, 43);
    assert_eq!(sns.subject, None);
    assert_eq!(sns.attribute("type"), Some("OrderShipped"));
    assert_eq!(sns.attribute("priority"), Some("3"));
    assert_eq!(sns.attribute("tags"), Some(r#"["value1", "value2"]"#));
    let blob = sns.attributes.get("blob").unwrap();
    assert_eq!(
        blob.value,
        sqs_worker::AttributeValue::Binary(b"bonvalue".to_vec())
    );

    // Raw delivery: the body is the message, attributes are the SQS ones.
    let raw = Message::builder("m", common::fixture("sns-raw.json"))
        .message_attribute("type", sqs_worker::MessageAttribute::string("OrderShipped"))
        .build();
    let Ok(Extracted::Value(sns)) = Sns::<Shipped>::from_message(&raw) else {
        panic!("raw delivery")
    };
    assert_eq!((sns.message.order_id, sns.delivery), (44, SnsDelivery::Raw));
    assert_eq!(sns.attribute("type"), Some("OrderShipped"));
    assert_eq!(sns.topic_arn, None);

    // Sns<String>: the text as it is, JSON or not.
    let text: Sns<String> = value(&common::fixture("sns-wrapped.json"));
    assert_eq!(text.message, r#"{"order_id": 42, "carrier": "UPS"}"#);
    let text: Sns<String> = value("plain words, not JSON");
    assert_eq!(text.message, "plain words, not JSON");
}

#[test]
fn eventbridge_fixtures_round_trip() {
    for name in ["eventbridge-object.json", "eventbridge-array.json"] {
        let text = common::fixture(name);
        let ev: EventBridge<serde_json::Value> = value(&text);
        let back = serde_json::to_value(&ev).unwrap();
        let original: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, original, "{name} round-trips");
    }
    let ev: EventBridge<Vec<Cancelled>> = value(&common::fixture("eventbridge-array.json"));
    assert_eq!(ev.detail_type, "OrderCancelled");
    assert_eq!(ev.source, "com.example.orders");
    assert_eq!(ev.detail.len(), 2);
    assert_eq!((ev.detail[1].order_id, &*ev.detail[1].reason), (8, "fraud"));

    #[derive(serde::Deserialize)]
    struct StateChange {
        #[serde(rename = "instance-id")]
        instance_id: String,
        state: String,
    }
    let ev: EventBridge<StateChange> = value(&common::fixture("eventbridge-object.json"));
    assert_eq!(ev.detail.instance_id, "i-1234567890abcdef0");
    assert_eq!(ev.detail.state, "terminated");
    assert_eq!(ev.resources.len(), 1);
    assert_eq!((&*ev.account, &*ev.region), ("111122223333", "us-west-1"));
}

#[test]
fn s3_fixtures_direct_via_sns_and_via_eventbridge() {
    let direct: S3Event = value(&common::fixture("s3-put-encoded-key.json"));
    let via_sns: S3Event = value(&common::fixture("s3-via-sns.json"));
    assert_eq!(direct, via_sns, "S3 → SNS → SQS reads like S3 → SQS");
    let wrapped: Sns<S3Event> = value(&common::fixture("s3-via-sns.json"));
    assert_eq!(wrapped.message, direct);
    assert_eq!(
        wrapped.topic_arn.as_deref(),
        Some("arn:aws:sns:us-west-2:123456789012:s3-events")
    );
    let r = &direct.records[0];
    assert_eq!(r.key, "photos/summer 2024/beach(1) été.jpg", "URL-decoded");
    assert_eq!(r.event_name, "ObjectCreated:Put");
    assert_eq!((&*r.bucket, r.size), ("amzn-s3-demo-bucket", Some(1024)));
    assert_eq!(r.etag.as_deref(), Some("0123456789abcdef0123456789abcdef"));
    assert_eq!(r.sequencer.as_deref(), Some("0A1B2C3D4E5F678901"));
    assert_eq!(r.region, "us-west-2");

    let bridged: S3Event = value(&common::fixture("s3-via-eventbridge.json"));
    let r = &bridged.records[0];
    assert_eq!(
        (&*r.bucket, &*r.key),
        ("amzn-s3-demo-bucket1", "example-key")
    );
    assert_eq!((&*r.event_name, r.size), ("Object Created", Some(5)));
    assert_eq!(
        r.version_id.as_deref(),
        Some("IYV3p45BT0ac8hjHg1houSdS1a.Mro8e")
    );

    // The serialized records carry the decoded values.
    let json = serde_json::to_value(&direct).unwrap();
    assert_eq!(
        json["records"][0]["key"],
        "photos/summer 2024/beach(1) été.jpg"
    );
}

#[test]
fn the_s3_test_event_is_acknowledged_directly_and_through_sns() {
    let test = common::fixture("s3-test-event.json");
    assert!(matches!(
        extract::<S3Event>(&test),
        Ok(Extracted::Acknowledge(sqs_worker::AckReason::S3TestEvent))
    ));
    let via_sns = serde_json::json!({
        "Type": "Notification", "MessageId": "x", "TopicArn": "arn:aws:sns:us-east-1:1:t",
        "Message": test, "Timestamp": "2024-01-01T00:00:00Z"
    })
    .to_string();
    assert!(matches!(
        extract::<Sns<S3Event>>(&via_sns),
        Ok(Extracted::Acknowledge(sqs_worker::AckReason::S3TestEvent))
    ));
}

#[test]
fn bodies_that_do_not_match_fail_permanently_naming_the_envelope_not_the_body() {
    let cases: [(Result<(), Error>, &str); 5] = [
        (
            extract::<Sns<Shipped>>(r#"{"order_id":"SECRET-1"}"#).map(drop),
            "Sns<Shipped>",
        ),
        (
            extract::<EventBridge<Placed>>(&common::fixture("sns-wrapped.json")).map(drop),
            "EventBridge<Placed>",
        ),
        (
            extract::<EventBridge<Vec<Cancelled>>>(
                r#"{"id":"1","detail-type":"x","source":"s","detail":[{"order_id":"SECRET-2"}]}"#,
            )
            .map(drop),
            "EventBridge<Vec<Cancelled>>",
        ),
        (
            extract::<S3Event>(r#"{"SECRET-3": 1}"#).map(drop),
            "S3Event",
        ),
        (
            extract::<S3Event>(
                r#"{"Records":[{"s3":{"bucket":{"name":"b"},"object":{"key":"%FF%FE"}}}]}"#,
            )
            .map(drop),
            "S3Event",
        ),
    ];
    for (result, envelope) in cases {
        let e = result.unwrap_err();
        let s = e.to_string();
        assert!(e.is_permanent(), "{s}");
        assert!(s.contains("fixture-1") && s.contains(envelope), "{s}");
        assert!(!s.contains("SECRET"), "leaked body data: {s}");
    }
}

// ------------------------------------------------------------ Lambda

#[tokio::test]
async fn lambda_routes_three_types_fails_unrouted_and_acknowledges_test_events() {
    let seen = Seen::default();
    let ev = event([
        record("placed", r#"{"kind": "OrderPlaced", "order_id": 1}"#),
        record("cancelled", common::fixture("eventbridge-array.json")),
        record("wrapped", common::fixture("sns-wrapped.json")),
        record(
            "wrapped-attrs",
            common::fixture("sns-wrapped-attributes.json"),
        ),
        record("raw", common::fixture("sns-raw.json")).string_attribute("type", "OrderShipped"),
        record("unrouted", r#"{"kind": "OrderRefunded", "order_id": 9}"#),
        record("untyped", "no type anywhere"),
        record("bad-body", r#"{"kind": "OrderPlaced", "order_id": "x"}"#),
    ]);
    let resp = run_event(router(&seen), ev).await.unwrap();
    assert_failed_ids(&resp, ["unrouted", "untyped", "bad-body"]);
    assert_eq!(
        sorted(&seen),
        [
            "cancelled 7 customer",
            "cancelled 8 fraud",
            "placed 1",
            "shipped 42 UPS wrapped",
            "shipped 43 DHL wrapped",
            "shipped 44 FedEx raw",
        ]
    );

    // Acknowledge-and-count instead of failing.
    let resp = run_event(
        router(&seen).acknowledge_unrouted(),
        event([record("unrouted", r#"{"kind": "OrderRefunded"}"#)]),
    )
    .await
    .unwrap();
    assert_failed_ids(&resp, [] as [&str; 0]);

    // S3: the test event deletes without a call; the three shapes are handled.
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    let s3 = move |e: S3Event| {
        let c = c.clone();
        async move {
            c.lock()
                .unwrap()
                .extend(e.records.into_iter().map(|r| r.key));
            Ok::<_, Error>(())
        }
    };
    let ev = event([
        record("test", common::fixture("s3-test-event.json")),
        record("put", common::fixture("s3-put-encoded-key.json")),
        record("sns", common::fixture("s3-via-sns.json")),
        record("bridge", common::fixture("s3-via-eventbridge.json")),
    ]);
    assert_failed_ids(&run_event(s3, ev).await.unwrap(), [] as [&str; 0]);
    let mut keys = calls.lock().unwrap().clone();
    keys.sort();
    assert_eq!(
        keys,
        [
            "example-key",
            "photos/summer 2024/beach(1) été.jpg",
            "photos/summer 2024/beach(1) été.jpg"
        ],
        "three handler calls, none for the test event"
    );
}

#[tokio::test]
async fn a_router_is_a_handler_inside_the_idempotency_layer() {
    use sqs_worker::idempotency::Layer as _;
    use sqs_worker::idempotency::{IdempotencyLayer, MemoryStore};
    let seen = Seen::default();
    let h = IdempotencyLayer::new(MemoryStore::new()).layer(router(&seen));
    let m = || Message::builder("same-id", r#"{"kind":"OrderPlaced","order_id":5}"#).build();
    h.handle(m()).await.unwrap();
    h.handle(m()).await.unwrap();
    assert_eq!(
        sorted(&seen),
        ["placed 5"],
        "the second delivery is skipped"
    );
}

// ------------------------------------------------------------ poller (moto)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_routes_sns_eventbridge_and_json_and_dead_letters_unrouted_types() {
    let client = common::sqs().await;
    let sns = aws_sdk_sns::Client::new(&common::sdk_config().await);
    let url = common::queue(&client, "routed").await;
    let dlq = common::queue(&client, "routed-dlq").await;
    let arn = common::queue_arn(&client, &url).await;
    let type_attr = aws_sdk_sns::types::MessageAttributeValue::builder()
        .data_type("String")
        .string_value("OrderShipped")
        .build()
        .unwrap();
    for (raw, body) in [
        (false, r#"{"order_id":1,"carrier":"UPS"}"#),
        (true, r#"{"order_id":2,"carrier":"DHL"}"#),
    ] {
        let topic = common::sns_topic_to(&sns, &arn, raw).await;
        sns.publish()
            .topic_arn(topic)
            .subject("OrderShipped")
            .message(body)
            .message_attributes("type", type_attr.clone())
            .send()
            .await
            .unwrap();
    }
    for body in [
        common::fixture("eventbridge-array.json"),
        r#"{"kind":"OrderPlaced","order_id":3}"#.to_owned(),
        r#"{"kind":"OrderRefunded","order_id":4}"#.to_owned(),
    ] {
        client
            .send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    let seen = Seen::default();
    let dead = Arc::new(Mutex::new(Vec::new()));
    let (c, d, s) = (client.clone(), dead.clone(), seen.clone());
    let builder = Poller::builder(url.as_str(), router(&seen))
        .client(client.clone())
        .dead_letter_queue(dlq.as_str());
    common::run_until(builder, Duration::from_secs(60), async || {
        let out = c
            .receive_message()
            .queue_url(&dlq)
            .message_attribute_names("All")
            .wait_time_seconds(0)
            .send()
            .await
            .unwrap();
        d.lock().unwrap().extend(out.messages().iter().cloned());
        let done = s.lock().unwrap().len() >= 5 && !d.lock().unwrap().is_empty();
        done && common::depth(&c, &url).await == (0, 0)
    })
    .await;
    assert_eq!(
        sorted(&seen),
        [
            "cancelled 7 customer",
            "cancelled 8 fraud",
            "placed 3",
            "shipped 1 UPS wrapped",
            "shipped 2 DHL raw",
        ]
    );
    let dead = dead.lock().unwrap().clone();
    assert_eq!(dead.len(), 1, "only the unrouted type is dead-lettered");
    let error = dead[0].message_attributes().unwrap()["SqsWorker.Error"]
        .string_value()
        .unwrap()
        .to_owned();
    assert!(error.contains("OrderRefunded"), "{error}");
    assert!(!error.contains("order_id"), "no body in the error: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_acknowledges_the_s3_test_event_without_a_handler_call() {
    let client = common::sqs().await;
    let url = common::queue(&client, "s3").await;
    let dlq = common::queue(&client, "s3-dlq").await;
    for name in ["s3-test-event.json", "s3-put-encoded-key.json"] {
        client
            .send_message()
            .queue_url(&url)
            .message_body(common::fixture(name))
            .send()
            .await
            .unwrap();
    }
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    let handler = move |e: S3Event| {
        let c = c.clone();
        async move {
            c.lock().unwrap().push(e.records.len());
            Ok::<_, Error>(())
        }
    };
    let (sqs, k) = (client.clone(), calls.clone());
    let builder = Poller::builder(url.as_str(), handler)
        .client(client.clone())
        .dead_letter_queue(dlq.as_str());
    common::run_until(builder, Duration::from_secs(60), async || {
        !k.lock().unwrap().is_empty() && common::depth(&sqs, &url).await == (0, 0)
    })
    .await;
    assert_eq!(
        *calls.lock().unwrap(),
        [1],
        "one call, for the put; none for the test event"
    );
    assert_eq!(
        common::depth(&client, &dlq).await,
        (0, 0),
        "nothing dead-lettered"
    );
}

// ------------------------------------------------------------ property

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn arbitrary_bodies_never_panic_the_extractors_or_the_router(
        body in prop_oneof![
            any::<String>(),
            "[{}\\[\\]\":,a-zA-Z0-9%+ -]{0,80}",
            any::<String>().prop_map(|s| serde_json::json!({
                "Type": "Notification", "TopicArn": "t", "Message": s, "Subject": s
            }).to_string()),
            any::<String>().prop_map(|s| format!(
                r#"{{"id":"1","detail-type":{s:?},"source":"aws.s3","detail":{{"bucket":{{"name":"b"}},"object":{{"key":{s:?}}}}}}}"#
            )),
            any::<String>().prop_map(|s| format!(
                r#"{{"Records":[{{"s3":{{"bucket":{{"name":"b"}},"object":{{"key":{s:?}}}}}}}]}}"#
            )),
        ]
    ) {
        let _ = extract::<Json<Placed>>(&body);
        let _ = extract::<Sns<Shipped>>(&body);
        let _ = extract::<Sns<String>>(&body);
        let _ = extract::<Sns<S3Event>>(&body);
        let _ = extract::<EventBridge<serde_json::Value>>(&body);
        let _ = extract::<S3Event>(&body);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let seen = Seen::default();
        let r = router(&seen);
        let m = Message::builder("p", body.clone()).build();
        let _ = rt.block_on(r.handle(m));
    }
}
