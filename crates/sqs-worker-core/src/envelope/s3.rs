//! `S3Event`: S3 event notifications, direct or through SNS or EventBridge.

use std::borrow::Cow;

use serde::de::{Deserializer, Error as _};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::extract::{AckReason, Extracted, FromMessage};
use crate::json::envelope_error;
use crate::message::Message;

/// S3 event notifications as a handler argument: the objects an S3 event is
/// about, whichever way it reached the queue:
///
/// - S3 → SQS: `{"Records":[{"eventName":"ObjectCreated:Put","s3":{..}}]}`;
/// - S3 → SNS → SQS, wrapped or raw (also as `Sns<S3Event>`, which gives
///   the topic too);
/// - S3 → EventBridge → SQS: one record from the event's `detail`.
///
/// Keys are URL-decoded (S3 notifications encode them: `my+file%3D1.txt` is
/// `my file=1.txt`); EventBridge sends keys as they are.
///
/// The `s3:TestEvent` S3 sends when a notification is configured is
/// acknowledged (deleted) without calling the handler, with one INFO log
/// line, and counted in
/// [`ACKNOWLEDGED`](crate::runner::observe::names::ACKNOWLEDGED) (`reason="s3_test_event"`).
///
/// ```
/// use sqs_worker_core::{Error, S3Event};
/// async fn handle(event: S3Event) -> Result<(), Error> {
///     for r in &event.records {
///         let _ = (&r.bucket, &r.key, r.size);
///     }
///     Ok(())
/// }
/// let _ = sqs_worker_core::handler_fn(handle);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct S3Event {
    /// The objects, in the notification's order.
    pub records: Vec<S3Record>,
    #[serde(skip)]
    test_event: bool,
}

/// One object an S3 event is about.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct S3Record {
    /// `eventName` (`ObjectCreated:Put`, `ObjectRemoved:Delete`, …), or the
    /// EventBridge `detail-type` (`Object Created`, …).
    pub event_name: String,
    /// When S3 finished the request, ISO 8601.
    pub event_time: String,
    /// The bucket's region.
    pub region: String,
    /// The bucket's name.
    pub bucket: String,
    /// The object key, URL-decoded.
    pub key: String,
    /// The object size in bytes (absent for deletes).
    pub size: Option<u64>,
    /// The object's ETag.
    pub etag: Option<String>,
    /// The object version, in a versioned bucket.
    pub version_id: Option<String>,
    /// Orders events for one key (compare as hex strings of equal length).
    pub sequencer: Option<String>,
}

impl S3Event {
    /// An event with these records (for tests).
    pub fn new(records: Vec<S3Record>) -> Self {
        Self {
            records,
            test_event: false,
        }
    }

    /// Whether this is the `s3:TestEvent` (no records).
    pub fn is_test_event(&self) -> bool {
        self.test_event
    }
}

impl S3Record {
    /// A record for `bucket` and `key` (for tests); set the other fields.
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            key: key.into(),
            ..Self::default()
        }
    }
}

/// Every shape an S3 event arrives in, read in one pass.
#[derive(Deserialize)]
struct AnyShape {
    #[serde(rename = "Records")]
    records: Option<Vec<NotificationRecord>>,
    #[serde(rename = "Event")]
    event: Option<String>,
    #[serde(rename = "detail-type")]
    detail_type: Option<String>,
    source: Option<String>,
    time: Option<String>,
    region: Option<String>,
    detail: Option<BridgeDetail>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationRecord {
    #[serde(default)]
    event_name: String,
    #[serde(default)]
    event_time: String,
    #[serde(default)]
    aws_region: String,
    s3: NotificationS3,
}

#[derive(Deserialize)]
struct NotificationS3 {
    bucket: Named,
    object: NotificationObject,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationObject {
    key: String,
    size: Option<u64>,
    #[serde(rename = "eTag")]
    etag: Option<String>,
    version_id: Option<String>,
    sequencer: Option<String>,
}

#[derive(Deserialize)]
struct BridgeDetail {
    bucket: Named,
    object: BridgeObject,
}

#[derive(Deserialize)]
struct BridgeObject {
    key: String,
    size: Option<u64>,
    etag: Option<String>,
    #[serde(rename = "version-id")]
    version_id: Option<String>,
    sequencer: Option<String>,
}

/// An S3 notification key: `+` is a space, then percent-decoding.
fn decode_key(key: &str) -> Option<String> {
    let plus_decoded = if key.contains('+') {
        Cow::Owned(key.replace('+', " "))
    } else {
        Cow::Borrowed(key)
    };
    percent_encoding::percent_decode_str(&plus_decoded)
        .decode_utf8()
        .ok()
        .map(Cow::into_owned)
}

impl<'de> Deserialize<'de> for S3Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let shape = AnyShape::deserialize(d)?;
        if let Some(records) = shape.records {
            let records = records
                .into_iter()
                .map(|r| {
                    let key = decode_key(&r.s3.object.key).ok_or_else(|| {
                        D::Error::custom("an object key is not UTF-8 once URL-decoded")
                    })?;
                    Ok(S3Record {
                        event_name: r.event_name,
                        event_time: r.event_time,
                        region: r.aws_region,
                        bucket: r.s3.bucket.name,
                        key,
                        size: r.s3.object.size,
                        etag: r.s3.object.etag,
                        version_id: r.s3.object.version_id,
                        sequencer: r.s3.object.sequencer,
                    })
                })
                .collect::<Result<_, D::Error>>()?;
            return Ok(S3Event::new(records));
        }
        if shape.event.as_deref() == Some("s3:TestEvent") {
            return Ok(S3Event {
                records: Vec::new(),
                test_event: true,
            });
        }
        if let (Some("aws.s3"), Some(detail)) = (shape.source.as_deref(), shape.detail) {
            return Ok(S3Event::new(vec![S3Record {
                event_name: shape.detail_type.unwrap_or_default(),
                event_time: shape.time.unwrap_or_default(),
                region: shape.region.unwrap_or_default(),
                bucket: detail.bucket.name,
                key: detail.object.key,
                size: detail.object.size,
                etag: detail.object.etag,
                version_id: detail.object.version_id,
                sequencer: detail.object.sequencer,
            }]));
        }
        Err(D::Error::custom(
            "no `Records`, no `s3:TestEvent` and no EventBridge `aws.s3` event",
        ))
    }
}

impl FromMessage for S3Event {
    fn from_message(msg: &Message) -> Result<Extracted<Self>, Error> {
        let fail = |e: &serde_json::Error| envelope_error(msg.id(), "S3Event".to_owned(), e);
        let event = match super::sns::notification(msg.body()) {
            Some(n) => {
                let text = n.message.as_ref().map_or("", |m| &m.0);
                serde_json::from_str::<S3Event>(text).map_err(|e| fail(&e))?
            }
            None => serde_json::from_str::<S3Event>(msg.body()).map_err(|e| fail(&e))?,
        };
        Ok(if event.test_event {
            Extracted::Acknowledge(AckReason::S3TestEvent)
        } else {
            Extracted::Value(event)
        })
    }
}
