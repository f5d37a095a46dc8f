//! A handler with state: a struct that implements `Handler`, holding an SQS
//! client (to forward paid orders to a shipping queue) and a counter shared
//! by every message it handles.
//!
//! ```sh
//! SQS_QUEUE_URL=https://sqs.eu-west-1.amazonaws.com/123456789012/orders \
//! SHIPPING_QUEUE_URL=https://sqs.eu-west-1.amazonaws.com/123456789012/shipping \
//!     cargo run --example stateful
//! ```
//!
//! The handler is built once and shared (`&self`) by the messages in flight,
//! so its state is what every message sees: clients, pools, caches, counters
//! behind atomics or locks.

use std::sync::atomic::{AtomicU64, Ordering};

use sqs_worker::{Error, Handler, Message};

/// Forwards each order to the shipping queue and counts the orders it forwarded.
struct Forwarder {
    sqs: aws_sdk_sqs::Client,
    shipping_queue_url: String,
    forwarded: AtomicU64,
}

impl Handler for Forwarder {
    async fn handle(&self, msg: Message) -> Result<(), Error> {
        // A failed send is an `Err`: the message is retried with backoff.
        self.sqs
            .send_message()
            .queue_url(&self.shipping_queue_url)
            .message_body(msg.body())
            .send()
            .await?;
        let n = self.forwarded.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(forwarded = n, "order forwarded to shipping");
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shipping_queue_url =
        std::env::var("SHIPPING_QUEUE_URL").map_err(|_| "set SHIPPING_QUEUE_URL")?;
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let handler = Forwarder {
        sqs: aws_sdk_sqs::Client::new(&config),
        shipping_queue_url,
        forwarded: AtomicU64::new(0),
    };
    // Lambda if AWS_LAMBDA_RUNTIME_API is set, else a poller on SQS_QUEUE_URL.
    sqs_worker::run(handler).await?;
    Ok(())
}
