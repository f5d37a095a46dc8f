//! Payloads beyond SQS's limit, stored in S3 the way the Amazon SQS Extended
//! Client (Java, Python) does: the body becomes a pointer
//! `["software.amazon.payloadoffloading.PayloadS3Pointer",{"s3BucketName":"..","s3Key":".."}]`
//! and the reserved message attribute `ExtendedPayloadSize` (Number) holds the
//! payload's size in bytes.
//!
//! - Send: [`LargePayloads`] on a [`Sender`](crate::Sender) offloads bodies
//!   over a threshold (default: the queue's limit) or all of them.
//! - Receive: [`PayloadLayer`] wraps any handler, in either runner; the
//!   handler sees the payload,
//!   [`Message::payload_origin`](sqs_worker_core::Message::payload_origin)
//!   says where it came from, and the
//!   object is deleted after the handler succeeded (unless kept).

mod layer;
mod offload;
mod pointer;

pub use self::layer::{DEFAULT_MAX_SIZE, PayloadError, PayloadLayer, Payloads};
pub use self::offload::LargePayloads;
pub use self::pointer::{
    LEGACY_SIZE_ATTRIBUTE, POINTER_CLASS, S3Pointer, SIZE_ATTRIBUTE, find_pointer,
};
pub use sqs_worker_core::PayloadOrigin;

/// An S3 client from the shared AWS configuration. A custom endpoint
/// (`AWS_ENDPOINT_URL`: LocalStack, MinIO, a test server) is addressed
/// path-style: `http://localhost:4566/bucket/key`, since
/// `bucket.localhost` does not resolve.
pub(crate) fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(sdk.endpoint_url().is_some())
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}
