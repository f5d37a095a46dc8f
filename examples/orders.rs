//! The flagship example: one typed order handler, deployable as an AWS Lambda
//! function or as a long-poll worker, configured only from the environment.
//!
//! ```sh
//! # The whole demo (local SQS server, queues, producer, this worker, summary):
//! bash scripts/demo.sh
//!
//! # Or against a queue of your own (AWS, or a local server via AWS_ENDPOINT_URL):
//! SQS_QUEUE_URL=https://sqs.eu-west-1.amazonaws.com/123456789012/orders \
//!     cargo run --example orders
//! ```
//!
//! It runs until SIGTERM/SIGINT (Ctrl-C). Settings: `SQS_QUEUE_URL`,
//! `SQS_WORKER_*` (see `sqs_worker::poller::Poller::from_env`), and the
//! standard AWS variables (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials).
//! Logs: `RUST_LOG`, JSON with `SQS_WORKER_LOG_FORMAT=json`.
//!
//! What it does with a message:
//! - a valid order (`{"order_id": 1042, "customer": "c-7", "amount_cents": 1999}`)
//!   is "charged" (a short pause) and succeeds;
//! - a body that is not an order fails permanently: to the dead-letter queue
//!   at once when `SQS_WORKER_DLQ_URL` is set, else to the queue's redrive policy;
//! - an order with `amount_cents` 0 fails permanently too (business validation).
//!
//! With `SQS_WORKER_IDEMPOTENCY_TABLE` set (feature `dynamodb`, as
//! `template.yaml` deploys it) the handler runs once per `order_id`, recorded
//! in that DynamoDB table.
//!
//! Demo switch, off unless set: `ORDERS_FAIL_EVERY=N` makes every order whose
//! `order_id` is a multiple of N fail on its first delivery with a retryable
//! error (an imitation of a flaky payment service), so retries show: the
//! message comes back after its retry delay and then succeeds.
//! `ORDERS_CHARGE_MS` sets the "charge" pause (default 5 ms; the benchmark of
//! warm Lambda invocations sets 0).

use std::time::Duration;

use serde::Deserialize;
use sqs_worker::{Error, Json, Message};

#[derive(Debug, Deserialize)]
struct Order {
    order_id: u64,
    customer: String,
    amount_cents: u64,
}

#[derive(Debug)]
struct PaymentBusy;

impl std::fmt::Display for PaymentBusy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("payment service busy (ORDERS_FAIL_EVERY demo failure)")
    }
}

impl std::error::Error for PaymentBusy {}

/// Every N-th order fails once, when ORDERS_FAIL_EVERY=N is set.
fn fail_every() -> Option<u64> {
    static N: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("ORDERS_FAIL_EVERY")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
    })
}

async fn handle(Json(order): Json<Order>, msg: Message) -> Result<(), Error> {
    if order.amount_cents == 0 {
        return Err(Error::permanent(format!(
            "order {} has no amount",
            order.order_id
        )));
    }
    if fail_every().is_some_and(|n| order.order_id % n == 0) && msg.receive_count() == 1 {
        return Err(Error::retry(PaymentBusy));
    }
    charge(&order.customer, order.amount_cents).await?;
    tracing::debug!(
        order_id = order.order_id,
        messaging.message.id = msg.id(),
        "order charged"
    );
    Ok(())
}

/// Stands in for a call to a payment service.
async fn charge(customer: &str, amount_cents: u64) -> Result<(), std::io::Error> {
    let _ = (customer, amount_cents);
    let pause = charge_pause();
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
    Ok(())
}

/// The "charge" pause: `ORDERS_CHARGE_MS`, 5 ms unless set.
fn charge_pause() -> Duration {
    static PAUSE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *PAUSE.get_or_init(|| {
        let ms = std::env::var("ORDERS_CHARGE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        Duration::from_millis(ms)
    })
}

#[tokio::main]
async fn main() -> Result<(), sqs_worker::RunError> {
    // With SQS_WORKER_IDEMPOTENCY_TABLE (as template.yaml sets it), each order
    // is charged once per order_id, however often SQS delivers it.
    #[cfg(feature = "dynamodb")]
    if std::env::var_os("SQS_WORKER_IDEMPOTENCY_TABLE").is_some() {
        use sqs_worker::idempotency::{IdempotencyLayer, Layer, MissingKey};
        let store = sqs_worker::dynamodb::DynamoDbStore::from_env().await?;
        let once_per_order = IdempotencyLayer::new(store)
            .key_from_json(|o: &Order| Some(o.order_id))
            .validate_payload()
            // A body that is not an order has no key: let the handler fail it
            // with its own clear (permanent) decode error.
            .on_missing_key(MissingKey::RunWithout)
            .layer(sqs_worker::handler_fn(handle));
        return sqs_worker::run(once_per_order).await;
    }
    // Lambda if AWS_LAMBDA_RUNTIME_API is set, else the poller on SQS_QUEUE_URL.
    // Sets up logs (RUST_LOG; JSON with SQS_WORKER_LOG_FORMAT=json) first.
    sqs_worker::run(handle).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn valid_orders_succeed_and_bad_bodies_are_permanent() {
        let engine = sqs_worker_core::runner::Engine::new(handle);
        use sqs_worker_core::runner::Processor;
        let report = engine
            .run(
                vec![
                    Message::builder(
                        "ok",
                        r#"{"order_id": 1042, "customer": "c-7", "amount_cents": 1999}"#,
                    )
                    .build(),
                    Message::builder("bad", "not an order").build(),
                    Message::builder(
                        "zero",
                        r#"{"order_id": 1, "customer": "c-1", "amount_cents": 0}"#,
                    )
                    .build(),
                ],
                None,
            )
            .await;
        assert_eq!(report.failed_ids(), ["bad", "zero"]);
        assert!(report.failed().all(|(_, f)| f.is_permanent()));
    }
}
