//! Receive: Lambda SQS records into core [`Message`]s.
//!
//! Strings are moved, never copied: the id, body, receipt handle, system
//! attribute values and message attribute names and values go from the
//! deserialized record straight into the [`Message`].

use aws_lambda_events::event::sqs::{SqsMessage, SqsMessageAttribute};
use sqs_worker_core::runner::MessageParts;
use sqs_worker_core::{Message, MessageAttribute, MessageAttributes, SystemAttributes, Visibility};

/// The `eventSource` of every record of an SQS event.
pub const SQS_EVENT_SOURCE: &str = "aws:sqs";

/// Why a whole invocation fails instead of answering `batchItemFailures`.
///
/// Each is about the event as a whole, not one record's processing: Lambda
/// then returns the whole batch to the queue, which is the only outcome that
/// loses nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// A record does not come from SQS (the function is wired to another
    /// event source, or was invoked by hand with another event).
    #[error(
        "record {index} is not an SQS message (eventSource {found:?}, expected \"aws:sqs\"): \
         this function handles Amazon SQS events only"
    )]
    NotSqs {
        /// The record's position in the event.
        index: usize,
        /// The `eventSource` it has, if any.
        found: Option<String>,
    },
    /// A record has no `messageId`, so it could not be named in
    /// `batchItemFailures`; no record was processed.
    #[error(
        "record {index} has no messageId, so it cannot be reported in batchItemFailures; \
         failing the invocation so that Lambda returns the whole batch to the queue"
    )]
    MissingMessageId {
        /// The record's position in the event.
        index: usize,
    },
    /// The invocation's payload is not an SQS event (not shaped like one, or
    /// a field of the wrong type); no record was processed, and Lambda
    /// returns the batch.
    #[error(
        "the invocation's payload is not an SQS event (at {path}): {error}; \
         this function handles Amazon SQS events only"
    )]
    Malformed {
        /// Where in the payload, as `serde_path_to_error` writes it
        /// (`Records[2].attributes`, `.` for the whole payload).
        path: String,
        /// What was wrong there.
        error: String,
    },
    /// Every record failed and `SQS_WORKER_FAIL_INVOCATION_WHEN_ALL_FAILED`
    /// is on: the function errors so that the event source mapping scales
    /// its polling down (it does not for partial batch failures). Retry
    /// delays already set stay in force.
    #[error("all {records} records failed; failing the invocation so Lambda polls less")]
    AllFailed {
        /// How many records the invocation had.
        records: usize,
    },
}

impl EventError {
    /// A stable error type for the Lambda error response.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::NotSqs { .. } => "SqsWorker.NotAnSqsEvent",
            Self::MissingMessageId { .. } => "SqsWorker.MissingMessageId",
            Self::AllFailed { .. } => "SqsWorker.AllRecordsFailed",
            Self::Malformed { .. } => "SqsWorker.MalformedEvent",
        }
    }
}

impl From<EventError> for lambda_runtime::Diagnostic {
    fn from(e: EventError) -> Self {
        Self {
            error_type: e.error_type().to_owned(),
            error_message: e.to_string(),
        }
    }
}

/// One record, checked.
pub(crate) enum Converted {
    /// Ready for the engine.
    Message(Message),
    /// A record with an id but no body: reported failed without running the
    /// handler, so it comes back (and reaches the redrive policy's DLQ
    /// eventually) instead of being deleted. Carries the id and group.
    NoBody { id: String, group: Option<String> },
}

/// What the adapter keeps of a record: the rest (`md5OfBody`, `awsRegion`,
/// attribute names, …) is dropped, or with [`SqsPayload`](crate::SqsPayload)
/// never allocated.
#[derive(Debug, Default)]
pub(crate) struct RecordParts {
    pub(crate) message_id: Option<String>,
    pub(crate) receipt_handle: Option<String>,
    pub(crate) body: Option<String>,
    pub(crate) attributes: SystemAttributes,
    pub(crate) message_attributes: MessageAttributes,
    pub(crate) event_source_arn: Option<String>,
    pub(crate) event_source: EventSource,
}

/// A record's `eventSource`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) enum EventSource {
    /// `aws:sqs`.
    Sqs,
    /// Something else.
    Other(String),
    /// None given.
    #[default]
    Missing,
}

impl From<SqsMessage> for RecordParts {
    fn from(record: SqsMessage) -> Self {
        let SqsMessage {
            message_id,
            receipt_handle,
            body,
            attributes,
            message_attributes,
            event_source_arn,
            event_source,
            ..
        } = record;
        Self {
            message_id,
            receipt_handle,
            body,
            attributes: SystemAttributes::from_pairs(attributes),
            message_attributes: message_attributes_of(message_attributes.into_iter()),
            event_source_arn,
            event_source: match event_source {
                Some(s) if s == SQS_EVENT_SOURCE => EventSource::Sqs,
                Some(s) => EventSource::Other(s),
                None => EventSource::Missing,
            },
        }
    }
}

/// A deserialized record the service converts in place: it takes the fields
/// a [`Message`] keeps (the rest is dropped with the event) rather than moving
/// the whole record, a struct of some hundreds of bytes, through each step.
pub(crate) trait Record {
    /// Converts the record at `index`. `lease` makes the lease for a message,
    /// given whether it has a receipt handle and its source ARN.
    fn convert(
        &mut self,
        index: usize,
        lease: impl FnOnce(bool, Option<&str>) -> Visibility,
    ) -> Result<Converted, EventError>;
}

impl Record for SqsMessage {
    fn convert(
        &mut self,
        index: usize,
        lease: impl FnOnce(bool, Option<&str>) -> Visibility,
    ) -> Result<Converted, EventError> {
        if self.event_source.as_deref() != Some(SQS_EVENT_SOURCE) {
            return Err(EventError::NotSqs {
                index,
                found: self.event_source.take(),
            });
        }
        let Some(id) = self.message_id.take() else {
            return Err(EventError::MissingMessageId { index });
        };
        let attributes = SystemAttributes::from_pairs(std::mem::take(&mut self.attributes));
        let message_attributes =
            message_attributes_of(std::mem::take(&mut self.message_attributes).into_iter());
        Ok(finish(
            id,
            self.body.take(),
            self.receipt_handle.take(),
            self.event_source_arn.take(),
            (attributes, message_attributes),
            lease,
        ))
    }
}

impl Record for RecordParts {
    fn convert(
        &mut self,
        index: usize,
        lease: impl FnOnce(bool, Option<&str>) -> Visibility,
    ) -> Result<Converted, EventError> {
        match std::mem::take(&mut self.event_source) {
            EventSource::Sqs => {}
            EventSource::Other(found) => {
                return Err(EventError::NotSqs {
                    index,
                    found: Some(found),
                });
            }
            EventSource::Missing => return Err(EventError::NotSqs { index, found: None }),
        }
        let Some(id) = self.message_id.take() else {
            return Err(EventError::MissingMessageId { index });
        };
        Ok(finish(
            id,
            self.body.take(),
            self.receipt_handle.take(),
            self.event_source_arn.take(),
            (
                std::mem::take(&mut self.attributes),
                std::mem::take(&mut self.message_attributes),
            ),
            lease,
        ))
    }
}

/// A checked record's message, or the failure of a record without a body.
#[inline]
fn finish(
    id: String,
    body: Option<String>,
    receipt_handle: Option<String>,
    event_source_arn: Option<String>,
    (attributes, message_attributes): (SystemAttributes, MessageAttributes),
    lease: impl FnOnce(bool, Option<&str>) -> Visibility,
) -> Converted {
    let Some(body) = body else {
        // Only a FIFO group is held back behind the missing body: on a
        // standard (fair) queue the group id is a tenant label.
        let fifo = attributes.sequence_number.is_some()
            || event_source_arn
                .as_deref()
                .is_some_and(|a| a.ends_with(".fifo"));
        return Converted::NoBody {
            id,
            group: attributes.message_group_id.filter(|_| fifo),
        };
    };
    let lease = lease(receipt_handle.is_some(), event_source_arn.as_deref());
    Converted::Message(
        MessageParts {
            id,
            receipt_handle: receipt_handle.unwrap_or_default(),
            body,
            attributes,
            message_attributes,
            source: event_source_arn.map(Into::into),
            visibility: lease,
        }
        .into_message(),
    )
}

/// Converts a record to a [`Message`] outside an invocation (tests, tools):
/// the same conversion the service uses, with the given lease.
///
/// Fails like an invocation would for a record that is not from SQS or has
/// no `messageId`; a record without a body becomes a message with an empty
/// body (the service reports such records failed instead of running them).
pub fn message_from_record(
    mut record: SqsMessage,
    lease: Visibility,
) -> Result<Message, EventError> {
    record.body.get_or_insert_with(String::new);
    match record.convert(0, |_, _| lease)? {
        Converted::Message(m) => Ok(m),
        // Not reached: the body was set above.
        Converted::NoBody { id, .. } => Ok(Message::builder(id, "").build()),
    }
}

/// The message attributes with their data types. Binary values arrive
/// decoded (the event carries them as Base64, which deserialization decodes).
/// `stringListValues` / `binaryListValues` are reserved by SQS and never sent;
/// an attribute with only those (or no value at all) is skipped.
fn message_attributes_of(
    attrs: impl ExactSizeIterator<Item = (String, SqsMessageAttribute)>,
) -> MessageAttributes {
    let mut out = MessageAttributes::with_capacity(attrs.len());
    for (name, a) in attrs {
        let SqsMessageAttribute {
            string_value,
            binary_value,
            data_type,
            ..
        } = a;
        match attribute(data_type, string_value, binary_value.map(|b| b.0)) {
            Some(attr) => {
                out.insert(name, attr);
            }
            None => tracing::debug!(attribute = %name, "message attribute without a value skipped"),
        }
    }
    out
}

/// One message attribute; the data type defaults from the value present.
pub(crate) fn attribute(
    data_type: Option<String>,
    string_value: Option<String>,
    binary_value: Option<Vec<u8>>,
) -> Option<MessageAttribute> {
    let data_type = data_type.unwrap_or_else(|| {
        if binary_value.is_some() && string_value.is_none() {
            "Binary".to_owned()
        } else {
            "String".to_owned()
        }
    });
    MessageAttribute::from_parts(data_type, string_value, binary_value)
}

/// The queue URL for an SQS queue ARN, `arn:PARTITION:sqs:REGION:ACCOUNT:NAME`
/// → `https://sqs.REGION.amazonaws.com/ACCOUNT/NAME` (`amazonaws.com.cn` in
/// the China partition). `None` when `arn` is not an SQS queue ARN.
///
/// Only the account and name of the URL matter to SQS: the SDK sends each
/// request to its own endpoint (`AWS_ENDPOINT_URL` and friends), so the URL
/// also works against a local SQS server.
pub fn queue_url_from_arn(arn: &str) -> Option<String> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("sqs"), Some(region), Some(account), Some(name)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    if region.is_empty() || account.is_empty() || name.is_empty() || name.contains(':') {
        return None;
    }
    let domain = if partition == "aws-cn" {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    Some(format!("https://sqs.{region}.{domain}/{account}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::encodings::Base64Data;
    use sqs_worker_core::AttributeValue;

    fn record(id: Option<&str>, source: Option<&str>) -> SqsMessage {
        let mut r = SqsMessage::default();
        r.message_id = id.map(Into::into);
        r.event_source = source.map(Into::into);
        r.body = Some("hello".into());
        r.receipt_handle = Some("rh".into());
        r.event_source_arn = Some("arn:aws:sqs:eu-west-1:111122223333:q.fifo".into());
        r
    }

    #[test]
    fn converts_every_field_by_moving_it() {
        let mut r = record(Some("m1"), Some("aws:sqs"));
        for (k, v) in [
            ("ApproximateReceiveCount", "4"),
            ("SentTimestamp", "1545082649183"),
            ("SenderId", "AIDAIENQZJOLO23YVJ4VO"),
            ("ApproximateFirstReceiveTimestamp", "1545082649185"),
            ("MessageGroupId", "g1"),
            ("MessageDeduplicationId", "d1"),
            ("SequenceNumber", "1865"),
            ("AWSTraceHeader", "Root=1-abc"),
            (
                "DeadLetterQueueSourceArn",
                "arn:aws:sqs:eu-west-1:111122223333:src",
            ),
        ] {
            r.attributes.insert(k.into(), v.into());
        }
        let mut s = SqsMessageAttribute::default();
        s.string_value = Some("v".into());
        s.data_type = Some("String.custom".into());
        let mut n = SqsMessageAttribute::default();
        n.string_value = Some("12".into());
        n.data_type = Some("Number.int".into());
        let mut b = SqsMessageAttribute::default();
        let mut data = Base64Data::default();
        *data = vec![0, 159, 146, 150];
        b.binary_value = Some(data);
        b.data_type = Some("Binary".into());
        let empty = SqsMessageAttribute::default();
        r.message_attributes.insert("s".into(), s);
        r.message_attributes.insert("n".into(), n);
        r.message_attributes.insert("b".into(), b);
        r.message_attributes.insert("empty".into(), empty);

        let body_ptr = r.body.as_ref().map(|b| b.as_ptr());
        let Converted::Message(m) = r.convert(0, |_, _| Visibility::unbacked()).unwrap() else {
            panic!("expected a message")
        };
        assert_eq!(
            Some(m.body().as_ptr()),
            body_ptr,
            "the body is moved, not copied"
        );
        assert_eq!(m.id(), "m1");
        assert_eq!(m.receipt_handle(), "rh");
        assert_eq!(m.receive_count(), 4);
        let a = m.attributes();
        assert_eq!(a.sent_timestamp, Some(1545082649183));
        assert_eq!(a.approximate_first_receive_timestamp, Some(1545082649185));
        assert_eq!(a.sender_id.as_deref(), Some("AIDAIENQZJOLO23YVJ4VO"));
        assert_eq!(m.group_id(), Some("g1"));
        assert_eq!(m.deduplication_id(), Some("d1"));
        assert_eq!(m.sequence_number(), Some("1865"));
        assert_eq!(m.trace_header(), Some("Root=1-abc"));
        assert!(a.dead_letter_queue_source_arn.is_some());
        assert_eq!(
            m.source(),
            Some("arn:aws:sqs:eu-west-1:111122223333:q.fifo")
        );
        assert_eq!(
            m.message_attributes().len(),
            3,
            "the attribute without a value is skipped"
        );
        let s = m.message_attribute("s").unwrap();
        assert_eq!(
            (s.data_type.as_str(), s.as_str()),
            ("String.custom", Some("v"))
        );
        assert_eq!(
            m.message_attribute("n").unwrap().value,
            AttributeValue::Number("12".into())
        );
        assert_eq!(
            m.message_attribute("b").unwrap().value,
            AttributeValue::Binary(vec![0, 159, 146, 150])
        );
    }

    /// Both record types (the event's and the lean payload's) convert alike.
    fn both(index: usize, r: SqsMessage) -> [Result<Converted, EventError>; 2] {
        let lease = |_: bool, _: Option<&str>| Visibility::unbacked();
        let mut parts = RecordParts::from(r.clone());
        [r.clone().convert(index, lease), parts.convert(index, lease)]
    }

    #[test]
    fn rejects_what_cannot_be_reported() {
        for e in both(3, record(Some("m"), Some("aws:sns"))) {
            assert!(matches!(
                e,
                Err(EventError::NotSqs { index: 3, found: Some(ref f) }) if f == "aws:sns"
            ));
        }
        for e in both(0, record(Some("m"), None)) {
            assert!(matches!(e, Err(EventError::NotSqs { found: None, .. })));
        }
        for e in both(1, record(None, Some("aws:sqs"))) {
            let Err(e) = e else {
                panic!("expected an error")
            };
            assert!(e.to_string().contains("no messageId"), "{e}");
        }
        let mut no_body = record(Some("m"), Some("aws:sqs"));
        no_body.body = None;
        no_body
            .attributes
            .insert("MessageGroupId".into(), "g".into());
        for c in both(0, no_body) {
            assert!(matches!(
                c,
                Ok(Converted::NoBody { ref id, group: Some(ref g) }) if id == "m" && g == "g"
            ));
        }
    }

    #[test]
    fn queue_urls_from_arns() {
        assert_eq!(
            queue_url_from_arn("arn:aws:sqs:us-east-2:123456789012:my-queue").as_deref(),
            Some("https://sqs.us-east-2.amazonaws.com/123456789012/my-queue")
        );
        assert_eq!(
            queue_url_from_arn("arn:aws-cn:sqs:cn-north-1:123456789012:q.fifo").as_deref(),
            Some("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q.fifo")
        );
        assert_eq!(queue_url_from_arn("arn:aws:sns:us-east-1:1:topic"), None);
        assert_eq!(queue_url_from_arn("arn:aws:sqs:us-east-1:1"), None);
        assert_eq!(queue_url_from_arn("nonsense"), None);
    }
}
