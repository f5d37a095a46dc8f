//! The deserializer for a payload carried as text (SNS's `Message`): JSON for
//! every type except strings, which get the text as it is. So `Sns<Order>`
//! parses the JSON and `Sns<String>` takes any text, with one code path.

use serde::de::{Deserializer, Visitor};

/// Deserializes a `T` from text: `String`, `Box<str>`, `Cow<str>` (anything
/// asking for a string) get the text itself; everything else parses it as
/// JSON, with serde_json's type hints and its end-of-input check.
pub(crate) struct TextPayload<'a>(pub(crate) &'a str);

macro_rules! forward_to_json {
    ($($method:ident ( $($arg:ident : $ty:ty),* );)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Self::Error> {
            let mut de = serde_json::Deserializer::from_str(self.0);
            let value = (&mut de).$method($($arg,)* visitor)?;
            de.end()?;
            Ok(value)
        }
    )*};
}

impl<'de> Deserializer<'de> for TextPayload<'de> {
    type Error = serde_json::Error;

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_borrowed_str(self.0)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_borrowed_str(self.0)
    }

    forward_to_json! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Order {
        id: u64,
        note: Option<String>,
        kind: Kind,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    enum Kind {
        A,
    }

    #[test]
    fn strings_take_the_text_and_everything_else_parses_json() {
        let s = String::deserialize(TextPayload("hello, not json")).unwrap();
        assert_eq!(s, "hello, not json");
        let s = String::deserialize(TextPayload(r#"{"id":1}"#)).unwrap();
        assert_eq!(s, r#"{"id":1}"#, "a String is the text, even if it is JSON");
        let o = Order::deserialize(TextPayload(r#"{"id":1,"note":null,"kind":"A"}"#)).unwrap();
        assert_eq!(o.kind, Kind::A);
        let m = BTreeMap::<String, u8>::deserialize(TextPayload(r#"{"a":1}"#)).unwrap();
        assert_eq!(m["a"], 1);
        assert_eq!(
            Option::<u8>::deserialize(TextPayload("null")).unwrap(),
            None
        );
        assert!(Order::deserialize(TextPayload(r#"{"id":1,"kind":"A"} trailing"#)).is_err());
        assert!(u8::deserialize(TextPayload("hello")).is_err());
    }
}
