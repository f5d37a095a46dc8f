//! The flagship example as users deploy it: `examples/orders.rs` run as a
//! long-poll worker process, configured only from the environment, with the
//! DynamoDB idempotency table `template.yaml` gives it. Each order is charged
//! once per `order_id`, however often it is delivered.
#![allow(clippy::unwrap_used, missing_docs)]

use crate::common;

use std::time::Duration;

#[tokio::test]
async fn orders_worker_with_the_idempotency_table_charges_each_order_once() {
    let config = common::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let url = common::queue(&sqs, "orders-example").await;
    let table = common::unique("orders-idem");
    sqs_worker::dynamodb::DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&config), &table)
        .create_table()
        .await
        .unwrap();

    // Order 7 three times (a producer retrying), order 8 once.
    let order =
        |id: u64| format!(r#"{{"order_id": {id}, "customer": "c-{id}", "amount_cents": 1999}}"#);
    for body in [order(7), order(8), order(7), order(7)] {
        sqs.send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    let out = common::example_command("orders")
        .env("SQS_QUEUE_URL", &url)
        .env("SQS_WORKER_IDEMPOTENCY_TABLE", &table)
        .env("SQS_WORKER_IDLE_EXIT_SECONDS", "3")
        .env("RUST_LOG", "info,orders=debug")
        .output()
        .await
        .unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "exit {}:\n{logs}", out.status);

    let charged = |id: u64| {
        logs.lines()
            .filter(|l| l.contains("order charged") && l.contains(&format!("\"order_id\":{id}")))
            .count()
    };
    assert_eq!(charged(7), 1, "order 7 charged once:\n{logs}");
    assert_eq!(charged(8), 1, "order 8 charged once:\n{logs}");
    // Every delivery acknowledged: nothing left in the queue.
    let mut depth = common::depth(&sqs, &url).await;
    for _ in 0..20 {
        if depth == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        depth = common::depth(&sqs, &url).await;
    }
    assert_eq!(depth, (0, 0), "{logs}");
    // The completions are in the table.
    let items = aws_sdk_dynamodb::Client::new(&config)
        .scan()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let completed = items
        .items()
        .iter()
        .filter(|i| {
            i.get("status")
                .and_then(|s| s.as_s().ok())
                .map(String::as_str)
                == Some("COMPLETED")
        })
        .count();
    assert_eq!(completed, 2, "{items:?}");
}
