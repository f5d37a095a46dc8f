//! A DynamoDB [`IdempotencyStore`] for sqs-worker: idempotency records shared
//! by every worker, whichever runner (Lambda or poller) they use.
//!
//! ```no_run
//! use sqs_worker_core::idempotency::{IdempotencyLayer, KeyFn, Layer};
//! use sqs_worker_core::{Error, Json, handler_fn};
//! use sqs_worker_dynamodb::DynamoDbStore;
//!
//! #[derive(serde::Deserialize)]
//! struct Order { order_id: u64 }
//!
//! async fn charge(Json(order): Json<Order>) -> Result<(), Error> {
//!     let _ = order.order_id;
//!     Ok(())
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // The table from SQS_WORKER_IDEMPOTENCY_TABLE, the client from the environment.
//! let store = DynamoDbStore::from_env().await?;
//! let handler = IdempotencyLayer::new(store)
//!     .key(KeyFn::json(|o: &Order| Some(o.order_id)))
//!     .validate_payload()
//!     .layer(handler_fn(charge));
//! # let _ = handler; Ok(()) }
//! ```
//!
//! # Table
//!
//! One item per key; only the partition key is declared. Create it with
//! [`DynamoDbStore::create_table`], in CloudFormation, or by hand:
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `pk` (the partition key, [configurable](DynamoDbStore::key_attribute)) | S | the idempotency key |
//! | `status` | S | `IN_PROGRESS` or `COMPLETED` |
//! | `lease_expires` | N | in progress: the claim's end, epoch **milliseconds** |
//! | `token` | S | in progress: the holder's random claim token |
//! | `payload_hash` | S | SHA-256 of the validated payload (hex), when validation is on |
//! | `result` | B | the handler's small result, if it set one |
//! | `expires_at` | N | epoch **seconds**: the table's TTL attribute (retention) |
//!
//! Billing `PAY_PER_REQUEST`, TTL enabled on `expires_at`. The worker needs
//! `dynamodb:PutItem`, `GetItem`, `UpdateItem` and `DeleteItem` on the table
//! (and `CreateTable`, `DescribeTable`, `UpdateTimeToLive`,
//! `DescribeTimeToLive` for [`create_table`](DynamoDbStore::create_table)).
//!
//! # Operations
//!
//! - `begin`: `PutItem` conditioned on `attribute_not_exists(pk) OR
//!   (status = IN_PROGRESS AND lease_expires < :now) OR expires_at < :now`,
//!   so exactly one worker wins; the loser learns what holds the key from the
//!   item returned with the failed condition (`ReturnValuesOnConditionCheckFailure`),
//!   or from a strongly consistent `GetItem` if the server returns none.
//! - `renew` and `complete`: `UpdateItem` conditioned on the token;
//!   `release`: `DeleteItem` conditioned on the token. A failed condition is
//!   [`StoreError::ClaimLost`].
//! - Expired items are ignored by the conditions: TTL deletion, which can
//!   lag by a day or two, only keeps the table small.
//!
//! Claim times come from each worker's wall clock, so keep clocks in sync
//! (NTP) and claims well above any skew. A `ValidationException` is a
//! [`StoreError::Invalid`] (the message fails permanently); any other
//! DynamoDB error is a [`StoreError::Backend`] naming the table, and the
//! message is then retried. Keys reach the table as the layer hashes them
//! (64 hex characters), so no key is ever too long for DynamoDB.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod table;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use sqs_worker_core::idempotency::{
    Begun, ClaimToken, Completed, IdempotencyStore, PayloadHash, StoreError,
};
use sqs_worker_core::runner::BoxFuture;

pub use self::table::CreateTableError;
/// Why [`DynamoDbStore::from_env`] failed: the configuration error both
/// runners use.
pub use sqs_worker_core::config::ConfigError;

/// The environment variable [`DynamoDbStore::from_env`] reads the table name from.
pub const TABLE_ENV: &str = sqs_worker_core::config::var::IDEMPOTENCY_TABLE;
/// The default partition key attribute.
pub const DEFAULT_KEY_ATTRIBUTE: &str = "pk";
/// The TTL attribute: epoch seconds.
pub const EXPIRES_AT: &str = "expires_at";

const STATUS: &str = "status";
const CLAIM_EXPIRES: &str = "lease_expires";
const TOKEN: &str = "token";
const PAYLOAD_HASH: &str = "payload_hash";
const RESULT: &str = "result";
const IN_PROGRESS: &str = "IN_PROGRESS";
const COMPLETED: &str = "COMPLETED";

/// Idempotency records in a DynamoDB table. Cheap to clone (the client is).
#[derive(Clone, Debug)]
pub struct DynamoDbStore {
    client: Client,
    table: String,
    key_attribute: String,
}

impl DynamoDbStore {
    /// A store on `table` with `client`, partition key attribute `pk`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            key_attribute: DEFAULT_KEY_ATTRIBUTE.to_owned(),
        }
    }

    /// The table from `SQS_WORKER_IDEMPOTENCY_TABLE`, the client from the
    /// standard AWS environment (region, credentials).
    pub async fn from_env() -> Result<Self, ConfigError> {
        let table = table_from_env()?;
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Ok(Self::new(Client::new(&config), table))
    }

    /// The table from `SQS_WORKER_IDEMPOTENCY_TABLE`, with your client.
    pub fn from_env_with_client(client: Client) -> Result<Self, ConfigError> {
        Ok(Self::new(client, table_from_env()?))
    }

    /// The name of the partition key attribute (type S); `pk` by default.
    #[must_use]
    pub fn key_attribute(mut self, name: impl Into<String>) -> Self {
        self.key_attribute = name.into();
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The error of a DynamoDB call: a `ValidationException` (the request
    /// itself is wrong; it fails the same way every time) is
    /// [`StoreError::Invalid`], anything else [`StoreError::Backend`].
    fn sdk_error<E>(&self, operation: &'static str, key: &str, e: E) -> StoreError
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    {
        if e.code() == Some("ValidationException") {
            return StoreError::Invalid {
                store: format!("DynamoDB table {:?}", self.table),
                operation,
                key: key.to_owned(),
                source: Box::new(e),
            };
        }
        self.backend(operation, key, e)
    }

    fn backend<E>(&self, operation: &'static str, key: &str, e: E) -> StoreError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        StoreError::Backend {
            store: format!("DynamoDB table {:?}", self.table),
            operation,
            key: key.to_owned(),
            source: Box::new(e),
        }
    }

    fn key(&self, key: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([(
            self.key_attribute.clone(),
            AttributeValue::S(key.to_owned()),
        )])
    }

    async fn begin_once(
        &self,
        key: &str,
        claim_ttl: Duration,
        payload_hash: Option<&PayloadHash>,
    ) -> Result<Option<Begun>, StoreError> {
        let now = SystemTime::now();
        let (now_ms, now_s) = (epoch_millis(now), epoch_secs(now));
        let claim_end = now + claim_ttl;
        let token = ClaimToken::generate();
        let mut item = self.key(key);
        item.insert(STATUS.into(), s(IN_PROGRESS));
        item.insert(CLAIM_EXPIRES.into(), n(epoch_millis(claim_end)));
        item.insert(TOKEN.into(), s(token.as_str()));
        item.insert(EXPIRES_AT.into(), n(epoch_secs_ceil(claim_end)));
        if let Some(h) = payload_hash {
            item.insert(PAYLOAD_HASH.into(), s(h.as_str()));
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(
                "attribute_not_exists(#pk) OR (#status = :in_progress AND #claim < :now_ms) \
                 OR #exp < :now_s",
            )
            .expression_attribute_names("#pk", &self.key_attribute)
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#claim", CLAIM_EXPIRES)
            .expression_attribute_names("#exp", EXPIRES_AT)
            .expression_attribute_values(":in_progress", s(IN_PROGRESS))
            .expression_attribute_values(":now_ms", n(now_ms))
            .expression_attribute_values(":now_s", n(now_s))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let existing = match put {
            Ok(_) => return Ok(Some(Begun::Acquired(token))),
            Err(e) => match e.as_service_error() {
                Some(se) if se.is_conditional_check_failed_exception() => {
                    use aws_sdk_dynamodb::operation::put_item::PutItemError;
                    match se {
                        PutItemError::ConditionalCheckFailedException(c) => c.item().cloned(),
                        _ => None,
                    }
                }
                _ => return Err(self.sdk_error("begin", key, e)),
            },
        };
        let existing = match existing {
            Some(item) => Some(item),
            None => self.read(key, "begin").await?,
        };
        // Classify with the same clock readings the condition used.
        Ok(existing.and_then(|item| classify(&item, now_ms, now_s)))
    }

    async fn read(
        &self,
        key: &str,
        operation: &'static str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.sdk_error(operation, key, e))?;
        Ok(out.item)
    }

    /// The error of a token-conditioned write: a failed condition is `ClaimLost`.
    fn claim_lost_or<E>(
        &self,
        operation: &'static str,
        key: &str,
        conditional: bool,
        e: E,
    ) -> StoreError
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    {
        if conditional {
            StoreError::ClaimLost {
                key: key.to_owned(),
            }
        } else {
            self.sdk_error(operation, key, e)
        }
    }
}

fn table_from_env() -> Result<String, ConfigError> {
    sqs_worker_core::config::Env::process()
        .required(TABLE_ENV, "the name of the DynamoDB idempotency table")
}

/// What an existing item means at `now`; `None` when it no longer blocks
/// (expired in between: try `begin` again).
fn classify(item: &HashMap<String, AttributeValue>, now_ms: u64, now_s: u64) -> Option<Begun> {
    let num = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    if num(EXPIRES_AT).is_some_and(|e| e < now_s) {
        return None;
    }
    match text(STATUS).as_deref() {
        Some(COMPLETED) => Some(Begun::Completed(Completed {
            result: item
                .get(RESULT)
                .and_then(|v| v.as_b().ok())
                .map(|b| b.as_ref().to_vec()),
            payload_hash: text(PAYLOAD_HASH).map(PayloadHash::from_stored),
        })),
        Some(IN_PROGRESS) => match num(CLAIM_EXPIRES) {
            Some(until) if until >= now_ms => Some(Begun::InProgress {
                remaining: Duration::from_millis(until - now_ms),
            }),
            _ => None,
        },
        _ => None,
    }
}

impl IdempotencyStore for DynamoDbStore {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        claim_ttl: Duration,
        payload_hash: Option<&'a PayloadHash>,
    ) -> BoxFuture<'a, Result<Begun, StoreError>> {
        Box::pin(async move {
            // A blocking item can expire between the put and the read: try again.
            for _ in 0..3 {
                if let Some(begun) = self.begin_once(key, claim_ttl, payload_hash).await? {
                    return Ok(begun);
                }
            }
            Err(self.backend(
                "begin",
                key,
                std::io::Error::other("the record kept changing under concurrent writers"),
            ))
        })
    }

    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        claim_ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let claim_end = SystemTime::now() + claim_ttl;
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(self.key(key)))
                .update_expression("SET #claim = :claim, #exp = :exp")
                .condition_expression("#token = :token AND #status = :in_progress")
                .expression_attribute_names("#claim", CLAIM_EXPIRES)
                .expression_attribute_names("#exp", EXPIRES_AT)
                .expression_attribute_names("#token", TOKEN)
                .expression_attribute_names("#status", STATUS)
                .expression_attribute_values(":claim", n(epoch_millis(claim_end)))
                .expression_attribute_values(":exp", n(epoch_secs_ceil(claim_end)))
                .expression_attribute_values(":token", s(token.as_str()))
                .expression_attribute_values(":in_progress", s(IN_PROGRESS))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    let c = e
                        .as_service_error()
                        .is_some_and(|se| se.is_conditional_check_failed_exception());
                    self.claim_lost_or("renew", key, c, e)
                })
        })
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        retention: Duration,
        result: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let expires = epoch_secs_ceil(SystemTime::now() + retention);
            let mut update = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(self.key(key)))
                .condition_expression("#token = :token AND #status = :in_progress")
                .expression_attribute_names("#claim", CLAIM_EXPIRES)
                .expression_attribute_names("#exp", EXPIRES_AT)
                .expression_attribute_names("#token", TOKEN)
                .expression_attribute_names("#status", STATUS)
                .expression_attribute_values(":completed", s(COMPLETED))
                .expression_attribute_values(":exp", n(expires))
                .expression_attribute_values(":token", s(token.as_str()))
                .expression_attribute_values(":in_progress", s(IN_PROGRESS));
            update = match result {
                Some(r) => update
                    .update_expression(
                        "SET #status = :completed, #exp = :exp, #result = :result \
                         REMOVE #claim, #token",
                    )
                    .expression_attribute_names("#result", RESULT)
                    .expression_attribute_values(":result", AttributeValue::B(Blob::new(r))),
                None => update.update_expression(
                    "SET #status = :completed, #exp = :exp REMOVE #claim, #token",
                ),
            };
            update.send().await.map(|_| ()).map_err(|e| {
                let c = e
                    .as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception());
                self.claim_lost_or("complete", key, c, e)
            })
        })
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(self.key(key)))
                .condition_expression("#token = :token AND #status = :in_progress")
                .expression_attribute_names("#token", TOKEN)
                .expression_attribute_names("#status", STATUS)
                .expression_attribute_values(":token", s(token.as_str()))
                .expression_attribute_values(":in_progress", s(IN_PROGRESS))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    let c = e
                        .as_service_error()
                        .is_some_and(|se| se.is_conditional_check_failed_exception());
                    self.claim_lost_or("release", key, c, e)
                })
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Completed>, StoreError>> {
        Box::pin(async move {
            let now = SystemTime::now();
            let item = self.read(key, "get").await?;
            Ok(item
                .and_then(|item| classify(&item, epoch_millis(now), epoch_secs(now)))
                .and_then(|b| match b {
                    Begun::Completed(c) => Some(c),
                    _ => None,
                }))
        })
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

fn epoch_millis(t: SystemTime) -> u64 {
    u64::try_from(since_epoch(t).as_millis()).unwrap_or(u64::MAX)
}

fn epoch_secs(t: SystemTime) -> u64 {
    since_epoch(t).as_secs()
}

fn epoch_secs_ceil(t: SystemTime) -> u64 {
    let d = since_epoch(t);
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn classify_reads_items_at_a_given_time() {
        let in_progress = item(&[
            (STATUS, s(IN_PROGRESS)),
            (CLAIM_EXPIRES, n(10_500)),
            (EXPIRES_AT, n(11)),
        ]);
        assert_eq!(
            classify(&in_progress, 10_000, 10),
            Some(Begun::InProgress {
                remaining: Duration::from_millis(500)
            })
        );
        assert_eq!(classify(&in_progress, 10_501, 10), None, "claim over");
        let completed = item(&[
            (STATUS, s(COMPLETED)),
            (EXPIRES_AT, n(100)),
            (PAYLOAD_HASH, s("ab")),
            (RESULT, AttributeValue::B(Blob::new(b"r".to_vec()))),
        ]);
        let Some(Begun::Completed(c)) = classify(&completed, 50_000, 50) else {
            panic!()
        };
        assert_eq!(c.result.as_deref(), Some(&b"r"[..]));
        assert_eq!(c.payload_hash, Some(PayloadHash::from_stored("ab")));
        assert_eq!(classify(&completed, 101_000, 101), None, "past retention");
    }

    #[test]
    fn ceil_seconds() {
        assert_eq!(epoch_secs_ceil(UNIX_EPOCH + Duration::from_millis(1001)), 2);
        assert_eq!(epoch_secs_ceil(UNIX_EPOCH + Duration::from_secs(3)), 3);
    }
}
