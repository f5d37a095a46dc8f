//! Run a side effect once per order although SQS delivers at least once: the
//! idempotency layer keys each message by its `order_id` and skips the
//! handler for a key that already completed.
//!
//! ```sh
//! SQS_QUEUE_URL=https://sqs.eu-west-1.amazonaws.com/123456789012/orders \
//!     cargo run --example idempotency
//! ```
//!
//! `MemoryStore` remembers keys inside this one process, which suits tests
//! and a single worker. Several workers (or Lambda) need a shared store:
//! `sqs_worker::dynamodb::DynamoDbStore` (feature `dynamodb`) in its place.

use std::time::Duration;

use sqs_worker::idempotency::{IdempotencyLayer, Layer, MemoryStore};
use sqs_worker::{Error, Json, handler_fn};

#[derive(serde::Deserialize)]
struct Order {
    order_id: u64,
    amount_cents: u64,
}

async fn charge(Json(order): Json<Order>) -> Result<(), Error> {
    // The side effect that must not happen twice.
    tracing::info!(order.order_id, order.amount_cents, "card charged");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), sqs_worker::RunError> {
    let handler = IdempotencyLayer::new(MemoryStore::new())
        // Two messages with the same order_id run the handler once.
        .key_from_json(|order: &Order| Some(order.order_id))
        // How long a completed key is remembered.
        .retention(Duration::from_secs(24 * 3600))
        .layer(handler_fn(charge));
    sqs_worker::run(handler).await
}
