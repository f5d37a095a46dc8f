//! The cold-start floor (`sqs-worker-bench suite --only lambda`): a plain
//! `lambda_runtime` function doing what the `orders` example does with the
//! bench's event, written by hand. It parses each record's body as an order,
//! reports the records that do not parse or have no amount, "charges" the
//! others (the same 5 ms pause, all at once; `ORDERS_CHARGE_MS` as in
//! `orders`) and answers the partial batch
//! response; logs through `lambda_runtime`'s default subscriber, as a function
//! made from the `cargo lambda new` template does.
#![allow(missing_docs)]

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[derive(serde::Deserialize)]
struct Order {
    #[allow(dead_code)]
    order_id: u64,
    customer: String,
    amount_cents: u64,
}

async fn charge(customer: String, amount_cents: u64, pause: Duration) {
    let _ = (customer, amount_cents);
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
}

/// The "charge" pause: `ORDERS_CHARGE_MS`, 5 ms unless set (as in `orders`).
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

async fn handler(event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    let mut response = SqsBatchResponse::default();
    let mut charges = Vec::new();
    for record in event.payload.records {
        let order = record
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str::<Order>(b).ok());
        match order {
            Some(o) if o.amount_cents > 0 => {
                charges.push(charge(o.customer, o.amount_cents, charge_pause()));
            }
            _ => response.add_failure(record.message_id.unwrap_or_default()),
        }
    }
    futures_util::future::join_all(charges).await;
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    lambda_runtime::run(service_fn(handler)).await
}
