//! Envelopes as handler arguments: what SNS, EventBridge and S3 wrap around a
//! payload on its way to SQS, unwrapped before the handler runs.
//!
//! Every extractor here fails like [`Json`](crate::Json): a body that does not
//! match is a permanent failure naming the message id and the envelope
//! (`Sns<Order>`), with serde's complaint redacted of input values, never
//! the body.

mod eventbridge;
mod payload;
mod s3;
mod sns;

use std::any::Any;
use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, Visitor};

pub use self::eventbridge::EventBridge;
pub use self::s3::{S3Event, S3Record};
pub use self::sns::{Sns, SnsDelivery};

use crate::extract::AckReason;

/// Whether a payload extracted inside another envelope asks to be
/// acknowledged without a handler (`Sns<S3Event>` carrying `s3:TestEvent`).
/// A type-id comparison, resolved at compile time for every other `T`.
pub(crate) fn ack_reason<T: 'static>(payload: &T) -> Option<AckReason> {
    let any: &dyn Any = payload;
    any.downcast_ref::<S3Event>()
        .filter(|e| e.is_test_event())
        .map(|_| AckReason::S3TestEvent)
}

/// A JSON string, borrowed from the body when it has no escapes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CowStr<'a>(pub(crate) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = CowStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}
