//! Sends orders with the typed producer, large ones through S3.
//!
//! ```sh
//! SQS_QUEUE_URL=https://sqs.eu-west-1.amazonaws.com/123456789012/orders \
//! SQS_WORKER_PAYLOAD_BUCKET=my-payload-bucket \
//!     cargo run --example producer --features producer,large-payloads,poller
//! ```
//!
//! Without `SQS_WORKER_PAYLOAD_BUCKET`, bodies over the queue's limit are
//! refused instead of offloaded.

use std::time::Duration;

use sqs_worker::producer::payload::LargePayloads;
use sqs_worker::producer::{Outgoing, Sender};

#[derive(serde::Serialize)]
struct Order {
    order_id: u64,
    customer: String,
    amount_cents: u64,
    notes: String,
}

#[tokio::main]
async fn main() -> Result<(), sqs_worker::BoxError> {
    sqs_worker::telemetry::init()?;
    let mut sender = Sender::from_env().await?;
    if let Ok(bucket) = std::env::var("SQS_WORKER_PAYLOAD_BUCKET") {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let s3 = aws_sdk_s3::Client::new(&config);
        sender = sender.large_payloads(LargePayloads::new(s3, bucket).key_prefix("orders/"));
    }

    // One at a time.
    let first = Order {
        order_id: 1,
        customer: "acme".into(),
        amount_cents: 1250,
        notes: String::new(),
    };
    let sent = sender.send(&first).await?;
    println!("sent order 1 as {}", sent.message_id);

    // A batch: 10 per request and at most 1 MiB per request; one result each.
    let orders = (2..=100).map(|id| {
        let notes = if id == 100 {
            "x".repeat(2 * 1024 * 1024)
        } else {
            String::new()
        };
        let order = Order {
            order_id: id,
            customer: "acme".into(),
            amount_cents: 100 * id,
            notes,
        };
        Outgoing::json(&order).map(|m| m.string_attribute("tenant", "acme"))
    });
    let orders = orders.collect::<Result<Vec<_>, _>>()?;
    let mut failed = 0;
    for (i, result) in sender.send_batch(orders).await.into_iter().enumerate() {
        if let Err(e) = result {
            failed += 1;
            eprintln!("order {}: {e}", i + 2);
        }
    }
    println!("sent 99 orders in a batch, {failed} failed");

    // A reminder in five minutes (at most 15; later ones: EventBridge Scheduler).
    let later = Outgoing::json(&Order {
        order_id: 101,
        customer: "acme".into(),
        amount_cents: 1,
        notes: String::new(),
    })?
    .delay(Duration::from_secs(300));
    sender.send_message(later).await?;
    Ok(())
}
