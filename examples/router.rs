//! One queue, three sources, three handlers: an SNS topic subscribed to the
//! queue, an EventBridge rule targeting it, and producers sending plain JSON,
//! each message type sent to its own typed handler by a `Router`.
//!
//! ```sh
//! # A local SQS/SNS server and a queue (moto; `bash scripts/setup.sh` installs it):
//! python3 scripts/moto_server.py &            # prints its endpoint, e.g. http://127.0.0.1:5000
//! export AWS_ENDPOINT_URL=http://127.0.0.1:5000 AWS_REGION=us-east-1 \
//!        AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
//! export SQS_QUEUE_URL=$(aws sqs create-queue --queue-name routed --query QueueUrl --output text)
//!
//! # Three sources on the one queue:
//! aws sqs send-message --queue-url $SQS_QUEUE_URL \
//!     --message-body '{"kind":"OrderPlaced","order_id":1}'
//! aws sqs send-message --queue-url $SQS_QUEUE_URL --message-body \
//!     '{"version":"0","id":"e-1","detail-type":"OrderCancelled","source":"shop","account":"1","time":"2024-01-01T00:00:00Z","region":"us-east-1","resources":[],"detail":{"order_id":2}}'
//! TOPIC=$(aws sns create-topic --name shipments --query TopicArn --output text)
//! aws sns subscribe --topic-arn $TOPIC --protocol sqs \
//!     --notification-endpoint arn:aws:sqs:us-east-1:123456789012:routed
//! aws sns publish --topic-arn $TOPIC --subject OrderShipped \
//!     --message '{"order_id":3,"carrier":"UPS"}'
//!
//! cargo run --example router
//! ```
//!
//! It runs until SIGTERM/SIGINT (Ctrl-C); the same binary runs in Lambda.
//! A message of another type (`{"kind":"OrderRefunded"}`) fails permanently
//! with its type in the error (to the dead-letter queue when
//! `SQS_WORKER_DLQ_URL` is set).

use sqs_worker::{Error, EventBridge, Json, Router, Sns, TypeSource};

#[derive(Debug, serde::Deserialize)]
struct OrderPlaced {
    order_id: u64,
}

#[derive(Debug, serde::Deserialize)]
struct OrderCancelled {
    order_id: u64,
}

#[derive(Debug, serde::Deserialize)]
struct OrderShipped {
    order_id: u64,
    carrier: String,
}

/// Plain JSON from our own producers.
async fn placed(Json(order): Json<OrderPlaced>) -> Result<(), Error> {
    tracing::info!(order_id = order.order_id, "order placed");
    Ok(())
}

/// An EventBridge rule's target: the payload is the event's `detail`.
async fn cancelled(event: EventBridge<OrderCancelled>) -> Result<(), Error> {
    tracing::info!(
        order_id = event.detail.order_id,
        source = %event.source,
        "order cancelled"
    );
    Ok(())
}

/// An SNS topic's subscription (wrapped or raw delivery).
async fn shipped(sns: Sns<OrderShipped>) -> Result<(), Error> {
    tracing::info!(
        order_id = sns.message.order_id,
        carrier = %sns.message.carrier,
        topic = sns.topic_arn.as_deref().unwrap_or("(raw delivery)"),
        "order shipped"
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), sqs_worker::RunError> {
    let router = Router::new()
        .type_from([
            TypeSource::attribute("type"),
            TypeSource::DetailType,
            TypeSource::SnsSubject,
            TypeSource::field("kind"),
        ])
        .route("OrderPlaced", placed)
        .route("OrderCancelled", cancelled)
        .route("OrderShipped", shipped);
    sqs_worker::run(router).await
}
