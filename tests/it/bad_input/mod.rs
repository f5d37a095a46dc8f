//! Bad input: each gets a clear error, nothing is lost, nothing panics.
//! Against the local server (moto) for what SQS itself says, and through the
//! Lambda adapter for what an event can carry. Start-up errors (wrong queue,
//! missing region, refused credentials) are asserted on their text.
//!
//! Already covered elsewhere, not repeated here: an S3 event, a scheduled
//! event, a record without `messageId` or without a body (`lambda/`), a
//! 1 MiB body through the poller and a missing queue naming the queue
//! (`poller/options.rs`), undecodable bodies in the engine's logs
//! (`tests/observability.rs`, its own binary).

#![allow(clippy::unwrap_used)] // tests may unwrap

use crate::common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessageAttribute};
use aws_sdk_sqs::types::MessageAttributeValue;
use sqs_worker::poller::Poller;
use sqs_worker::{AttributeValue, Error, Json, MAX_MESSAGE_SIZE, Message};
use sqs_worker_lambda::SqsPayload;
use sqs_worker_lambda::testing::{assert_failed_ids, event, record, run_event};

#[derive(Debug, serde::Deserialize)]
struct Order {
    order_id: u64,
}

type Seen = Arc<Mutex<Vec<Message>>>;

fn attr(data_type: &str, s: Option<&str>, b: Option<&[u8]>) -> MessageAttributeValue {
    let mut v = MessageAttributeValue::builder().data_type(data_type);
    if let Some(s) = s {
        v = v.string_value(s);
    }
    if let Some(b) = b {
        v = v.binary_value(aws_sdk_sqs::primitives::Blob::new(b));
    }
    v.build().unwrap()
}

// ------------------------------------------------------------ bodies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_for_a_typed_handler_is_dead_lettered_with_a_clear_error() {
    let client = common::sqs().await;
    let url = common::queue(&client, "badjson").await;
    let dlq = common::queue(&client, "badjson-dlq").await;
    let ok: Arc<Mutex<Vec<u64>>> = Arc::default();
    let o = ok.clone();
    let handler = move |Json(order): Json<Order>| {
        let o = o.clone();
        async move {
            o.lock().unwrap().push(order.order_id);
            Ok::<_, Error>(())
        }
    };
    let bodies = [
        r#"{"order_id": 1}"#,
        r#"{"order_id": "#,       // truncated
        r#"{"order_id": "two"}"#, // wrong type
        "order 3",                // not JSON
        r#"{"order_id": 4}"#,
        r#"{"order_id": 18446744073709551616}"#, // u64 overflow
    ];
    let mut ids = HashMap::new();
    for body in &bodies {
        let out = client
            .send_message()
            .queue_url(&url)
            .message_body(*body)
            .send()
            .await
            .unwrap();
        ids.insert(out.message_id().unwrap().to_owned(), *body);
    }
    let dead: Arc<Mutex<Vec<aws_sdk_sqs::types::Message>>> = Arc::default();
    let summary = {
        let (c, d, dead) = (client.clone(), dlq.clone(), dead.clone());
        let probe = tokio::spawn(async move {
            let (client, dlq) = (c, d);
            let start = Instant::now();
            while dead.lock().unwrap().len() < 4 && start.elapsed() < Duration::from_secs(30) {
                let out = client
                    .receive_message()
                    .queue_url(&dlq)
                    .max_number_of_messages(10)
                    .message_attribute_names("All")
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .unwrap();
                dead.lock().unwrap().extend(out.messages().iter().cloned());
            }
        });
        let s = common::run_until(
            Poller::builder(url.as_str(), handler)
                .client(client.clone())
                .dead_letter_queue(dlq.as_str()),
            Duration::from_secs(40),
            async || probe.is_finished(),
        )
        .await;
        probe.await.unwrap();
        s
    };
    let mut handled = ok.lock().unwrap().clone();
    handled.sort_unstable();
    assert_eq!(handled, [1, 4]);
    let dead = dead.lock().unwrap().clone();
    assert_eq!(dead.len(), 4, "every bad body dead-lettered once");
    for m in &dead {
        let attrs = m.message_attributes().unwrap();
        let text = |k: &str| {
            attrs
                .get(k)
                .and_then(|a| a.string_value())
                .unwrap_or_default()
                .to_owned()
        };
        let id = text(sqs_worker::poller::dead_letter::MESSAGE_ID);
        let original = ids[&id];
        assert_eq!(m.body(), Some(original), "the body kept intact");
        let error = text(sqs_worker::poller::dead_letter::ERROR);
        assert!(
            error.contains(&format!("message {id}: body is not a valid Order")),
            "clear error naming the message and the type: {error}"
        );
        assert!(error.contains("line 1 column"), "{error}");
        assert_eq!(
            text(sqs_worker::poller::dead_letter::ERROR_KIND),
            "permanent"
        );
    }
    assert_eq!(
        (summary.succeeded, summary.dead_lettered),
        (2, 4),
        "{summary}"
    );
    assert_eq!(
        common::depth(&client, &url).await,
        (0, 0),
        "nothing left behind"
    );
}

#[tokio::test]
async fn bodies_with_characters_sqs_refuses_are_refused_or_arrive_unchanged() {
    let client = common::sqs().await;
    let url = common::queue(&client, "badchars").await;
    // SQS allows #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF and
    // refuses other characters on send (InvalidMessageContents), so they never
    // reach a worker. moto 5.2 checks fewer: what it accepts must then arrive
    // byte for byte, not be dropped or mangled by our conversion.
    let mut accepted = Vec::new();
    for body in [
        "nul\u{0}byte",
        "bell\u{7}",
        "nonchar\u{FFFF}",
        "ctl\u{1b}[0m",
    ] {
        match client
            .send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await
        {
            Ok(_) => accepted.push(body.to_owned()),
            Err(err) => {
                let text = format!("{}", aws_sdk_sqs::error::DisplayErrorContext(&err));
                assert!(
                    text.contains("InvalidMessageContents") || text.contains("invalid characters"),
                    "{body:?}: {text}"
                );
            }
        }
    }
    println!(
        "moto accepted {} of 4 bodies with characters SQS refuses: {accepted:?}",
        accepted.len()
    );
    // Everything else is a string, astral plane included; it arrives unchanged.
    let body = "naïve 🦀 \u{D7FF}\u{E000}\u{10FFFF}\t\r\n";
    client
        .send_message()
        .queue_url(&url)
        .message_body(body)
        .send()
        .await
        .unwrap();
    accepted.push(body.to_owned());
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let handler = move |m: Message| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(m);
            Ok::<_, Error>(())
        }
    };
    let n = accepted.len();
    common::run_until(
        Poller::builder(url.as_str(), handler).client(client.clone()),
        Duration::from_secs(20),
        async || seen.lock().unwrap().len() >= n,
    )
    .await;
    let mut got: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|m| m.body().to_owned())
        .collect();
    got.sort();
    accepted.sort();
    assert_eq!(got, accepted, "every accepted body arrived unchanged");
    assert_eq!(common::depth(&client, &url).await, (0, 0));
}

#[tokio::test]
async fn lambda_events_with_bad_escapes_or_bytes_fail_as_a_whole_with_a_clear_error() {
    // The Lambda runtime hands the function bytes; JSON with a lone surrogate
    // escape, an invalid escape or invalid UTF-8 cannot become a Rust
    // String. The event fails to deserialize: a function error, so Lambda
    // returns the whole batch to the queue (nothing is lost) and after
    // maxReceiveCount the redrive policy takes it.
    let good = serde_json::to_string(&event([record("m1", "ok")])).unwrap();
    serde_json::from_str::<SqsPayload>(&good).expect("the untouched event parses");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "lone surrogate",
            good.replace("\"ok\"", "\"\\ud800\"").into_bytes(),
        ),
        (
            "invalid escape",
            good.replace("\"ok\"", "\"\\x41\"").into_bytes(),
        ),
        ("invalid UTF-8", {
            let mut b = good.replace("\"ok\"", "\"__\"").into_bytes();
            let at = b.windows(2).position(|w| w == b"__").unwrap();
            b[at] = 0xff;
            b[at + 1] = 0xfe;
            b
        }),
        ("truncated", good.as_bytes()[..good.len() / 2].to_vec()),
        ("not JSON", b"Records: []".to_vec()),
        ("null", b"null".to_vec()),
        ("array", b"[]".to_vec()),
        ("Records not a list", br#"{"Records": {}}"#.to_vec()),
        ("a null record", br#"{"Records": [null]}"#.to_vec()),
        (
            "messageId a number",
            br#"{"Records": [{"messageId": 5}]}"#.to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        let err = serde_json::from_slice::<SqsPayload>(&bytes)
            .expect_err(what)
            .to_string();
        assert!(
            err.contains("expects an Amazon SQS event") || err.contains("line 1 column"),
            "{what}: {err}"
        );
        assert!(
            err.contains("line 1 column"),
            "{what}: the position is given: {err}"
        );
    }
    // A valid surrogate pair is one character and converts exactly.
    let pair = good.replace("\"ok\"", "\"\\ud83e\\udd80\"");
    let ev: SqsEvent = serde_json::from_str(&pair).unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let resp = run_event(
        move |m: Message| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(m);
                Ok::<_, Error>(())
            }
        },
        ev,
    )
    .await
    .unwrap();
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!(seen.lock().unwrap()[0].body(), "🦀");
}

#[tokio::test]
async fn records_missing_fields_convert_or_fail_clearly() {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let handler = move |m: Message| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(m);
            Ok::<_, Error>(())
        }
    };
    // No eventSource: not known to be SQS, the invocation fails, naming the record.
    let mut no_source = record("a", "x").build();
    no_source.event_source = None;
    let err = run_event(
        handler.clone(),
        event([record("z", "x").build(), no_source]),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("record 1 is not an SQS message"), "{err}");
    assert!(seen.lock().unwrap().is_empty(), "nothing ran");

    // No receipt handle, no attributes, no message attributes, no ARN: runs
    // with defaults (receive count 1, no group) rather than failing.
    let mut bare = record("b", "{}").build();
    bare.receipt_handle = None;
    bare.attributes.clear();
    bare.message_attributes.clear();
    bare.event_source_arn = None;
    bare.md5_of_body = None;
    bare.aws_region = None;
    let resp = run_event(handler.clone(), event([bare])).await.unwrap();
    assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
    let m = seen.lock().unwrap().pop().unwrap();
    assert_eq!((m.id(), m.body(), m.receipt_handle()), ("b", "{}", ""));
    assert_eq!(m.group_id(), None);
    assert!(m.receive_count() <= 1);

    // Malformed system attribute values: no panic; the record still runs.
    let rec = record("c", "{}")
        .system_attribute("ApproximateReceiveCount", "many")
        .system_attribute("SentTimestamp", "-1")
        .system_attribute(
            "ApproximateFirstReceiveTimestamp",
            "99999999999999999999999",
        );
    let resp = run_event(handler.clone(), event([rec])).await.unwrap();
    assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
    assert_eq!(seen.lock().unwrap().pop().unwrap().id(), "c");
}

// ------------------------------------------------------------ size

#[tokio::test]
async fn one_mib_plus_one_byte_is_refused_on_send_and_one_mib_is_never_truncated() {
    let client = common::sqs().await;
    let url = common::queue(&client, "toobig").await;
    let err = client
        .send_message()
        .queue_url(&url)
        .message_body("x".repeat(MAX_MESSAGE_SIZE + 1))
        .send()
        .await
        .expect_err("1 MiB + 1 byte is refused");
    let text = format!("{}", aws_sdk_sqs::error::DisplayErrorContext(&err));
    println!("SQS (moto) on a 1 MiB + 1 byte body: {text}");
    assert!(
        text.contains("InvalidParameterValue") || text.contains("MessageTooLong"),
        "{text}"
    );
    assert!(text.contains("1048576") || text.contains("long"), "{text}");
    assert_eq!(
        common::depth(&client, &url).await,
        (0, 0),
        "nothing was enqueued"
    );

    // Exactly 1 MiB of multi-byte text through the Lambda adapter: every
    // byte arrives (the poller's 1 MiB test is in tests/poller.rs).
    let body: String = "é".repeat(MAX_MESSAGE_SIZE / 2);
    assert_eq!(body.len(), MAX_MESSAGE_SIZE);
    let got: Arc<Mutex<Option<String>>> = Arc::default();
    let g = got.clone();
    let json = serde_json::to_vec(&event([record("big", body.clone())])).unwrap();
    let ev: SqsEvent = serde_json::from_slice(&json).unwrap();
    let resp = run_event(
        move |m: Message| {
            let g = g.clone();
            async move {
                *g.lock().unwrap() = Some(m.body().to_owned());
                Ok::<_, Error>(())
            }
        },
        ev,
    )
    .await
    .unwrap();
    assert!(resp.batch_item_failures.is_empty());
    assert!(
        got.lock().unwrap().as_deref() == Some(body.as_str()),
        "body unchanged"
    );
}

// ------------------------------------------------------------ attributes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_and_unknown_attribute_types_arrive_typed_or_are_refused_on_send() {
    let client = common::sqs().await;
    let url = common::queue(&client, "attrs").await;
    // A type SQS does not know is refused on send.
    let err = client
        .send_message()
        .queue_url(&url)
        .message_body("x")
        .message_attributes("weird", attr("Foo", Some("bar"), None))
        .send()
        .await
        .expect_err("unknown data type refused");
    let text = format!("{}", aws_sdk_sqs::error::DisplayErrorContext(&err));
    assert!(
        text.contains("InvalidParameterValue") || text.contains("type"),
        "{text}"
    );
    // Custom suffixes are allowed and kept.
    client
        .send_message()
        .queue_url(&url)
        .message_body("typed")
        .message_attributes("uuid", attr("String.uuid", Some("6f1c"), None))
        .message_attributes("ratio", attr("Number.float", Some("0.25"), None))
        .message_attributes(
            "png",
            attr("Binary.png", None, Some(&[0x89, b'P', 0, 0xff])),
        )
        .send()
        .await
        .unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let handler = move |m: Message| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(m);
            Ok::<_, Error>(())
        }
    };
    common::run_until(
        Poller::builder(url.as_str(), handler).client(client.clone()),
        Duration::from_secs(20),
        async || !seen.lock().unwrap().is_empty(),
    )
    .await;
    let m = seen.lock().unwrap()[0].clone();
    let a = |k: &str| m.message_attribute(k).cloned().unwrap();
    assert_eq!(a("uuid").data_type, "String.uuid");
    assert_eq!(a("uuid").value, AttributeValue::String("6f1c".into()));
    assert_eq!(a("ratio").data_type, "Number.float");
    assert_eq!(a("ratio").value, AttributeValue::Number("0.25".into()));
    assert_eq!(a("png").data_type, "Binary.png");
    assert_eq!(
        a("png").value,
        AttributeValue::Binary(vec![0x89, b'P', 0, 0xff])
    );

    // Lambda can still carry anything: an unknown type with a string value
    // is kept as text, one with no value at all is skipped; the record runs.
    let mut rec = record("l1", "x").build();
    let mut weird = SqsMessageAttribute::default();
    weird.data_type = Some("Foo.bar".into());
    weird.string_value = Some("baz".into());
    rec.message_attributes.insert("weird".into(), weird);
    let mut empty = SqsMessageAttribute::default();
    empty.data_type = Some("Binary".into());
    rec.message_attributes.insert("empty".into(), empty);
    let mut none = SqsMessageAttribute::default();
    none.data_type = None;
    rec.message_attributes.insert("none".into(), none);
    let s = seen.clone();
    let resp = run_event(
        move |m: Message| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(m);
                Ok::<_, Error>(())
            }
        },
        event([rec]),
    )
    .await
    .unwrap();
    assert!(resp.batch_item_failures.is_empty());
    let m = seen.lock().unwrap().pop().unwrap();
    let weird = m.message_attribute("weird").unwrap();
    assert_eq!(weird.data_type, "Foo.bar");
    assert_eq!(weird.value, AttributeValue::String("baz".into()));
    assert!(m.message_attribute("empty").is_none());
    assert!(m.message_attribute("none").is_none());
}

#[tokio::test]
async fn a_typed_lambda_handler_fails_only_the_undecodable_record() {
    let handler = |Json(o): Json<Order>| async move {
        let _ = o.order_id;
        Ok::<_, Error>(())
    };
    let resp = run_event(
        handler,
        event([
            record("good", r#"{"order_id": 1}"#),
            record("bad", "\u{FFFD}not json"),
            record("empty", ""),
        ]),
    )
    .await
    .unwrap();
    assert_failed_ids(&resp, ["bad", "empty"]);
}

// Start-up errors (wrong queue, missing region, refused credentials) are in
// `start_up`.
mod start_up;
