//! The message attributes list and its values.

use std::collections::HashMap;

/// The message attributes of a message, by name.
///
/// SQS allows at most 10 per message, so they are kept as a short list in
/// arrival order and found by comparing names: cheaper to build, drop and
/// search than a hash map at that size. Names are unique
/// ([`insert`](Self::insert) replaces). Equality ignores order.
#[derive(Clone, Default)]
pub struct MessageAttributes {
    entries: Vec<(String, MessageAttribute)>,
}

impl MessageAttributes {
    /// No attributes.
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// No attributes, with room for `n`.
    #[inline]
    pub fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
        }
    }

    /// The attribute called `name`.
    pub fn get(&self, name: &str) -> Option<&MessageAttribute> {
        self.entries.iter().find(|(k, _)| k == name).map(|(_, a)| a)
    }

    /// Whether there is an attribute called `name`.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` to `value`, returning the value it replaces.
    #[inline]
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        value: MessageAttribute,
    ) -> Option<MessageAttribute> {
        let name = name.into();
        match self.entries.iter_mut().find(|(k, _)| *k == name) {
            Some((_, old)) => Some(std::mem::replace(old, value)),
            None => {
                self.entries.push((name, value));
                None
            }
        }
    }

    /// Removes the attribute called `name`.
    pub fn remove(&mut self, name: &str) -> Option<MessageAttribute> {
        let i = self.entries.iter().position(|(k, _)| k == name)?;
        Some(self.entries.remove(i).1)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Names and attributes, in arrival order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&String, &MessageAttribute)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The names, in arrival order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &String> {
        self.entries.iter().map(|(k, _)| k)
    }
}

impl std::fmt::Debug for MessageAttributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl PartialEq for MessageAttributes {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl Eq for MessageAttributes {}

impl<'a> IntoIterator for &'a MessageAttributes {
    type Item = (&'a String, &'a MessageAttribute);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, MessageAttribute)>,
        fn(&'a (String, MessageAttribute)) -> (&'a String, &'a MessageAttribute),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl IntoIterator for MessageAttributes {
    type Item = (String, MessageAttribute);
    type IntoIter = std::vec::IntoIter<(String, MessageAttribute)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<K: Into<String>> FromIterator<(K, MessageAttribute)> for MessageAttributes {
    fn from_iter<I: IntoIterator<Item = (K, MessageAttribute)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut out = Self::with_capacity(iter.size_hint().0);
        out.extend(iter);
        out
    }
}

impl<K: Into<String>> Extend<(K, MessageAttribute)> for MessageAttributes {
    fn extend<I: IntoIterator<Item = (K, MessageAttribute)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<S> From<HashMap<String, MessageAttribute, S>> for MessageAttributes {
    fn from(map: HashMap<String, MessageAttribute, S>) -> Self {
        // Keys of a map are unique already.
        Self {
            entries: map.into_iter().collect(),
        }
    }
}

impl From<MessageAttributes> for HashMap<String, MessageAttribute> {
    fn from(attrs: MessageAttributes) -> Self {
        attrs.entries.into_iter().collect()
    }
}

/// A message attribute: its SQS data type (e.g. `"String"`, `"Number.int"`,
/// `"Binary.gzip"`) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAttribute {
    /// The full data type, custom suffix included.
    pub data_type: String,
    /// The value.
    pub value: AttributeValue,
}

/// The value of a message attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// A `String` (or unknown text) attribute.
    String(String),
    /// A `Number` attribute, kept as SQS sends it (decimal text).
    Number(String),
    /// A `Binary` attribute (decoded bytes).
    Binary(Vec<u8>),
}

impl MessageAttribute {
    /// A `String` attribute.
    pub fn string(value: impl Into<String>) -> Self {
        Self {
            data_type: "String".into(),
            value: AttributeValue::String(value.into()),
        }
    }

    /// A `Number` attribute.
    pub fn number(value: impl ToString) -> Self {
        Self {
            data_type: "Number".into(),
            value: AttributeValue::Number(value.to_string()),
        }
    }

    /// A `Binary` attribute.
    pub fn binary(value: impl Into<Vec<u8>>) -> Self {
        Self {
            data_type: "Binary".into(),
            value: AttributeValue::Binary(value.into()),
        }
    }

    /// Builds an attribute from the parts SQS and Lambda deliver. The data
    /// type's prefix picks the variant; an unknown type keeps whichever value is
    /// present (text first), so nothing is lost. `None` when there is no value.
    #[inline]
    pub fn from_parts(
        data_type: String,
        string_value: Option<String>,
        binary_value: Option<Vec<u8>>,
    ) -> Option<Self> {
        let value = if data_type.starts_with("Binary") {
            AttributeValue::Binary(binary_value?)
        } else if data_type.starts_with("Number") {
            AttributeValue::Number(string_value?)
        } else {
            match (string_value, binary_value) {
                (Some(s), _) => AttributeValue::String(s),
                (None, Some(b)) => AttributeValue::Binary(b),
                (None, None) => return None,
            }
        };
        Some(Self { data_type, value })
    }

    /// The value as text, for `String` and `Number` attributes.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            AttributeValue::String(s) | AttributeValue::Number(s) => Some(s),
            AttributeValue::Binary(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_attributes_by_name() {
        let mut a = MessageAttributes::new();
        assert!(a.insert("x", MessageAttribute::string("1")).is_none());
        a.insert("y", MessageAttribute::number(2));
        let old = a.insert("x", MessageAttribute::string("3"));
        assert_eq!(old, Some(MessageAttribute::string("1")), "insert replaces");
        assert_eq!(a.len(), 2);
        assert_eq!(a.get("x").and_then(|v| v.as_str()), Some("3"));
        assert!(a.get("z").is_none() && a.contains_key("y"));
        assert_eq!(a.keys().collect::<Vec<_>>(), ["x", "y"], "arrival order");

        // Equal whatever the order; a HashMap converts both ways.
        let b: MessageAttributes = [
            ("y", MessageAttribute::number(2)),
            ("x", MessageAttribute::string("3")),
        ]
        .into_iter()
        .collect();
        assert_eq!(a, b);
        let map: HashMap<String, MessageAttribute> = b.clone().into();
        assert_eq!(MessageAttributes::from(map), a);
        assert_ne!(a, MessageAttributes::new());
        assert_eq!(a.clone().remove("y"), Some(MessageAttribute::number(2)));
        assert_eq!(
            format!("{a:?}"),
            r#"{"x": MessageAttribute { data_type: "String", value: String("3") }, "y": MessageAttribute { data_type: "Number", value: Number("2") }}"#
        );
    }

    #[test]
    fn attribute_types_from_parts() {
        let a = MessageAttribute::from_parts("Number.int".into(), Some("7".into()), None);
        assert_eq!(a.map(|a| a.value), Some(AttributeValue::Number("7".into())));
        let b = MessageAttribute::from_parts("Binary.gz".into(), None, Some(vec![1, 2]));
        assert_eq!(b.map(|a| a.value), Some(AttributeValue::Binary(vec![1, 2])));
        let unknown = MessageAttribute::from_parts("Weird".into(), Some("s".into()), None);
        assert_eq!(unknown.map(|a| a.data_type), Some("Weird".to_string()));
        assert!(MessageAttribute::from_parts("Binary".into(), Some("x".into()), None).is_none());
    }
}
