//! Typed JSON payloads.

use std::borrow::Cow;
use std::fmt;

use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::extract::{Extracted, FromMessage};
use crate::message::Message;

/// A message body deserialized from JSON, as a handler argument.
///
/// ```
/// use sqs_worker_core::{Error, Json};
/// #[derive(serde::Deserialize)]
/// struct Order { order_id: u64 }
/// async fn handle(Json(order): Json<Order>) -> Result<(), Error> {
///     let _ = order.order_id;
///     Ok(())
/// }
/// ```
///
/// A body that does not deserialize is a permanent failure: the handler is not
/// called and the error names the message id and serde's complaint (with any
/// quoted values from the body redacted), never the body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + Send + 'static> FromMessage for Json<T> {
    #[inline]
    fn from_message(msg: &Message) -> Result<Extracted<Self>, Error> {
        msg.json().map(|t| Extracted::Value(Json(t)))
    }
}

/// Why a body did not deserialize. Carries no byte of the body.
#[derive(Debug)]
pub struct DecodeError {
    message_id: String,
    type_name: Cow<'static, str>,
    detail: String,
    line: usize,
    column: usize,
}

impl DecodeError {
    /// The message whose body failed.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "message {}: body is not a valid {} ({}",
            self.message_id, self.type_name, self.detail
        )?;
        if self.line > 0 {
            write!(f, " at line {} column {}", self.line, self.column)?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for DecodeError {}

/// A permanent [`Error`] for a body that failed to deserialize as `T`.
pub(crate) fn decode_error<T>(message_id: &str, e: &serde_json::Error) -> Error {
    let type_name = std::any::type_name::<T>();
    let type_name = type_name.rsplit("::").next().unwrap_or(type_name);
    Error::permanent(DecodeError {
        message_id: message_id.to_owned(),
        type_name: Cow::Borrowed(type_name),
        detail: redact(&without_position(e)),
        line: e.line(),
        column: e.column(),
    })
}

/// A permanent [`Error`] for a body that is not a valid `envelope` (e.g.
/// `Sns<Order>`): serde's complaint, redacted as [`Json`]'s.
pub(crate) fn envelope_error(message_id: &str, envelope: String, e: &serde_json::Error) -> Error {
    Error::permanent(DecodeError {
        message_id: message_id.to_owned(),
        type_name: Cow::Owned(envelope),
        detail: redact(&without_position(e)),
        line: e.line(),
        column: e.column(),
    })
}

/// `T`'s name without module paths, generics kept: `Sns<Vec<Order>>`.
pub(crate) fn short_type_name<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    let mut out = String::with_capacity(full.len());
    let mut segment_start = 0;
    let mut rest = full;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("::") {
            out.truncate(segment_start);
            rest = after;
            continue;
        }
        out.push(c);
        if matches!(c, '<' | '>' | ',' | ' ' | '(' | ')' | '[' | ']' | '&' | ';') {
            segment_start = out.len();
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// serde_json's message without its trailing " at line L column C".
fn without_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Redacts values that serde copies from the input into its messages:
/// `invalid type: string "secret"` → `invalid type: string "…"`, and the
/// backquoted value after `invalid value:`, `invalid type:`, `unknown variant`
/// and `unknown field`. Field and type names from the schema stay.
fn redact(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    // Double-quoted spans are always input data.
    while let Some(start) = rest.find('"') {
        out.push_str(&rest[..=start]);
        match rest[start + 1..].find('"') {
            Some(end) => {
                out.push('…');
                out.push('"');
                rest = &rest[start + 1 + end + 1..];
            }
            None => {
                out.push('…');
                rest = "";
            }
        }
    }
    out.push_str(rest);
    for prefix in [
        "invalid value: ",
        "invalid type: ",
        "unknown variant ",
        "unknown field ",
    ] {
        if let Some(p) = out.find(prefix) {
            let after = p + prefix.len();
            if let Some(open) = out[after..].find('`').map(|i| after + i) {
                // Only when the backquote starts the value (e.g. "integer `5`", "`foo`").
                let gap = &out[after..open];
                if gap.len() <= 20
                    && !gap.contains(',')
                    && let Some(close) = out[open + 1..].find('`').map(|i| open + 1 + i)
                {
                    out.replace_range(open + 1..close, "…");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::message::Message;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Order {
        order_id: u64,
        customer: String,
        kind: Kind,
    }
    #[derive(Debug, serde::Deserialize)]
    enum Kind {
        A,
    }

    fn err_of(body: &str) -> String {
        let m = Message::builder("msg-7", body).build();
        let e = m.json::<Order>().unwrap_err();
        assert!(e.is_permanent());
        e.to_string()
    }

    #[test]
    fn errors_name_the_message_and_never_the_body() {
        let cases = [
            (
                r#"{"order_id": "SECRET-1", "customer": "c", "kind": "A"}"#,
                "SECRET-1",
            ),
            (
                r#"{"order_id": 1, "customer": 99887766, "kind": "A"}"#,
                "99887766",
            ),
            (
                r#"{"order_id": 1, "customer": "c", "kind": "SECRET-V"}"#,
                "SECRET-V",
            ),
            (
                r#"{"order_id": -424242, "customer": "c", "kind": "A"}"#,
                "424242",
            ),
            (r#"not json SECRET"#, "SECRET"),
        ];
        for (body, secret) in cases {
            let s = err_of(body);
            assert!(s.contains("msg-7"), "{s}");
            assert!(s.contains("Order"), "{s}");
            assert!(!s.contains(secret), "leaked body data: {s}");
        }
        let s = err_of(r#"{"customer": "c", "kind": "A"}"#);
        assert!(s.contains("missing field `order_id`"), "{s}");
    }
}
