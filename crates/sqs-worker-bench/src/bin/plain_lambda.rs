//! The cold-start floor (`sqs-worker-bench suite --only lambda`): a plain
//! `lambda_runtime` function doing what the `orders` example does with the
//! bench's event, written by hand. It parses each record's body as an order,
//! reports the records that do not parse or have no amount, "charges" the
//! others (the same 5 ms pause, all at once) and answers the partial batch
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

async fn charge(customer: String, amount_cents: u64) {
    let _ = (customer, amount_cents);
    tokio::time::sleep(Duration::from_millis(5)).await;
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
            Some(o) if o.amount_cents > 0 => charges.push(charge(o.customer, o.amount_cents)),
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
