#![allow(unreachable_pub)]
//! Test support: moto's server on loopback and queues (`sqs-worker-testkit`,
//! shared with the workspace's other tests), running the `sqs-worker` binary
//! against it, dead letters, and output normalisation for golden comparisons.

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};

pub use sqs_worker_testkit::{
    create_queue as create, depth, queue_arn as arn, server, sqs as client, unique,
};

/// The `sqs-worker` binary, configured for `endpoint`, with no terminal.
pub fn cli_at(endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sqs-worker"));
    cmd.args(args)
        .env_remove("AWS_PROFILE")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null());
    cmd
}

/// Runs the binary against moto and returns its output.
pub fn run(args: &[&str]) -> Output {
    cli_at(&server().endpoint, args)
        .output()
        .expect("run sqs-worker")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn string_attr(v: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(v)
        .build()
        .expect("attribute")
}

/// A dead letter as a runner writes it (the `SqsWorker.*` schema), plus the
/// user's own attribute `tenant`.
pub struct Dead<'a> {
    pub body: String,
    pub kind: &'a str,
    pub error: &'a str,
    pub source_url: &'a str,
    pub failed_at_ms: u64,
    pub group: Option<&'a str>,
}

/// The `SqsWorker.*` schema attributes of `d`, plus `tenant`.
fn dead_attributes(d: &Dead<'_>) -> HashMap<String, MessageAttributeValue> {
    [
        ("SqsWorker.ErrorKind", d.kind.to_owned()),
        ("SqsWorker.Error", d.error.to_owned()),
        ("SqsWorker.SourceQueueUrl", d.source_url.to_owned()),
        ("SqsWorker.MessageId", "original-id".to_owned()),
        ("SqsWorker.ReceiveCount", "3".to_owned()),
        ("SqsWorker.FailedAt", d.failed_at_ms.to_string()),
        ("tenant", "acme".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), string_attr(&v)))
    .collect()
}

/// Puts dead letters (`None`: a plain message without the schema) into a
/// standard DLQ, ten per request.
pub async fn put_many(client: &Client, dlq: &str, items: &[(String, Option<Dead<'_>>)]) {
    for chunk in items.chunks(10) {
        let entries = chunk.iter().enumerate().map(|(i, (body, d))| {
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body)
                .set_message_attributes(d.as_ref().map(dead_attributes))
                .build()
                .expect("entry")
        });
        let out = client
            .send_message_batch()
            .queue_url(dlq)
            .set_entries(Some(entries.collect()))
            .send()
            .await
            .expect("send_message_batch");
        assert!(out.failed().is_empty(), "{:?}", out.failed());
    }
}

pub async fn put_dead(client: &Client, dlq: &str, d: &Dead<'_>) {
    let mut req = client
        .send_message()
        .queue_url(dlq)
        .message_body(&d.body)
        .set_message_attributes(Some(dead_attributes(d)));
    if let Some(g) = d.group {
        req = req
            .message_group_id(g)
            .message_deduplication_id(format!("dlq-{}", d.body));
    }
    req.send().await.expect("send dead letter");
}

/// A received message: body, attributes, group id.
pub struct Got {
    pub body: String,
    pub attributes: HashMap<String, String>,
    pub group: Option<String>,
    pub receive_count: u64,
}

/// Receives (and deletes) everything in `url`.
pub async fn drain(client: &Client, url: &str) -> Vec<Got> {
    let mut all = Vec::new();
    let mut idle = 0;
    while idle < 2 {
        let out = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive");
        if out.messages().is_empty() {
            idle += 1;
            continue;
        }
        idle = 0;
        for m in out.messages() {
            let sys = m.attributes().cloned().unwrap_or_default();
            all.push(Got {
                body: m.body().unwrap_or_default().to_owned(),
                attributes: m
                    .message_attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| (k.clone(), v.string_value().unwrap_or("").to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
                group: sys
                    .get(&MessageSystemAttributeName::MessageGroupId)
                    .cloned(),
                receive_count: sys
                    .get(&MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            });
        }
        let entries = out.messages().iter().enumerate().map(|(i, m)| {
            aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .build()
                .expect("entry")
        });
        client
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries.collect()))
            .send()
            .await
            .expect("delete_message_batch");
    }
    all
}

/// A table as rows of trimmed cells joined by ` | ` (border lines dropped),
/// other lines as they are, after `replace` substitutions: column widths
/// depend on the volatile parts, the content does not.
pub fn normalise(text: &str, replace: &[(&str, &str)]) -> String {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut line = line.to_owned();
        for (from, to) in replace {
            line = line.replace(from, to);
        }
        let first = line.chars().next().unwrap_or(' ');
        if "┌├└╞╭╰".contains(first) {
            continue;
        }
        if first == '│' {
            let cells: Vec<&str> = line
                .trim_matches('│')
                .split(['│', '┆'])
                .map(str::trim)
                .collect();
            out.push(cells.join(" | "));
        } else {
            out.push(line);
        }
    }
    out.join("\n")
}

/// Replaces every UUID-shaped token (message ids) with `<id>`.
pub fn mask_ids(text: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if i + 36 <= chars.len() && is_uuid(&chars[i..i + 36]) {
            out.push_str("<id>");
            i += 36;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn is_uuid(c: &[char]) -> bool {
    c.iter().enumerate().all(|(i, ch)| match i {
        8 | 13 | 18 | 23 => *ch == '-',
        _ => ch.is_ascii_hexdigit(),
    })
}
