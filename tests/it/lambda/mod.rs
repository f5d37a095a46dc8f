//! The Lambda adapter through `lambda_runtime`'s service type, with real
//! `LambdaEvent`s and `Context`s (with deadlines), AWS's documented sample
//! events; `with_client`: with an SQS client, against the local SQS server.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lambda_runtime::{LambdaEvent, Service};
use sqs_worker::{AttributeValue, EngineConfig, Error, Json, Message};
use sqs_worker_core::runner::Engine;
use sqs_worker_lambda::testing::{
    assert_all_succeeded, assert_failed_ids, context, event, failed_ids, fifo_record, record,
};
use sqs_worker_lambda::{
    EventError, LambdaRunner, LambdaService, SqsBatchResponse, SqsEvent, SqsPayload,
    message_from_record,
};

#[derive(serde::Deserialize)]
struct Order {
    order_id: u64,
}

async fn orders(Json(order): Json<Order>) -> Result<(), Error> {
    match order.order_id {
        0 => Err(Error::permanent(std::io::Error::other(
            "order 0 does not exist",
        ))),
        n if n % 100 == 2 => Err(Error::msg(format_args!("order {n}: payment service down"))),
        _ => Ok(()),
    }
}

fn orders_event(ids: &[u64]) -> SqsEvent {
    event(
        ids.iter()
            .enumerate()
            .map(|(i, id)| record(format!("m{i}"), format!(r#"{{"order_id": {id}}}"#))),
    )
}

/// One invocation through `tower::Service::call`, with `timeout` left.
async fn call<S>(
    svc: &mut S,
    ev: SqsEvent,
    timeout: Duration,
) -> Result<SqsBatchResponse, EventError>
where
    S: Service<LambdaEvent<SqsEvent>, Response = SqsBatchResponse, Error = EventError>,
{
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
    svc.call(LambdaEvent::new(ev, context(timeout))).await
}

#[tokio::test]
async fn partial_failure_reports_exactly_the_failed_records() {
    let mut svc = LambdaService::new(Engine::new(orders));
    let resp = call(
        &mut svc,
        orders_event(&[1, 3, 2, 4, 5, 6, 7, 8, 9, 10]),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_failed_ids(&resp, ["m2"]);
    let json = serde_json::to_value(&resp).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m2"}]})
    );
}

#[tokio::test]
async fn all_failed_is_still_a_list_not_an_error() {
    let mut svc = LambdaService::new(Engine::new(orders));
    let resp = call(
        &mut svc,
        orders_event(&[2, 102, 0, 202]),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_failed_ids(&resp, ["m0", "m1", "m2", "m3"]);

    // A body that is not an order is that record's permanent failure, and
    // without a DLQ it is reported (the queue's redrive policy applies).
    let ev = event([
        record("ok", r#"{"order_id": 1}"#),
        record("junk", "not json"),
    ]);
    let resp = call(&mut svc, ev, Duration::from_secs(30)).await.unwrap();
    assert_failed_ids(&resp, ["junk"]);
}

#[tokio::test]
async fn a_panic_fails_its_record_only() {
    let handler = |m: Message| async move {
        if m.id() == "boom" {
            panic!("handler bug");
        }
        Ok::<(), Error>(())
    };
    let mut svc = LambdaService::new(Engine::new(handler));
    let ev = event([record("a", "1"), record("boom", "2"), record("c", "3")]);
    let resp = call(&mut svc, ev, Duration::from_secs(30)).await.unwrap();
    assert_failed_ids(&resp, ["boom"]);
}

#[tokio::test]
async fn fifo_group_stops_at_its_first_failure() {
    let ran = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let r = ran.clone();
    let handler = move |m: Message| {
        let r = r.clone();
        async move {
            r.lock().unwrap().push(m.id().to_owned());
            if m.id() == "a2" {
                Err(Error::msg("a2 fails"))
            } else {
                Ok(())
            }
        }
    };
    let mut svc = LambdaService::new(Engine::new(handler));
    let ev = event([
        fifo_record("a1", "A", "{}"),
        fifo_record("b1", "B", "{}"),
        fifo_record("a2", "A", "{}"),
        fifo_record("b2", "B", "{}"),
        fifo_record("a3", "A", "{}"),
        fifo_record("a4", "A", "{}"),
    ]);
    let resp = call(&mut svc, ev, Duration::from_secs(30)).await.unwrap();
    assert_failed_ids(&resp, ["a2", "a3", "a4"]);
    let ran = ran.lock().unwrap().clone();
    assert!(
        !ran.contains(&"a3".to_owned()) && !ran.contains(&"a4".to_owned()),
        "{ran:?}"
    );
    assert!(
        ran.contains(&"b2".to_owned()),
        "group B is unaffected: {ran:?}"
    );
}

#[tokio::test]
async fn a_near_deadline_leaves_records_unstarted_and_reported() {
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let handler = move |_m: Message| {
        let s = s.clone();
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<(), Error>(())
        }
    };
    // One at a time, 300 ms each; the engine stops 150 ms before the 1 s
    // deadline: m0 and m1 finish, m2 is stopped at 850 ms, m3 and m4 never
    // start.
    let mut svc = LambdaRunner::with_config(handler, EngineConfig::default().concurrency(1))
        .safety_margin(Duration::from_millis(150))
        .build()
        .unwrap();
    let ev = event((0..5).map(|i| record(format!("m{i}"), "{}")));
    let t = Instant::now();
    let resp = call(&mut svc, ev, Duration::from_millis(1000))
        .await
        .unwrap();
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(990),
        "answered before the deadline: {took:?}"
    );
    assert_failed_ids(&resp, ["m2", "m3", "m4"]);
    assert_eq!(started.load(Ordering::SeqCst), 3, "m3 and m4 never started");

    // A deadline already inside the margin starts nothing and reports all.
    let ev = event((0..3).map(|i| record(format!("m{i}"), "{}")));
    let resp = call(&mut svc, ev, Duration::from_millis(50)).await.unwrap();
    assert_failed_ids(&resp, ["m0", "m1", "m2"]);
    assert_eq!(started.load(Ordering::SeqCst), 3);
}

/// Issue 15 §6: with a start margin (`SQS_WORKER_START_MARGIN_SECONDS`, the
/// engine's `start_margin`), no handler starts within the safety margin plus
/// the start margin of the invocation deadline: those records are reported
/// unstarted, and every record that started had time to finish.
#[tokio::test]
async fn no_handler_starts_inside_the_start_margin() {
    let started = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let s = started.clone();
    let handler = move |m: Message| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(m.id().to_owned());
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<(), Error>(())
        }
    };
    // 3 s invocation, 150 ms safety margin, 2 s start margin: nothing
    // starts after about 850 ms, when one record at a time of 300 ms each
    // leaves at least m4 unstarted.
    let config = EngineConfig::default()
        .concurrency(1)
        .start_margin(Duration::from_secs(2));
    let mut svc = LambdaRunner::with_config(handler, config)
        .safety_margin(Duration::from_millis(150))
        .build()
        .unwrap();
    let ev = event((0..5).map(|i| record(format!("m{i}"), "{}")));
    let resp = call(&mut svc, ev, Duration::from_secs(3)).await.unwrap();
    let ran = started.lock().unwrap().clone();
    assert!(!ran.is_empty() && ran.len() < 5, "{ran:?}");
    let mut failed: Vec<&str> = failed_ids(&resp);
    failed.sort_unstable();
    let unstarted: Vec<String> = (0..5)
        .map(|i| format!("m{i}"))
        .filter(|id| !ran.contains(id))
        .collect();
    assert_eq!(failed, unstarted, "exactly the records never started");
}

#[tokio::test]
async fn an_event_that_is_not_from_sqs_is_a_function_error() {
    let mut svc = LambdaService::new(Engine::new(orders));
    // An S3 event has `Records` too: its eventSource gives it away.
    let s3: SqsEvent = serde_json::from_str(&common::fixture("s3-event.json")).unwrap();
    let err = call(&mut svc, s3, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EventError::NotSqs { index: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("aws:s3"), "{err}");
    let diag: lambda_runtime::Diagnostic = err.into();
    assert_eq!(diag.error_type, "SqsWorker.NotAnSqsEvent");

    // Another shape altogether fails to parse with a clear message, a
    // function error before the service runs (what `run` does with the
    // runtime's raw payload).
    let err = SqsPayload::from_json(r#"{"detail-type": "Scheduled Event"}"#).unwrap_err();
    assert!(
        err.to_string().contains("expects an Amazon SQS event"),
        "{err}"
    );
    assert!(err.to_string().contains("Records"), "{err}");
    let diag: lambda_runtime::Diagnostic = err.into();
    assert_eq!(diag.error_type, "SqsWorker.MalformedEvent");

    // A record without messageId cannot be reported: the whole invocation
    // fails and nothing runs.
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let mut svc = LambdaService::new(Engine::new(move |_m: Message| {
        r.fetch_add(1, Ordering::SeqCst);
        async { Ok::<(), Error>(()) }
    }));
    let mut no_id = record("x", "{}").build();
    no_id.message_id = None;
    let err = call(
        &mut svc,
        event([record("a", "{}").build(), no_id]),
        Duration::from_secs(30),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, EventError::MissingMessageId { index: 1 }),
        "{err:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    // A record without a body is reported without running (and the rest of
    // its FIFO group with it).
    let mut no_body = fifo_record("g1", "G", "{}").build();
    no_body.body = None;
    let ev = event([
        no_body,
        fifo_record("g2", "G", "{}").build(),
        fifo_record("h1", "H", "{}").build(),
    ]);
    let resp = call(&mut svc, ev, Duration::from_secs(30)).await.unwrap();
    assert_failed_ids(&resp, ["g1", "g2"]);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "only h1 ran");
}

#[tokio::test]
async fn aws_sample_standard_event_parses_and_converts_with_all_attributes() {
    let ev: SqsEvent = serde_json::from_str(&common::fixture("sqs-standard-event.json")).unwrap();
    assert_eq!(ev.records.len(), 2);
    let m = message_from_record(ev.records[0].clone(), sqs_worker::Visibility::unbacked()).unwrap();
    assert_eq!(m.id(), "059f36b4-87a3-44ab-83d2-661975830a7d");
    assert_eq!(m.receipt_handle(), "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...");
    assert_eq!(m.body(), "Test message.");
    assert_eq!(m.receive_count(), 1);
    let a = m.attributes();
    assert_eq!(a.sent_timestamp, Some(1545082649183));
    assert_eq!(a.approximate_first_receive_timestamp, Some(1545082649185));
    assert_eq!(a.sender_id.as_deref(), Some("AIDAIENQZJOLO23YVJ4VO"));
    assert_eq!(m.group_id(), None);
    assert_eq!(
        m.source(),
        Some("arn:aws:sqs:us-east-2:123456789012:my-queue")
    );
    let attr = m.message_attribute("myAttribute").unwrap();
    assert_eq!(attr.data_type, "String");
    assert_eq!(attr.value, AttributeValue::String("myValue".into()));

    let mut svc = LambdaService::new(Engine::new(|m: Message| async move {
        assert_eq!(m.body(), "Test message.");
        Ok::<(), Error>(())
    }));
    let resp = call(&mut svc, ev, Duration::from_secs(30)).await.unwrap();
    assert_all_succeeded(&resp);
    assert_eq!(
        serde_json::to_string(&resp).unwrap(),
        r#"{"batchItemFailures":[]}"#
    );
}

#[tokio::test]
async fn aws_sample_fifo_event_parses_and_converts_with_all_attributes() {
    let ev: SqsEvent = serde_json::from_str(&common::fixture("sqs-fifo-event.json")).unwrap();
    let m = message_from_record(ev.records[0].clone(), sqs_worker::Visibility::unbacked()).unwrap();
    assert_eq!(m.id(), "11d6ee51-4cc7-4302-9e22-7cd8afdaadf5");
    assert_eq!(m.group_id(), Some("1"));
    assert_eq!(m.deduplication_id(), Some("1"));
    assert_eq!(m.sequence_number(), Some("18849496460467696128"));
    assert_eq!(m.attributes().sent_timestamp, Some(1573251510774));
    assert_eq!(
        m.attributes().sender_id.as_deref(),
        Some("AIDAIO23YVJENQZJOL4VO")
    );
    assert_eq!(
        m.source(),
        Some("arn:aws:sqs:us-east-2:123456789012:fifo.fifo")
    );
    assert!(m.message_attributes().is_empty());

    let mut svc = LambdaService::new(Engine::new(|_m: Message| async {
        Err::<(), _>(Error::msg("fails"))
    }));
    let resp = call(&mut svc, ev, Duration::from_secs(30)).await.unwrap();
    assert_eq!(failed_ids(&resp), ["11d6ee51-4cc7-4302-9e22-7cd8afdaadf5"]);
}

#[tokio::test]
async fn handlers_see_the_invocation_deadline() {
    let mut svc = LambdaService::new(Engine::new(|m: Message| async move {
        let left = m.time_left().expect("a deadline");
        assert!(
            left <= Duration::from_secs(10) && left > Duration::from_secs(8),
            "{left:?}"
        );
        let e = m
            .extend_visibility(Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("cannot change message visibility"),
            "{e}"
        );
        Ok::<(), Error>(())
    }));
    let resp = call(&mut svc, event([record("a", "")]), Duration::from_secs(10))
        .await
        .unwrap();
    assert_all_succeeded(&resp);
}

#[tokio::test]
async fn a_batch_engine_runs_behind_the_same_service() {
    use sqs_worker::BatchResults;
    use sqs_worker_core::runner::BatchEngine;
    let engine = BatchEngine::new(|batch: Vec<Message>| async move {
        let mut results = BatchResults::new();
        for m in &batch {
            if m.body() == "skip" {
                // No result: it counts as failed, never as done.
                continue;
            }
            if m.body() == "bad" {
                results.fail(m, Error::msg("bad row"));
            } else {
                results.succeed(m);
            }
        }
        results
    });
    let mut svc = LambdaRunner::from_processor(engine).build().unwrap();
    let ev = event([
        record("a", "ok"),
        record("b", "bad"),
        record("c", "ok"),
        record("d", "skip"),
    ]);
    let resp = call(&mut svc, ev, Duration::from_secs(30)).await.unwrap();
    assert_failed_ids(&resp, ["b", "d"]);
}

#[tokio::test]
async fn the_lean_payload_of_run_answers_like_the_sqs_event() {
    let svc = LambdaService::new(Engine::new(orders));
    for name in ["sqs-standard-event.json", "sqs-fifo-event.json"] {
        let json = common::fixture(name);
        let ctx = context(Duration::from_secs(30));
        let via_event = svc
            .handle(serde_json::from_str(&json).unwrap(), &ctx)
            .await
            .unwrap();
        let lean: SqsPayload = serde_json::from_str(&json).unwrap();
        let via_payload = svc.handle_payload(lean, &ctx).await.unwrap();
        let (mut a, mut b) = (failed_ids(&via_event), failed_ids(&via_payload));
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "{name}");
        assert!(!a.is_empty(), "the sample bodies are not orders: {name}");
    }
    let s3: SqsPayload = serde_json::from_str(&common::fixture("s3-event.json")).unwrap();
    let err = svc
        .handle_payload(s3, &context(Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert!(matches!(err, EventError::NotSqs { .. }), "{err:?}");
}

mod with_client;
