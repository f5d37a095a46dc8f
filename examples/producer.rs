//! Sends orders with the typed producer, large ones through S3.
//!
//! ```sh
//! SQS_QUEUE_URL=https://sqs.eu-west-1.amazonaws.com/123456789012/orders \
//! SQS_WORKER_OFFLOAD_BUCKET=my-payload-bucket \
//!     cargo run --example producer --features producer,large-payloads,poller
//! ```
//!
//! Without `SQS_WORKER_OFFLOAD_BUCKET`, bodies over the queue's limit are
//! refused instead of offloaded. A worker reads them back with
//! `SQS_WORKER_PAYLOAD_BUCKETS=my-payload-bucket` (its allow-list).

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
    // SQS_QUEUE_URL; with SQS_WORKER_OFFLOAD_BUCKET set, large bodies go to
    // that bucket. Replaced here to put them under `orders/`, which a
    // lifecycle rule can target.
    let mut sender = Sender::from_env().await?;
    if let Some(offload) = LargePayloads::from_env().await? {
        sender = sender.large_payloads(offload.key_prefix("orders/"));
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
            eprintln!("order {}: {}", i + 2, with_causes(&e));
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

/// The error and its causes on one line: the S3 or SQS error behind a
/// failed send is in the chain, not in the error's own message.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}
