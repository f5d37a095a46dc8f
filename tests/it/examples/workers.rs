//! The examples that run as workers: each handles what the test sends and
//! leaves the effect its docs promise.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};

use super::{Example, assert_logs, bodies, counts, receive, run, settled_depth};
use crate::common;

/// `examples/idempotency.rs`: order 7 delivered three times charges the
/// card once. Sent in one batch, the duplicates arrive together: they wait
/// (a retry) while the first runs, then are acknowledged without a charge.
#[tokio::test]
async fn idempotency_example_charges_each_order_once() {
    let sqs = common::sqs().await;
    let url = common::queue(&sqs, "ex-idempotency").await;
    let order =
        |id: u64| format!(r#"{{"order_id": {id}, "customer": "c-{id}", "amount_cents": 1999}}"#);
    common::send(&sqs, &url, &[order(7), order(8), order(7), order(7)]).await;

    let out = run(
        "idempotency",
        &[
            ("SQS_QUEUE_URL", &url),
            ("SQS_WORKER_IDLE_EXIT_SECONDS", "3"),
        ],
    )
    .await;
    out.assert_success();
    let charged = out.events("card charged");
    assert_eq!(
        counts(&charged, "order.order_id"),
        BTreeMap::from([("7".into(), 1), ("8".into(), 1)]),
        "one charge per order: {}",
        out.report()
    );
    assert!(
        charged.iter().all(|e| e["order.amount_cents"] == 1999),
        "{charged:?}"
    );
    assert_eq!(settled_depth(&sqs, &url).await, (0, 0), "{}", out.report());
}

/// `examples/stateful.rs`: every order ends up in the shipping queue, once,
/// and the shared counter counts them.
#[tokio::test]
async fn stateful_example_forwards_every_order_to_the_shipping_queue() {
    let sqs = common::sqs().await;
    let url = common::queue(&sqs, "ex-stateful").await;
    let shipping = common::queue(&sqs, "ex-shipping").await;
    let sent: Vec<String> = (1..=3)
        .map(|id| format!(r#"{{"order_id":{id},"paid":true}}"#))
        .collect();
    common::send(&sqs, &url, &sent).await;

    let out = run(
        "stateful",
        &[
            ("SQS_QUEUE_URL", &url),
            ("SHIPPING_QUEUE_URL", &shipping),
            ("SQS_WORKER_IDLE_EXIT_SECONDS", "3"),
        ],
    )
    .await;
    out.assert_success();
    let forwarded = receive(&sqs, &shipping, 3).await;
    assert_eq!(
        bodies(&forwarded),
        sent.iter().cloned().collect(),
        "{}",
        out.report()
    );
    // Exactly those: nothing else visible or in flight beyond the 3 received.
    assert_eq!(common::depth(&sqs, &shipping).await, (0, 3));
    let counted = counts(&out.events("order forwarded to shipping"), "forwarded");
    assert_eq!(
        counted.into_keys().collect::<Vec<_>>(),
        ["1", "2", "3"],
        "the counter shared by the messages: {}",
        out.report()
    );
    assert_eq!(settled_depth(&sqs, &url).await, (0, 0), "{}", out.report());
}

/// A table keyed by the string `pk`, as `examples/batch_write.rs` writes.
async fn orders_table(dynamodb: &aws_sdk_dynamodb::Client) -> String {
    let table = common::unique("ex-orders");
    dynamodb
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("create_table {table}: {e:?}"));
    table
}

/// The `order` attribute of every item of `table`.
async fn scan_orders(dynamodb: &aws_sdk_dynamodb::Client, table: &str) -> Vec<String> {
    let out = dynamodb.scan().table_name(table).send().await.unwrap();
    out.items()
        .iter()
        .map(|i| match i.get("order") {
            Some(AttributeValue::S(s)) => s.clone(),
            other => panic!("item without an `order` string: {other:?}"),
        })
        .collect()
}

/// `examples/batch_write.rs`: every order written to the table, then a
/// clean stop on SIGTERM with the run's summary.
#[tokio::test]
async fn batch_write_example_writes_every_order_and_stops_on_sigterm() {
    let config = common::sdk_config().await;
    let (sqs, dynamodb) = (
        aws_sdk_sqs::Client::new(&config),
        aws_sdk_dynamodb::Client::new(&config),
    );
    let url = common::queue(&sqs, "ex-batch-write").await;
    let table = orders_table(&dynamodb).await;

    let mut cmd = common::example_command("batch_write");
    cmd.env("SQS_QUEUE_URL", &url).env("ORDERS_TABLE", &table);
    let mut example = Example::spawn("batch_write", cmd);
    // The example builds its poller in code: 2 receive loops (concurrency
    // 32), the second polling while receives come back full. Batches of 4,
    // each written before the next is sent, never fill a receive, so moto
    // never sees two receives at once (see `command`).
    let mut sent = BTreeSet::new();
    for round in 0..3 {
        let batch: Vec<String> = (0..4)
            .map(|i| format!(r#"{{"order_id":{}}}"#, round * 4 + i))
            .collect();
        common::send(&sqs, &url, &batch).await;
        sent.extend(batch);
        let want = sent.len();
        example
            .wait_until(&format!("{want} items in {table}"), async || {
                scan_orders(&dynamodb, &table).await.len() >= want
            })
            .await;
    }
    let written = scan_orders(&dynamodb, &table).await;
    assert_eq!(written.len(), 12, "{written:?}");
    assert_eq!(written.into_iter().collect::<BTreeSet<_>>(), sent);

    example.sigterm();
    let out = example.finish().await;
    // Its receive in flight (the builder's default 20 s wait) is let finish
    // before the exit.
    out.assert_success();
    assert_eq!(out.summary("succeeded"), 12, "{}", out.report());
    assert_eq!(out.summary("failed"), 0, "{}", out.report());
    assert_logs(&out);
    assert_eq!(settled_depth(&sqs, &url).await, (0, 0), "{}", out.report());
}

/// `examples/router.rs`: plain JSON, an EventBridge event and a real SNS
/// notification each reach their typed handler; an unknown type is
/// dead-lettered with its type in the error.
#[tokio::test]
async fn router_example_routes_three_sources_and_dead_letters_unknown_types() {
    let config = common::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let sns = aws_sdk_sns::Client::new(&config);
    let url = common::queue(&sqs, "ex-routed").await;
    let dlq = common::queue(&sqs, "ex-routed-dlq").await;
    let refunded = r#"{"kind":"OrderRefunded"}"#;
    common::send(
        &sqs,
        &url,
        &[
            r#"{"kind":"OrderPlaced","order_id":1}"#.into(),
            r#"{"version":"0","id":"e-1","detail-type":"OrderCancelled","source":"shop","account":"1","time":"2024-01-01T00:00:00Z","region":"us-east-1","resources":[],"detail":{"order_id":2}}"#.into(),
            refunded.into(),
        ],
    )
    .await;
    let topic = common::sns_topic_to(&sns, &common::queue_arn(&sqs, &url).await, false).await;
    sns.publish()
        .topic_arn(&topic)
        .subject("OrderShipped")
        .message(r#"{"order_id":3,"carrier":"UPS"}"#)
        .send()
        .await
        .unwrap();

    let out = run(
        "router",
        &[
            ("SQS_QUEUE_URL", &url),
            ("SQS_WORKER_DLQ_URL", &dlq),
            ("SQS_WORKER_IDLE_EXIT_SECONDS", "3"),
        ],
    )
    .await;
    out.assert_success();
    let one = |message: &str| {
        let events = out.events(message);
        assert_eq!(events.len(), 1, "one `{message}`: {}", out.report());
        events.into_iter().next().unwrap()
    };
    assert_eq!(one("order placed")["order_id"], 1);
    let cancelled = one("order cancelled");
    assert_eq!(cancelled["order_id"], 2);
    assert_eq!(cancelled["source"], "shop");
    let shipped = one("order shipped");
    assert_eq!(shipped["order_id"], 3);
    assert_eq!(shipped["carrier"], "UPS");
    assert_eq!(
        shipped["topic"],
        topic.as_str(),
        "the SNS envelope was read"
    );

    let dead = receive(&sqs, &dlq, 1).await;
    assert_eq!(
        bodies(&dead),
        BTreeSet::from([refunded.to_owned()]),
        "{}",
        out.report()
    );
    assert_eq!(
        common::depth(&sqs, &dlq).await,
        (0, 1),
        "only OrderRefunded"
    );
    let error = dead[0].message_attributes().unwrap()["SqsWorker.Error"]
        .string_value()
        .unwrap();
    assert!(error.contains("OrderRefunded"), "{error}");
    assert_eq!(settled_depth(&sqs, &url).await, (0, 0), "{}", out.report());
}
