//! The receive side: [`PayloadLayer`] resolves Extended Client pointers
//! before the handler sees the message, in either runner.

use std::collections::HashSet;
use std::sync::Arc;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use sqs_worker_core::config::{ConfigError, Env, var};
use sqs_worker_core::{Error, Handler, Message, PayloadOrigin};

use super::pointer::{S3Pointer, find_pointer, replace_sns_message};

/// The default cap on a fetched payload: 256 MiB.
pub const DEFAULT_MAX_SIZE: u64 = 256 * 1024 * 1024;

/// Why a payload could not be fetched. Names the message, bucket and key;
/// never the payload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The message carries the reserved attribute but no readable pointer.
    #[error("{0}")]
    BadPointer(String),
    /// The pointer names a bucket outside the allow-list.
    #[error("message {message_id} points to bucket {bucket}, which is not allowed")]
    BucketNotAllowed {
        /// The message id.
        message_id: String,
        /// The bucket.
        bucket: String,
    },
    /// The object does not exist (deleted early, or the wrong bucket), or
    /// access to it is denied.
    #[error(
        "message {message_id}: payload s3://{bucket}/{key} is missing or not readable ({code})"
    )]
    Missing {
        /// The message id.
        message_id: String,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// S3's error code.
        code: String,
    },
    /// The payload is larger than the configured cap.
    #[error(
        "message {message_id}: payload s3://{bucket}/{key} is {size} bytes, over the {max}-byte cap"
    )]
    TooLarge {
        /// The message id.
        message_id: String,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// Its size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// The payload is not UTF-8 text (SQS bodies are text).
    #[error("message {message_id}: payload s3://{bucket}/{key} is not UTF-8 text")]
    NotText {
        /// The message id.
        message_id: String,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// A failure worth retrying (throttling, 5xx, network).
    #[error("message {message_id}: fetching payload s3://{bucket}/{key} failed: {detail}")]
    Fetch {
        /// The message id.
        message_id: String,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// What the SDK said.
        detail: String,
    },
}

/// Wraps a handler in [`Payloads`]: a message whose body is an Amazon SQS
/// Extended Client pointer reaches the handler with the S3 object as its
/// body; after the handler succeeded the object is deleted (unless
/// [`keep_objects`](Self::keep_objects)); on failure or retry it stays.
///
/// ```no_run
/// # async fn f(config: aws_config::SdkConfig) {
/// use sqs_worker_core::{Error, Message, handler_fn};
/// use sqs_worker_producer::payload::PayloadLayer;
/// use tower_layer::Layer;
///
/// async fn handle(msg: Message) -> Result<(), Error> {
///     let _payload = msg.body(); // the S3 object's text
///     Ok(())
/// }
///
/// let handler = PayloadLayer::new(aws_sdk_s3::Client::new(&config))
///     .allow_buckets(["my-payload-bucket"])
///     .layer(handler_fn(handle));
/// # let _ = handler;
/// # }
/// ```
///
/// Missing objects, buckets outside the allow-list, payloads over the cap and
/// bad pointers are permanent failures (dead-letter queue) naming the bucket
/// and key; S3 throttling, 5xx and network errors are retried.
#[derive(Debug, Clone)]
pub struct PayloadLayer {
    config: Arc<Config>,
}

#[derive(Debug)]
struct Config {
    client: aws_sdk_s3::Client,
    allowed: Option<HashSet<String>>,
    max_size: u64,
    keep: bool,
}

impl PayloadLayer {
    /// Resolves pointers with this S3 client.
    pub fn new(client: aws_sdk_s3::Client) -> Self {
        Self {
            config: Arc::new(Config {
                client,
                allowed: None,
                max_size: DEFAULT_MAX_SIZE,
                keep: false,
            }),
        }
    }

    /// The layer the environment asks for: `None` unless
    /// `SQS_WORKER_PAYLOAD_BUCKETS` (the allow-list, comma-separated) is
    /// set; then one reading those buckets with an S3 client from
    /// `aws_config::load_defaults`. What `sqs_worker::run` uses, in both
    /// runners. A custom endpoint (`AWS_ENDPOINT_URL`: LocalStack, MinIO, a
    /// test server) is addressed path-style.
    pub async fn from_env() -> Result<Option<Self>, ConfigError> {
        let Some(buckets) = Env::process().names(var::PAYLOAD_BUCKETS)? else {
            return Ok(None);
        };
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Ok(Some(
            Self::new(super::s3_client(&sdk)).allow_buckets(buckets),
        ))
    }

    fn config_mut(&mut self) -> &mut Config {
        if Arc::get_mut(&mut self.config).is_none() {
            let c = &self.config;
            self.config = Arc::new(Config {
                client: c.client.clone(),
                allowed: c.allowed.clone(),
                max_size: c.max_size,
                keep: c.keep,
            });
        }
        match Arc::get_mut(&mut self.config) {
            Some(c) => c,
            None => unreachable!("a fresh Arc has one owner"),
        }
    }

    /// Only these buckets may be read; a pointer elsewhere is a permanent
    /// failure (default: any bucket the credentials can read).
    #[must_use]
    pub fn allow_buckets<I, S>(mut self, buckets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config_mut().allowed = Some(buckets.into_iter().map(Into::into).collect());
        self
    }

    /// The largest payload fetched, in bytes (default 256 MiB); a larger one
    /// is a permanent failure.
    #[must_use]
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.config_mut().max_size = bytes;
        self
    }

    /// Keeps objects after success (the Java client's default when several
    /// consumers read one payload); a lifecycle rule should expire them.
    #[must_use]
    pub fn keep_objects(mut self) -> Self {
        self.config_mut().keep = true;
        self
    }
}

impl<H> tower_layer::Layer<H> for PayloadLayer {
    type Service = Payloads<H>;

    fn layer(&self, inner: H) -> Payloads<H> {
        Payloads {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// A handler whose messages have their S3 payloads resolved
/// ([`PayloadLayer`]).
#[derive(Debug, Clone)]
pub struct Payloads<H> {
    inner: H,
    config: Arc<Config>,
}

impl<H: Handler> Handler for Payloads<H> {
    async fn handle(&self, msg: Message) -> Result<(), Error> {
        let (pointer, announced, in_sns) = match find_pointer(&msg) {
            Ok(None) => return self.inner.handle(msg).await,
            Ok(Some(found)) => found,
            Err(e) => return Err(Error::permanent(PayloadError::BadPointer(e))),
        };
        let cfg = &*self.config;
        let payload = cfg.fetch(&msg, &pointer, announced).await?;
        let size = payload.len() as u64;
        let body = if in_sns {
            replace_sns_message(msg.body(), payload)
                .ok_or_else(|| Error::permanent(PayloadError::BadPointer(msg.id().to_owned())))?
        } else {
            payload
        };
        let origin = PayloadOrigin::new(pointer.bucket.clone(), pointer.key.clone(), size);
        let resolved = msg.with_payload(body, origin);
        drop(msg);
        let message_id = resolved.id().to_owned();
        self.inner.handle(resolved).await?;
        if !cfg.keep {
            cfg.delete(&message_id, &pointer).await;
        }
        Ok(())
    }
}

impl Config {
    /// Fetches the payload into one buffer, sized once, capped.
    async fn fetch(
        &self,
        msg: &Message,
        p: &S3Pointer,
        announced: Option<u64>,
    ) -> Result<String, Error> {
        let message_id = msg.id().to_owned();
        if let Some(allowed) = &self.allowed
            && !allowed.contains(&p.bucket)
        {
            {
                let bucket = p.bucket.clone();
                return Err(Error::permanent(PayloadError::BucketNotAllowed {
                    message_id,
                    bucket,
                }));
            }
        }
        let too_large = |size: u64| {
            Error::permanent(PayloadError::TooLarge {
                message_id: message_id.clone(),
                bucket: p.bucket.clone(),
                key: p.key.clone(),
                size,
                max: self.max_size,
            })
        };
        if let Some(size) = announced.filter(|s| *s > self.max_size) {
            return Err(too_large(size));
        }
        let out = self
            .client
            .get_object()
            .bucket(&p.bucket)
            .key(&p.key)
            .send()
            .await;
        let out = out.map_err(|e| self.fetch_error(&message_id, p, &e))?;
        let length = out.content_length().and_then(|n| u64::try_from(n).ok());
        if let Some(size) = length.filter(|s| *s > self.max_size) {
            return Err(too_large(size));
        }
        // One buffer of the object's size: the payload is held once.
        let capacity = usize::try_from(length.unwrap_or(0)).unwrap_or(0);
        let mut buf = Vec::with_capacity(capacity);
        let mut stream = out.body;
        loop {
            let chunk = stream.try_next().await.map_err(|e| {
                Error::retry(PayloadError::Fetch {
                    message_id: message_id.clone(),
                    bucket: p.bucket.clone(),
                    key: p.key.clone(),
                    detail: e.to_string(),
                })
            })?;
            let Some(chunk) = chunk else { break };
            if (buf.len() + chunk.len()) as u64 > self.max_size {
                return Err(too_large((buf.len() + chunk.len()) as u64));
            }
            buf.extend_from_slice(&chunk);
        }
        String::from_utf8(buf).map_err(|_| {
            Error::permanent(PayloadError::NotText {
                message_id: message_id.clone(),
                bucket: p.bucket.clone(),
                key: p.key.clone(),
            })
        })
    }

    fn fetch_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        message_id: &str,
        p: &S3Pointer,
        e: &SdkError<E>,
    ) -> Error {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().unwrap_or_default().to_owned();
        let gone = matches!(
            code.as_str(),
            "NoSuchKey" | "NoSuchBucket" | "NotFound" | "AccessDenied"
        ) || matches!(status, Some(403 | 404));
        if gone && !code.starts_with("ExpiredToken") {
            let code = if code.is_empty() {
                format!("HTTP {}", status.unwrap_or(0))
            } else {
                code
            };
            return Error::permanent(PayloadError::Missing {
                message_id: message_id.to_owned(),
                bucket: p.bucket.clone(),
                key: p.key.clone(),
                code,
            });
        }
        // Throttling, 5xx, timeouts, network, expiring credentials: retry.
        Error::retry(PayloadError::Fetch {
            message_id: message_id.to_owned(),
            bucket: p.bucket.clone(),
            key: p.key.clone(),
            detail: DisplayErrorContext(e).to_string(),
        })
    }

    /// Deletes the object after success; a failure is logged, not the
    /// message's (a lifecycle rule expires what is left).
    async fn delete(&self, message_id: &str, p: &S3Pointer) {
        let out = self
            .client
            .delete_object()
            .bucket(&p.bucket)
            .key(&p.key)
            .send()
            .await;
        if let Err(e) = out {
            tracing::warn!(
                message_id,
                bucket = p.bucket,
                key = p.key,
                error = %DisplayErrorContext(&e),
                "deleting a handled payload failed; it stays until the bucket's lifecycle rule expires it"
            );
        }
    }
}
