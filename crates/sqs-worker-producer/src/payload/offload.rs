//! The send side: bodies over a threshold go to S3, a pointer goes to SQS.

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use sqs_worker_core::MessageAttribute;
use sqs_worker_core::config::var;

use super::pointer::{S3Pointer, SIZE_ATTRIBUTE};
use crate::error::{SendError, SetupError};
use crate::outgoing::Outgoing;

/// Where and when a [`Sender`](crate::Sender) stores bodies in S3 instead of
/// SQS, as the Amazon SQS Extended Client does: the object's key is the
/// prefix and a random UUID, the message body the Java client's pointer, and
/// the `ExtendedPayloadSize` attribute the payload's size, so Java and
/// Python consumers read what this producer sends.
///
/// ```no_run
/// # async fn f(config: aws_config::SdkConfig, sender: sqs_worker_producer::Sender) {
/// use sqs_worker_producer::payload::LargePayloads;
///
/// let sender = sender.large_payloads(
///     LargePayloads::new(aws_sdk_s3::Client::new(&config), "my-payload-bucket")
///         .key_prefix("orders/")
///         .threshold(256 * 1024),
/// );
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LargePayloads {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    threshold: Option<usize>,
    always: bool,
}

impl LargePayloads {
    /// Offloads to `bucket` the bodies over the queue's maximum message size.
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            prefix: String::new(),
            threshold: None,
            always: false,
        }
    }

    /// The offloading the environment asks for: `None` unless
    /// `SQS_WORKER_OFFLOAD_BUCKET` is set; then to that bucket, with an S3
    /// client from `aws_config::load_defaults` (a custom endpoint,
    /// `AWS_ENDPOINT_URL`, is addressed path-style). What
    /// [`Sender::from_env`](crate::Sender::from_env) uses.
    pub async fn from_env() -> Result<Option<Self>, SetupError> {
        // No AWS configuration is loaded when the variable is unset.
        if crate::sender::env(var::OFFLOAD_BUCKET)?.is_none() {
            return Ok(None);
        }
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::from_env_with(&sdk)
    }

    /// [`from_env`](Self::from_env) with the configuration already loaded.
    pub(crate) fn from_env_with(sdk: &aws_config::SdkConfig) -> Result<Option<Self>, SetupError> {
        let bucket = crate::sender::env(var::OFFLOAD_BUCKET)?;
        Ok(bucket.map(|b| Self::new(super::s3_client(sdk), b)))
    }

    /// Offloads messages (body and attributes) over `bytes` instead; at most
    /// the queue's limit.
    #[must_use]
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = Some(bytes);
        self
    }

    /// Offloads every message, whatever its size.
    #[must_use]
    pub fn always(mut self) -> Self {
        self.always = true;
        self
    }

    /// Prepends `prefix` to every object key (e.g. `"orders/"`), so a
    /// lifecycle rule or a policy can target them.
    #[must_use]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Stores the body in S3 and replaces it with a pointer when it is over
    /// the threshold (or always).
    pub(crate) async fn offload(
        &self,
        index: usize,
        msg: &mut Outgoing,
        queue_limit: usize,
    ) -> Result<(), SendError> {
        // The reserved attribute will count too.
        let limit = self.threshold.unwrap_or(queue_limit).min(queue_limit);
        if !self.always && msg.size() <= limit {
            return Ok(());
        }
        let key = format!("{}{}", self.prefix, uuid_v4());
        let size = msg.body.len();
        let body = std::mem::take(&mut msg.body).into_bytes();
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(ByteStream::from(body))
            .send()
            .await;
        if let Err(e) = put {
            return Err(SendError::Offload {
                index,
                bucket: self.bucket.clone(),
                key,
                source: DisplayErrorContext(&e).to_string().into(),
            });
        }
        msg.body = S3Pointer {
            bucket: self.bucket.clone(),
            key,
        }
        .to_body();
        msg.attributes
            .insert(SIZE_ATTRIBUTE, MessageAttribute::number(size));
        Ok(())
    }
}

/// A random version-4 UUID, as the Java client names its objects.
fn uuid_v4() -> String {
    let n = fastrand::u128(..);
    let n = (n & !(0xF << 76)) | (0x4 << 76); // version 4
    let n = (n & !(0x3 << 62)) | (0x2 << 62); // variant 10
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuid_shape() {
        let u = super::uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
    }
}
