//! A poller built in code rather than from the environment, with an SQS
//! client you configure yourself (endpoint, retries, credentials): the same
//! way tests point a worker at a local server.
//!
//! ```sh
//! # A local SQS server (moto; `bash scripts/setup.sh` installs it):
//! python3 scripts/moto_server.py &            # prints its endpoint, e.g. http://127.0.0.1:5000
//! SQS_ENDPOINT=http://127.0.0.1:5000 cargo run --example injected_client
//! ```
//!
//! It creates a queue, sends three messages, and stops on its own once the
//! queue has been idle for 5 seconds.

use std::time::Duration;

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use sqs_worker::poller::Poller;
use sqs_worker::{Error, Message};

async fn handle(msg: Message) -> Result<(), Error> {
    println!("handled {}: {}", msg.id(), msg.body());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (`RUST_LOG`, `SQS_WORKER_LOG_FORMAT`) and metrics as `sqs_worker::run`
    // sets them up; a poller built in code leaves that to its program.
    sqs_worker::telemetry::init()?;
    let endpoint = std::env::var("SQS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "testing", "testing", None, None, "example",
        ))
        .load()
        .await;
    let client = aws_sdk_sqs::Client::new(&config);

    let queue = client.create_queue().queue_name("injected").send().await?;
    let url = queue.queue_url().ok_or("CreateQueue returned no URL")?;
    for n in 1..=3 {
        let body = format!("message {n}");
        client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await?;
    }

    let summary = Poller::builder(url, handle)
        .client(client)
        .concurrency(8)
        .wait_time(Duration::from_secs(2))
        .idle_exit(Duration::from_secs(5))
        .build()?
        .run()
        .await?;
    println!("{summary:?}");
    Ok(())
}
