//! `Sns<T>`: an SNS notification delivered to SQS, wrapped or raw.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::payload::TextPayload;
use super::{CowStr, ack_reason};
use crate::error::Error;
use crate::extract::{Extracted, FromMessage};
use crate::json::{envelope_error, short_type_name};
use crate::message::{AttributeValue, Message, MessageAttribute, MessageAttributes};

/// An SNS notification delivered to SQS, as a handler argument: `T` is parsed
/// from the notification's `Message`.
///
/// Both subscription modes work. Wrapped delivery (the default) puts SNS's
/// JSON document in the body (`{"Type":"Notification","MessageId":..,
/// "TopicArn":..,"Message":"<text>",..}`): its topic, subject, SNS message
/// id, timestamp and attributes are here. Raw delivery
/// (`RawMessageDelivery=true`) puts the message itself in the body and the
/// SNS attributes on the SQS message: then only `message` and `attributes`
/// are filled.
///
/// `Sns<String>` takes the text as it is (non-JSON payloads); every other
/// `T` parses it as JSON. `Sns<S3Event>` unwraps S3 → SNS → SQS
/// notifications (and acknowledges S3's test event like
/// [`S3Event`](crate::S3Event)).
///
/// ```
/// use sqs_worker_core::{Error, Sns};
/// #[derive(serde::Deserialize)]
/// struct Order { order_id: u64 }
/// async fn handle(sns: Sns<Order>) -> Result<(), Error> {
///     let _ = (sns.message.order_id, sns.topic_arn.as_deref(), sns.attribute("tenant"));
///     Ok(())
/// }
/// let _ = sqs_worker_core::handler_fn(handle);
/// ```
///
/// A body that is neither a notification carrying a valid `T` nor a raw `T`
/// is a permanent failure naming the message id and `Sns<T>`, never the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Sns<T> {
    /// The payload, parsed from the notification's `Message`.
    pub message: T,
    /// How SNS delivered it.
    pub delivery: SnsDelivery,
    /// The topic's ARN (wrapped delivery).
    pub topic_arn: Option<String>,
    /// SNS's message id (wrapped delivery); the SQS message id is
    /// [`Message::id`].
    pub message_id: Option<String>,
    /// The `Subject` given to `Publish`, if any (wrapped delivery).
    pub subject: Option<String>,
    /// When SNS published it, ISO 8601 as SNS writes it (wrapped delivery).
    pub timestamp: Option<String>,
    /// The message attributes given to `Publish`: from the notification
    /// (wrapped; `Binary` values base64-decoded) or the SQS message (raw).
    pub attributes: MessageAttributes,
}

/// How SNS delivered a notification to SQS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnsDelivery {
    /// SNS's JSON document around the message (the default).
    Wrapped,
    /// The message alone (`RawMessageDelivery=true`).
    Raw,
}

impl<T> Sns<T> {
    /// A text attribute (`String`, `Number`) by name.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).and_then(MessageAttribute::as_str)
    }
}

/// The wrapped-delivery document; unknown fields (signature, URLs) ignored.
#[derive(Deserialize)]
pub(crate) struct Notification<'a> {
    #[serde(rename = "Type", borrow)]
    pub(crate) kind: Option<CowStr<'a>>,
    #[serde(rename = "MessageId")]
    message_id: Option<String>,
    #[serde(rename = "TopicArn")]
    topic_arn: Option<String>,
    #[serde(rename = "Subject")]
    subject: Option<String>,
    #[serde(rename = "Message", borrow)]
    pub(crate) message: Option<CowStr<'a>>,
    #[serde(rename = "Timestamp")]
    timestamp: Option<String>,
    #[serde(rename = "MessageAttributes")]
    attributes: Option<BTreeMap<String, SnsAttribute>>,
}

impl Notification<'_> {
    /// SNS's notification, not some other JSON object.
    pub(crate) fn is_notification(&self) -> bool {
        matches!(&self.kind, Some(k) if k.0 == "Notification")
            && self.message.is_some()
            && self.topic_arn.is_some()
    }
}

#[derive(Deserialize)]
struct SnsAttribute {
    #[serde(rename = "Type")]
    data_type: String,
    #[serde(rename = "Value")]
    value: String,
}

/// A wrapped body's attributes: `{"name": {"Type":..,"Value":..}}` as a list.
fn attributes_of(list: BTreeMap<String, SnsAttribute>) -> MessageAttributes {
    let mut out = MessageAttributes::with_capacity(list.len());
    for (name, a) in list {
        let value = if a.data_type.starts_with("Binary") {
            match base64::engine::general_purpose::STANDARD.decode(&a.value) {
                Ok(bytes) => AttributeValue::Binary(bytes),
                Err(_) => AttributeValue::String(a.value),
            }
        } else if a.data_type.starts_with("Number") {
            AttributeValue::Number(a.value)
        } else {
            AttributeValue::String(a.value)
        };
        out.insert(
            name,
            MessageAttribute {
                data_type: a.data_type,
                value,
            },
        );
    }
    out
}

/// The body as a wrapped notification, if it is one.
pub(crate) fn notification(body: &str) -> Option<Notification<'_>> {
    if !body.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str::<Notification<'_>>(body)
        .ok()
        .filter(Notification::is_notification)
}

impl<T: DeserializeOwned + Send + 'static> FromMessage for Sns<T> {
    fn from_message(msg: &Message) -> Result<Extracted<Self>, Error> {
        let parse = |text: &str| {
            T::deserialize(TextPayload(text)).map_err(|e| {
                envelope_error(msg.id(), format!("Sns<{}>", short_type_name::<T>()), &e)
            })
        };
        let sns = match notification(msg.body()) {
            Some(n) => {
                let text = n.message.as_ref().map_or("", |m| &m.0);
                Sns {
                    message: parse(text)?,
                    delivery: SnsDelivery::Wrapped,
                    topic_arn: n.topic_arn,
                    message_id: n.message_id,
                    subject: n.subject,
                    timestamp: n.timestamp,
                    attributes: n.attributes.map(attributes_of).unwrap_or_default(),
                }
            }
            None => Sns {
                message: parse(msg.body())?,
                delivery: SnsDelivery::Raw,
                topic_arn: None,
                message_id: None,
                subject: None,
                timestamp: None,
                attributes: msg.message_attributes().clone(),
            },
        };
        Ok(match ack_reason(&sns.message) {
            Some(reason) => Extracted::Acknowledge(reason),
            None => Extracted::Value(sns),
        })
    }
}
