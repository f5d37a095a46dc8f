//! Receive, straight from the invocation's JSON: the lean event type
//! [`run`](crate::run) deserializes.
//!
//! Deserializing into `aws_lambda_events`' `SqsEvent` allocates every field of
//! every record (`md5OfBody`, `awsRegion`, `eventSource`, each attribute name
//! and each numeric attribute as text) and hashes the attributes into maps,
//! only for the adapter to drop most of it. [`SqsPayload`] keeps what a
//! [`Message`](sqs_worker_core::Message) holds: system attributes go straight
//! into their typed fields (names compared in place, numbers parsed in place),
//! and fields the adapter does not use are skipped without allocating.

use std::borrow::Cow;
use std::fmt;

use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::event::sqs::SqsEvent;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use sqs_worker_core::{MessageAttributes, SystemAttributes};

use crate::record::{EventError, EventSource, RecordParts, SQS_EVENT_SOURCE, attribute};

/// An SQS event as [`run`](crate::run) deserializes it: the records, with
/// what the adapter keeps of each. Anything not shaped like an SQS event
/// fails to deserialize with a message that says so (the Lambda runtime then
/// reports a function error, and Lambda returns the batch).
///
/// Equivalent to deserializing an [`SqsEvent`] and handing it to
/// [`LambdaService::handle`](crate::LambdaService::handle), with fewer
/// allocations; [`From<SqsEvent>`] converts.
#[derive(Debug, Default)]
pub struct SqsPayload {
    pub(crate) records: Vec<RecordParts>,
}

impl SqsPayload {
    /// Parses an invocation's payload, the event's JSON text.
    ///
    /// What [`run`](crate::run) does with the payload `lambda_runtime` hands
    /// it as raw JSON: the runtime deserializes every payload through
    /// `serde_path_to_error`, which tracks the path of every value and about
    /// doubles the cost of a 10-record event (BENCHMARKS.md, "Seventh
    /// session"); this parses without tracking, and only a payload that fails
    /// is parsed again with the path, for an error that says where (as the
    /// runtime's would).
    pub fn from_json(json: &str) -> Result<Self, EventError> {
        serde_json::from_str(json).map_err(|_| {
            let mut de = serde_json::Deserializer::from_str(json);
            match serde_path_to_error::deserialize::<_, Self>(&mut de) {
                Err(e) => EventError::Malformed {
                    path: e.path().to_string(),
                    error: e.into_inner().to_string(),
                },
                // Not reached: the same text, the same type.
                Ok(_) => EventError::Malformed {
                    path: ".".to_owned(),
                    error: "the payload failed to parse once, then parsed".to_owned(),
                },
            }
        })
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl From<SqsEvent> for SqsPayload {
    fn from(event: SqsEvent) -> Self {
        Self {
            records: event.records.into_iter().map(RecordParts::from).collect(),
        }
    }
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "Records")]
    records: Vec<Record>,
}

impl<'de> Deserialize<'de> for SqsPayload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let event = Event::deserialize(d).map_err(|e| {
            de::Error::custom(format_args!(
                "this function expects an Amazon SQS event ({{\"Records\": [...]}} from an SQS \
                 event source mapping): {e}"
            ))
        })?;
        Ok(Self {
            records: event.records.into_iter().map(|r| r.0).collect(),
        })
    }
}

/// One record, deserialized into [`RecordParts`].
struct Record(RecordParts);

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RecordVisitor)
    }
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = Record;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an SQS record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record, A::Error> {
        let mut r = RecordParts::default();
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            match &*key {
                "messageId" => r.message_id = map.next_value()?,
                "receiptHandle" => r.receipt_handle = map.next_value()?,
                "body" => r.body = map.next_value()?,
                "eventSourceARN" => r.event_source_arn = map.next_value()?,
                "eventSource" => {
                    r.event_source = match map.next_value::<Option<Text<'de>>>()? {
                        Some(Text(s)) if s == SQS_EVENT_SOURCE => EventSource::Sqs,
                        Some(Text(s)) => EventSource::Other(s.into_owned()),
                        None => EventSource::Missing,
                    }
                }
                "attributes" => {
                    if let Some(SystemAttrs(a)) = map.next_value()? {
                        r.attributes = a;
                    }
                }
                "messageAttributes" => {
                    if let Some(MessageAttrs(a)) = map.next_value()? {
                        r.message_attributes = a;
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Record(r))
    }
}

/// A string, borrowed from the input when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The `attributes` object, straight into [`SystemAttributes`].
struct SystemAttrs(SystemAttributes);

impl<'de> Deserialize<'de> for SystemAttrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SystemAttrs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the SQS system attributes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SystemAttrs, A::Error> {
                let mut a = SystemAttributes::default();
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    match &*key {
                        // Numbers: parsed in place, as `SystemAttributes::set`
                        // does (a value that does not parse leaves it unset).
                        "ApproximateReceiveCount" => {
                            a.approximate_receive_count =
                                map.next_value::<Text<'de>>()?.0.parse().ok()
                        }
                        "SentTimestamp" => {
                            a.sent_timestamp = map.next_value::<Text<'de>>()?.0.parse().ok()
                        }
                        "ApproximateFirstReceiveTimestamp" => {
                            a.approximate_first_receive_timestamp =
                                map.next_value::<Text<'de>>()?.0.parse().ok()
                        }
                        // Kept text, and anything unknown: through `set`.
                        name => {
                            let value: String = map.next_value()?;
                            a.set(name, value);
                        }
                    }
                }
                Ok(SystemAttrs(a))
            }
        }
        d.deserialize_map(V)
    }
}

/// The `messageAttributes` object, straight into [`MessageAttribute`]s.
struct MessageAttrs(MessageAttributes);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttrValue {
    #[serde(default)]
    string_value: Option<String>,
    #[serde(default)]
    binary_value: Option<Base64Data>,
    #[serde(default)]
    data_type: Option<String>,
}

impl<'de> Deserialize<'de> for MessageAttrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MessageAttrs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the SQS message attributes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MessageAttrs, A::Error> {
                let mut out = MessageAttributes::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((name, v)) = map.next_entry::<String, AttrValue>()? {
                    let binary = v.binary_value.map(|b| b.0);
                    match attribute(v.data_type, v.string_value, binary) {
                        Some(a) => {
                            out.insert(name, a);
                        }
                        None => tracing::debug!(
                            attribute = %name,
                            "message attribute without a value skipped"
                        ),
                    }
                }
                Ok(MessageAttrs(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Converted, Record};
    use crate::testing::{event, fifo_record, record};
    use sqs_worker_core::{Message, Visibility};

    fn messages(p: SqsPayload) -> Vec<Message> {
        p.records
            .into_iter()
            .enumerate()
            .map(
                |(i, mut r)| match r.convert(i, |_, _| Visibility::unbacked()).unwrap() {
                    Converted::Message(m) => m,
                    Converted::NoBody { .. } => panic!("no body"),
                },
            )
            .collect()
    }

    fn same(a: &Message, b: &Message) {
        assert_eq!(a.id(), b.id());
        assert_eq!(a.receipt_handle(), b.receipt_handle());
        assert_eq!(a.body(), b.body());
        assert_eq!(a.attributes(), b.attributes());
        assert_eq!(a.message_attributes(), b.message_attributes());
        assert_eq!(a.source(), b.source());
    }

    #[test]
    fn the_lean_payload_converts_exactly_like_sqs_event() {
        let ev = event([
            record("m1", "body with \"escapes\" and \u{e9}")
                .string_attribute("s", "v")
                .number_attribute("n", 42)
                .binary_attribute("b", vec![0u8, 1, 255])
                .attribute("custom", "String.custom", "x")
                .trace_header("Root=1-abc")
                .receive_count(7),
            fifo_record("m2", "g\\1", "{}").system_attribute("DeadLetterQueueSourceArn", "arn"),
        ]);
        let json = serde_json::to_string(&ev).unwrap();
        let lean: SqsPayload = serde_json::from_str(&json).unwrap();
        let via_event: SqsPayload = serde_json::from_str::<SqsEvent>(&json).unwrap().into();
        let (a, b) = (messages(lean), messages(via_event));
        assert_eq!(a.len(), 2);
        for (a, b) in a.iter().zip(&b) {
            same(a, b);
        }
        assert_eq!(a[0].receive_count(), 7);
        assert_eq!(a[1].group_id(), Some("g\\1"));
    }

    #[test]
    fn nulls_missing_fields_and_foreign_events() {
        let lean: SqsPayload = serde_json::from_str(
            r#"{"Records": [{"messageId": "m", "eventSource": "aws:sqs", "attributes": null,
                "messageAttributes": null, "body": null, "extra": {"x": [1, 2]}}]}"#,
        )
        .unwrap();
        let r = &lean.records[0];
        assert_eq!(r.event_source, EventSource::Sqs);
        assert!(r.body.is_none() && r.message_attributes.is_empty());

        let s3: SqsPayload =
            serde_json::from_str(r#"{"Records": [{"eventSource": "aws:s3"}]}"#).unwrap();
        assert_eq!(
            s3.records[0].event_source,
            EventSource::Other("aws:s3".into())
        );

        let err = serde_json::from_str::<SqsPayload>(r#"{"detail-type": "x"}"#).unwrap_err();
        assert!(
            err.to_string().contains("expects an Amazon SQS event"),
            "{err}"
        );
        let err = serde_json::from_str::<SqsPayload>(r#"{"Records": [{"body": 5}]}"#).unwrap_err();
        assert!(
            err.to_string().contains("expects an Amazon SQS event"),
            "{err}"
        );
    }

    /// What `run` parses the runtime's raw payload with: the same as the
    /// typed parse, and a payload that fails names where, with its own error
    /// type.
    #[test]
    fn a_payload_from_json_parses_alike_and_a_bad_one_says_where() {
        let json = r#"{"Records": [{"messageId": "m", "eventSource": "aws:sqs", "body": "b",
            "attributes": {"ApproximateReceiveCount": "2"}}]}"#;
        let from_json = SqsPayload::from_json(json).unwrap();
        let typed: SqsPayload = serde_json::from_str(json).unwrap();
        let (a, b) = (&messages(from_json)[0], &messages(typed)[0]);
        same(a, b);
        assert_eq!(a.receive_count(), 2);

        let err = SqsPayload::from_json(
            r#"{"Records": [{"messageId": "a", "eventSource": "aws:sqs"}, {"messageId": 5}]}"#,
        )
        .unwrap_err();
        match &err {
            EventError::Malformed { path, error } => {
                assert_eq!(path, "Records[1].messageId");
                assert!(error.contains("invalid type"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(err.error_type(), "SqsWorker.MalformedEvent");
        assert!(err.to_string().contains("Records[1].messageId"), "{err}");

        let err = SqsPayload::from_json(r#"{"detail-type": "Scheduled Event"}"#).unwrap_err();
        assert!(
            matches!(&err, EventError::Malformed { path, .. } if path == "."),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("expects an Amazon SQS event"),
            "{err}"
        );
    }
}
