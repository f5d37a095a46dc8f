//! A worker for the fault tests (`tests/it/faults.rs`): the long-poll runner
//! configured from the environment, with a handler whose side effects are
//! lines appended to a file, so that a test can kill this process at any
//! moment and count afterwards what ran, and how often.
//!
//! Settings: `SQS_QUEUE_URL` and `SQS_WORKER_*` (see
//! `sqs_worker::poller::Poller::from_env`), the AWS variables
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials), and:
//!
//! | variable | meaning |
//! |---|---|
//! | `FAULT_EFFECTS` | file the side effects are appended to (required) |
//! | `FAULT_WORK_MS` | handler work time before the side effect (default 10) |
//! | `FAULT_IDEMPOTENCY_TABLE` | wrap the handler in the idempotency layer on this DynamoDB table |
//! | `FAULT_LEASE_SECS` | that layer's in-progress lease (default 3) |
//!
//! Lines of the effects file (each one `write` on a file opened with
//! `O_APPEND`, so a kill never leaves half a line):
//! - `start <message id>`: the handler started;
//! - `effect <message id>`: the side effect happened (the handler then returns Ok);
//! - `key <message id> <store key>`: the idempotency layer's store key of a
//!   message (written before the layer runs it);
//! - `completed <store key>`: the idempotency store recorded the completion
//!   (the store sees keys, not messages: the `key` lines map them back).
//!
//! On exit it prints `summary: <RunSummary>` on stdout.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqs_worker::idempotency::{
    Begun, ClaimToken, Completed, IdempotencyLayer, IdempotencyStore, Layer, PayloadHash,
    StoreError,
};
use sqs_worker::poller::Poller;
use sqs_worker::{BoxError, Error, Message};
use sqs_worker_core::runner::BoxFuture;
use sqs_worker_dynamodb::DynamoDbStore;

/// The effects file, shared by the handler and the store.
#[derive(Clone)]
struct Effects(Arc<Mutex<std::fs::File>>);

impl Effects {
    fn open(path: &str) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self(Arc::new(Mutex::new(file))))
    }

    fn record(&self, what: &str, id: &str) -> std::io::Result<()> {
        let line = format!("{what} {id}\n");
        let mut file = self.0.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(line.as_bytes())
    }
}

/// The DynamoDB store, noting each recorded completion in the effects file.
struct Noting {
    inner: DynamoDbStore,
    effects: Effects,
}

impl IdempotencyStore for Noting {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        lease: Duration,
        payload_hash: Option<&'a PayloadHash>,
    ) -> BoxFuture<'a, Result<Begun, StoreError>> {
        self.inner.begin(key, lease, payload_hash)
    }

    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.renew(key, token, lease)
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        retention: Duration,
        result: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.inner.complete(key, token, retention, result).await?;
            let _ = self.effects.record("completed", key);
            Ok(())
        })
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.release(key, token)
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Completed>, StoreError>> {
        self.inner.get(key)
    }
}

fn env_u64(var: &str, default: u64) -> Result<u64, BoxError> {
    match std::env::var(var) {
        Ok(v) => Ok(v.parse().map_err(|e| format!("{var}={v:?}: {e}"))?),
        Err(_) => Ok(default),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    sqs_worker::telemetry::init()?;
    let path = std::env::var("FAULT_EFFECTS").map_err(|_| "FAULT_EFFECTS is not set")?;
    let effects = Effects::open(&path)?;
    let work = Duration::from_millis(env_u64("FAULT_WORK_MS", 10)?);
    let fx = effects.clone();
    let keys_noted = effects.clone();
    let handler = move |msg: Message| {
        let fx = fx.clone();
        async move {
            fx.record("start", msg.id()).map_err(Error::retry)?;
            tokio::time::sleep(work).await;
            fx.record("effect", msg.id()).map_err(Error::retry)?;
            Ok::<_, Error>(())
        }
    };
    let summary = match std::env::var("FAULT_IDEMPOTENCY_TABLE") {
        Ok(table) => {
            let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let store = Noting {
                inner: DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&config), table),
                effects,
            };
            let lease = Duration::from_secs(env_u64("FAULT_LEASE_SECS", 3)?);
            let idempotent = IdempotencyLayer::new(store)
                .claim_ttl(lease)
                .layer(sqs_worker::handler_fn(handler));
            let keys = keys_noted;
            let handler = move |msg: Message| {
                let (idempotent, keys) = (idempotent.clone(), keys.clone());
                async move {
                    if let Ok(Some(key)) = idempotent.key_of(&msg) {
                        let line = format!("{} {key}", msg.id());
                        keys.record("key", &line).map_err(Error::retry)?;
                    }
                    sqs_worker::Handler::handle(&idempotent, msg).await
                }
            };
            Poller::from_env(handler)?.build()?.run().await?
        }
        Err(_) => Poller::from_env(handler)?.build()?.run().await?,
    };
    println!("summary: {summary}");
    Ok(())
}
