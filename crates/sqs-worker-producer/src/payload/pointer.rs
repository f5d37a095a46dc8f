//! The Extended Client's pointer formats.

use serde::{Deserialize, Serialize};
use sqs_worker_core::{Message, MessageAttributes};

/// The reserved message attribute that marks a pointer: the payload's size
/// in bytes (Number). Written by the Java client 2.x and the Python client.
pub const SIZE_ATTRIBUTE: &str = "ExtendedPayloadSize";
/// The same attribute as older Extended Clients (Java 1.x) named it.
pub const LEGACY_SIZE_ATTRIBUTE: &str = "SQSLargePayloadSize";
/// The class name the Java client's Jackson serializer writes first.
pub const POINTER_CLASS: &str = "software.amazon.payloadoffloading.PayloadS3Pointer";

/// Where a payload lives in S3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Pointer {
    /// The bucket.
    #[serde(rename = "s3BucketName")]
    pub bucket: String,
    /// The object key.
    #[serde(rename = "s3Key")]
    pub key: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AnyPointer {
    /// `["software.amazon.payloadoffloading.PayloadS3Pointer", {..}]`
    Typed(String, S3Pointer),
    /// `{"s3BucketName": .., "s3Key": ..}` (older clients)
    Plain(S3Pointer),
}

impl S3Pointer {
    /// Parses a pointer body in either format (`None` if it is not one).
    pub fn parse(body: &str) -> Option<Self> {
        match serde_json::from_str(body).ok()? {
            AnyPointer::Typed(class, p) if class == POINTER_CLASS => Some(p),
            AnyPointer::Typed(..) => None,
            AnyPointer::Plain(p) => Some(p),
        }
    }

    /// The body the Java client writes (and the Python client reads).
    pub fn to_body(&self) -> String {
        // Serializing a tuple of a string and a plain struct cannot fail.
        serde_json::to_string(&(POINTER_CLASS, self)).unwrap_or_default()
    }
}

/// The payload size the reserved attribute announces, if present (Number or
/// String, as clients differ).
fn announced_size(attrs: &MessageAttributes) -> Option<Option<u64>> {
    let a = attrs
        .get(SIZE_ATTRIBUTE)
        .or_else(|| attrs.get(LEGACY_SIZE_ATTRIBUTE))?;
    Some(a.as_str().and_then(|v| v.trim().parse().ok()))
}

/// Where a message's payload is, if the message is an Extended Client
/// pointer: a body in either format with the reserved attribute, directly
/// (SQS, or SNS raw delivery) or inside an SNS notification whose
/// `MessageAttributes` carry it (SNS Extended Client).
///
/// Returns the pointer, the announced size, and whether it came inside an
/// SNS envelope. `Err` names why a message carrying the reserved attribute
/// is not a readable pointer.
pub fn find_pointer(msg: &Message) -> Result<Option<(S3Pointer, Option<u64>, bool)>, String> {
    if let Some(size) = announced_size(msg.message_attributes()) {
        return match S3Pointer::parse(msg.body()) {
            Some(p) => Ok(Some((p, size, false))),
            None => Err(format!(
                "message {} has the {SIZE_ATTRIBUTE} attribute but its body is not an S3 pointer",
                msg.id()
            )),
        };
    }
    Ok(sns_pointer(msg.body()).map(|(p, size)| (p, size, true)))
}

#[derive(Deserialize)]
struct SnsEnvelope {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "MessageAttributes", default)]
    attributes: std::collections::HashMap<String, SnsAttribute>,
}

#[derive(Deserialize)]
struct SnsAttribute {
    #[serde(rename = "Value")]
    value: String,
}

fn sns_pointer(body: &str) -> Option<(S3Pointer, Option<u64>)> {
    // Cheap test first: most bodies are not SNS notifications.
    if !body.contains("\"Notification\"") || !body.contains(SIZE_ATTRIBUTE) {
        return None;
    }
    let env: SnsEnvelope = serde_json::from_str(body).ok()?;
    if env.kind != "Notification" {
        return None;
    }
    let size = env
        .attributes
        .get(SIZE_ATTRIBUTE)
        .or_else(|| env.attributes.get(LEGACY_SIZE_ATTRIBUTE))?;
    let pointer = S3Pointer::parse(&env.message)?;
    Some((pointer, size.value.trim().parse().ok()))
}

/// Replaces the `Message` of an SNS notification with the payload.
pub(crate) fn replace_sns_message(body: &str, payload: String) -> Option<String> {
    let mut env: serde_json::Map<String, serde_json::Value> = serde_json::from_str(body).ok()?;
    env.insert("Message".into(), serde_json::Value::String(payload));
    serde_json::to_string(&env).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqs_worker_core::MessageAttribute;

    #[test]
    fn java_and_python_pointers() {
        // Java (Jackson, compact) and Python (json.dumps, with spaces).
        let java = r#"["software.amazon.payloadoffloading.PayloadS3Pointer",{"s3BucketName":"b","s3Key":"k-1"}]"#;
        let python = r#"["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": "b", "s3Key": "k-1"}]"#;
        let old = r#"{"s3BucketName":"b","s3Key":"k-1"}"#;
        let want = S3Pointer {
            bucket: "b".into(),
            key: "k-1".into(),
        };
        for body in [java, python, old] {
            assert_eq!(S3Pointer::parse(body).as_ref(), Some(&want), "{body}");
        }
        assert_eq!(want.to_body(), java);
        assert_eq!(
            S3Pointer::parse(r#"["other.Class",{"s3BucketName":"b","s3Key":"k"}]"#),
            None
        );
        assert_eq!(S3Pointer::parse(r#"{"order_id":1}"#), None);
    }

    #[test]
    fn pointer_needs_the_reserved_attribute() {
        let body = r#"{"s3BucketName":"b","s3Key":"k"}"#;
        let plain = Message::builder("m", body).build();
        assert_eq!(find_pointer(&plain), Ok(None));
        for (name, attr) in [
            (SIZE_ATTRIBUTE, MessageAttribute::number(12)),
            (LEGACY_SIZE_ATTRIBUTE, MessageAttribute::string("12")),
        ] {
            let m = Message::builder("m", body)
                .message_attribute(name, attr)
                .build();
            let (p, size, sns) = find_pointer(&m).ok().flatten().expect("a pointer");
            assert_eq!((p.key.as_str(), size, sns), ("k", Some(12), false));
        }
        let bad = Message::builder("m-7", "hello")
            .message_attribute(SIZE_ATTRIBUTE, MessageAttribute::number(5))
            .build();
        let err = find_pointer(&bad).expect_err("not a pointer");
        assert!(err.contains("m-7") && !err.contains("hello"), "{err}");
    }

    #[test]
    fn pointer_inside_an_sns_notification() {
        let body = r#"{"Type":"Notification","MessageId":"x","TopicArn":"arn:aws:sns:us-east-1:1:t","Message":"[\"software.amazon.payloadoffloading.PayloadS3Pointer\",{\"s3BucketName\":\"b\",\"s3Key\":\"k\"}]","MessageAttributes":{"ExtendedPayloadSize":{"Type":"Number","Value":"3"}}}"#;
        let m = Message::builder("m", body).build();
        let (p, size, sns) = find_pointer(&m).ok().flatten().expect("a pointer");
        assert_eq!((p.bucket.as_str(), size, sns), ("b", Some(3), true));
        let replaced = replace_sns_message(body, "abc".into()).expect("json");
        let v: serde_json::Value = serde_json::from_str(&replaced).expect("json");
        assert_eq!(v["Message"], "abc");
        assert_eq!(v["TopicArn"], "arn:aws:sns:us-east-1:1:t");
    }
}
