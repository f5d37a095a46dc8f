//! `EventBridge<T>`: an EventBridge event delivered to SQS by a rule target.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::extract::{Extracted, FromMessage};
use crate::json::{envelope_error, short_type_name};
use crate::message::Message;

/// An EventBridge event delivered to SQS, as a handler argument: `T` is
/// parsed from `detail` (a JSON object, or any JSON value a custom event
/// carries), in the same pass as the envelope.
///
/// ```
/// use sqs_worker_core::{Error, EventBridge};
/// #[derive(serde::Deserialize)]
/// struct OrderCancelled { order_id: u64 }
/// async fn handle(ev: EventBridge<OrderCancelled>) -> Result<(), Error> {
///     let _ = (ev.detail.order_id, &ev.source, &ev.detail_type);
///     Ok(())
/// }
/// let _ = sqs_worker_core::handler_fn(handle);
/// ```
///
/// A body that is not an event (no `id`, `detail-type`, `source` or
/// `detail`) or whose `detail` is not a valid `T` is a permanent failure
/// naming the message id and `EventBridge<T>`, never the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBridge<T> {
    /// The envelope version (`"0"`).
    #[serde(default)]
    pub version: String,
    /// The event id.
    pub id: String,
    /// The `detail-type`, e.g. `"Object Created"` or your own event name.
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    /// The `source`, e.g. `"aws.s3"` or `"com.example.orders"`.
    pub source: String,
    /// The account the event came from.
    #[serde(default)]
    pub account: String,
    /// When it happened, ISO 8601 as EventBridge writes it.
    #[serde(default)]
    pub time: String,
    /// The region it came from.
    #[serde(default)]
    pub region: String,
    /// The ARNs the event is about.
    #[serde(default)]
    pub resources: Vec<String>,
    /// The payload.
    pub detail: T,
}

impl<T: DeserializeOwned + Send + 'static> FromMessage for EventBridge<T> {
    fn from_message(msg: &Message) -> Result<Extracted<Self>, Error> {
        serde_json::from_str::<Self>(msg.body())
            .map(Extracted::Value)
            .map_err(|e| {
                let name = format!("EventBridge<{}>", short_type_name::<T>());
                envelope_error(msg.id(), name, &e)
            })
    }
}
