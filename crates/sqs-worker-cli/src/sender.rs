//! Sending for `send` and `dlq redrive`, through the producer's
//! [`Sender`](sqs_worker_producer::Sender): `SendMessageBatch` requests of at
//! most 10 entries and 1 MiB, transient per-entry failures retried, FIFO
//! group and deduplication ids passed through.

use std::collections::HashMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageAttributeValue;
use sqs_worker_core::{AttributeValue, MessageAttribute};
use sqs_worker_producer::{Outgoing, Sender};

/// Messages per `send_batch` call: the progress bar moves once per call.
const CHUNK: usize = 100;

/// The producer's message with SQS message attributes as the SDK gives them
/// (e.g. received from a dead-letter queue), data types kept.
pub(crate) fn outgoing(
    body: &str,
    attributes: &HashMap<String, MessageAttributeValue>,
) -> Outgoing {
    attributes
        .iter()
        .fold(Outgoing::new(body), |out, (name, v)| {
            out.attribute(name.clone(), attribute(v))
        })
}

/// An SDK attribute as core's: `Binary*` types keep their bytes, `Number*`
/// their decimal text, the rest their text.
fn attribute(v: &MessageAttributeValue) -> MessageAttribute {
    let data_type = v.data_type().to_owned();
    let text = || v.string_value().unwrap_or_default().to_owned();
    let value = if data_type.starts_with("Binary") {
        AttributeValue::Binary(
            v.binary_value()
                .map(|b| b.as_ref().to_vec())
                .unwrap_or_default(),
        )
    } else if data_type.starts_with("Number") {
        AttributeValue::Number(text())
    } else {
        AttributeValue::String(text())
    };
    MessageAttribute { data_type, value }
}

/// One producer [`Sender`] per destination queue URL, each set up once (it
/// reads the queue's attributes).
#[derive(Debug)]
pub(crate) struct Senders {
    client: Client,
    by_url: HashMap<String, Sender>,
}

impl Senders {
    /// No senders yet.
    pub(crate) fn new(client: &Client) -> Self {
        Self {
            client: client.clone(),
            by_url: HashMap::new(),
        }
    }

    /// Sends `items` to `url`; `progress` is called with the number of
    /// messages each step settled. Returns one result per item, in order:
    /// `Err` holds the reason that item was not sent.
    pub(crate) async fn send_all(
        &mut self,
        url: &str,
        items: Vec<Outgoing>,
        progress: &mut dyn FnMut(usize),
    ) -> Vec<Result<(), String>> {
        if !self.by_url.contains_key(url) {
            match Sender::new(self.client.clone(), url).await {
                Ok(s) => {
                    self.by_url.insert(url.to_owned(), s);
                }
                Err(e) => {
                    let why = chain(&e);
                    progress(items.len());
                    return items.iter().map(|_| Err(why.clone())).collect();
                }
            }
        }
        match self.by_url.get(url) {
            Some(sender) => send_chunks(sender, items, progress).await,
            None => items.iter().map(|_| Err("no sender".to_owned())).collect(),
        }
    }
}

/// Sends `items` through `sender` in chunks of [`CHUNK`].
async fn send_chunks(
    sender: &Sender,
    items: Vec<Outgoing>,
    progress: &mut dyn FnMut(usize),
) -> Vec<Result<(), String>> {
    let mut results = Vec::with_capacity(items.len());
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let chunk: Vec<Outgoing> = items.by_ref().take(CHUNK).collect();
        let n = chunk.len();
        for r in sender.send_batch(chunk).await {
            results.push(r.map(|_| ()).map_err(|e| chain(&e)));
        }
        progress(n);
    }
    results
}

/// An error and its causes, `: `-separated.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::primitives::Blob;

    #[test]
    fn attributes_keep_their_types_and_values() {
        let s = MessageAttributeValue::builder()
            .data_type("String.uuid")
            .string_value("6f1c")
            .build()
            .unwrap();
        let n = MessageAttributeValue::builder()
            .data_type("Number.float")
            .string_value("0.25")
            .build()
            .unwrap();
        let b = MessageAttributeValue::builder()
            .data_type("Binary")
            .binary_value(Blob::new(vec![0, 255]))
            .build()
            .unwrap();
        assert_eq!(
            attribute(&s),
            MessageAttribute {
                data_type: "String.uuid".into(),
                value: AttributeValue::String("6f1c".into())
            }
        );
        assert_eq!(attribute(&n).value, AttributeValue::Number("0.25".into()));
        assert_eq!(attribute(&b).value, AttributeValue::Binary(vec![0, 255]));
    }
}
