//! A Lambda-only function (`sqs_worker::lambda::run`), with unit tests that run
//! SQS events through it without AWS, using the `sqs_worker::lambda::testing`
//! helpers (feature `lambda-testing`).
//!
//! ```sh
//! cargo test --example lambda_function --features lambda-testing   # the tests below
//! cargo lambda build --release --example lambda_function           # the function
//! ```
//!
//! A record whose order does not parse fails permanently; one the payment
//! service refuses fails with a retry. Either way only that record is
//! reported in `batchItemFailures` (enable `ReportBatchItemFailures` on the
//! event source mapping); the rest of the batch is deleted.

use sqs_worker::{Error, Json};

#[derive(serde::Deserialize)]
struct Order {
    order_id: u64,
    amount_cents: u64,
}

async fn handle(Json(order): Json<Order>) -> Result<(), Error> {
    if order.amount_cents == 0 {
        return Err(Error::permanent(format!(
            "order {} is free",
            order.order_id
        )));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), sqs_worker::BoxError> {
    sqs_worker::lambda::run(handle).await
}

#[cfg(test)]
mod tests {
    use super::handle;
    use sqs_worker::lambda::testing::{assert_failed_ids, event, record, run_event};

    #[tokio::test]
    async fn only_the_bad_records_are_reported() {
        let ev = event([
            record("ok", r#"{"order_id": 1, "amount_cents": 1999}"#),
            record("free", r#"{"order_id": 2, "amount_cents": 0}"#),
            record("garbage", "not json"),
        ]);
        let response = run_event(handle, ev).await.expect("an SQS event");
        assert_failed_ids(&response, ["free", "garbage"]);
    }
}
