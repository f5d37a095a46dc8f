//! A whole-batch handler: up to 10 orders written to DynamoDB in one
//! `BatchWriteItem` call, and only the items DynamoDB did not process are
//! retried.
//!
//! ```sh
//! SQS_QUEUE_URL=https://sqs.eu-west-1.amazonaws.com/123456789012/orders \
//! ORDERS_TABLE=orders \
//!     cargo run --example batch_write
//! ```
//!
//! A `BatchHandler` says what happened to each message; a message it gives
//! no result for counts as failed. It runs under the poller (or Lambda)
//! through `BatchEngine`, the engine for whole batches.

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use sqs_worker::poller::Poller;
use sqs_worker::{BatchHandler, BatchResults, Error, Message};
use sqs_worker_core::runner::BatchEngine;

/// Writes each message's order into `table`, keyed by message id.
struct BulkWriter {
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
}

impl BulkWriter {
    fn put(msg: &Message) -> Result<WriteRequest, Error> {
        let item = HashMap::from([
            ("pk".to_owned(), AttributeValue::S(msg.id().to_owned())),
            ("order".to_owned(), AttributeValue::S(msg.body().to_owned())),
        ]);
        let put = PutRequest::builder().set_item(Some(item)).build()?;
        Ok(WriteRequest::builder().put_request(put).build())
    }
}

impl BatchHandler for BulkWriter {
    async fn handle_batch(&self, batch: Vec<Message>) -> BatchResults {
        let mut results = BatchResults::new();
        let mut writes = Vec::new();
        for msg in &batch {
            match Self::put(msg) {
                Ok(w) => writes.push(w),
                Err(e) => {
                    results.fail(msg, e);
                }
            }
        }
        if writes.is_empty() {
            return results;
        }
        let call = self
            .dynamodb
            .batch_write_item()
            .request_items(&self.table, writes)
            .send()
            .await;
        let unprocessed: HashSet<String> = match &call {
            // Unprocessed items (throttling) fail; the rest succeeded.
            Ok(out) => out
                .unprocessed_items()
                .and_then(|u| u.get(&self.table))
                .into_iter()
                .flatten()
                .filter_map(|w| w.put_request()?.item().get("pk")?.as_s().ok().cloned())
                .collect(),
            Err(_) => HashSet::new(),
        };
        for msg in &batch {
            if results.get(msg.id()).is_some() {
                continue;
            }
            match &call {
                Err(e) => results.fail(msg, Error::msg(format!("BatchWriteItem failed: {e}"))),
                Ok(_) if unprocessed.contains(msg.id()) => {
                    results.fail(msg, Error::msg("not processed by DynamoDB; retried"))
                }
                Ok(_) => results.succeed(msg),
            };
        }
        results
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (`RUST_LOG`, `SQS_WORKER_LOG_FORMAT`) and metrics as `sqs_worker::run`
    // sets them up; a poller built in code leaves that to its program.
    sqs_worker::telemetry::init()?;
    let queue_url = std::env::var("SQS_QUEUE_URL").map_err(|_| "set SQS_QUEUE_URL")?;
    let table = std::env::var("ORDERS_TABLE").map_err(|_| "set ORDERS_TABLE")?;
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let writer = BulkWriter {
        dynamodb: aws_sdk_dynamodb::Client::new(&config),
        table,
    };
    let summary = Poller::with_processor(queue_url.as_str(), BatchEngine::new(writer))
        .client(aws_sdk_sqs::Client::new(&config))
        .build()?
        .run()
        .await?;
    println!("{summary:?}");
    Ok(())
}
