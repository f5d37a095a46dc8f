//! `sqs-worker peek QUEUE [-n 10] [--no-body] [--json]`.

use aws_sdk_sqs::Client;

use crate::cli::PeekArgs;
use crate::error::{CliError, exit};
use crate::format;
use crate::queue;
use crate::scan::{Received, Scan, now_ms};

/// Seconds a peeked message stays hidden if the command dies before releasing.
const HOLD_SECONDS: u32 = 30;
/// Characters of a body shown in the table.
const BODY_CHARS: usize = 80;

pub(crate) async fn run(
    client: &Client,
    region: Option<&str>,
    args: &PeekArgs,
) -> Result<u8, CliError> {
    let q = queue::resolve(client, region, &args.queue).await?;
    let mut scan = Scan::new(client, &q, HOLD_SECONDS);
    let mut got: Vec<Received> = Vec::new();
    while got.len() < args.count {
        match scan.next(args.count - got.len()).await {
            Ok(Some(batch)) => got.extend(batch),
            Ok(None) => break,
            Err(e) => {
                scan.release().await;
                return Err(e);
            }
        }
    }
    let not_released = scan.release().await;
    if not_released > 0 {
        eprintln!(
            "{not_released} message(s) could not be released; they reappear within {HOLD_SECONDS} s."
        );
    }
    let now = now_ms();
    if args.json {
        let list: Vec<serde_json::Value> = got.iter().map(|m| json(m, now, args.no_body)).collect();
        let text = serde_json::to_string_pretty(&list)
            .map_err(|e| CliError::new(exit::SERVICE, format!("Could not write JSON: {e}")))?;
        println!("{text}");
        return Ok(exit::OK);
    }
    if got.is_empty() {
        println!("{} has no visible messages.", q.name);
        return Ok(exit::OK);
    }
    let mut header = vec!["message id", "receives", "age", "attributes"];
    if !args.no_body {
        header.push("body");
    }
    let mut t = format::table(&header);
    for m in &got {
        let mut row = vec![
            m.id.clone(),
            m.receive_count.to_string(),
            age_of(m, now),
            attributes(m),
        ];
        if !args.no_body {
            row.push(format::clip(&m.body, BODY_CHARS));
        }
        t.add_row(row);
    }
    println!("{t}");
    println!(
        "{} message(s) shown and released; each receive count went up by one.",
        got.len()
    );
    Ok(exit::OK)
}

fn age_of(m: &Received, now: u64) -> String {
    m.sent_at_ms.map_or_else(
        || "-".to_owned(),
        |s| format::age(now.saturating_sub(s) / 1000),
    )
}

/// `k=v` pairs, sorted, one per line.
fn attributes(m: &Received) -> String {
    let mut pairs: Vec<String> = m
        .attributes
        .iter()
        .map(|(k, v)| {
            let value = v
                .string_value()
                .map_or_else(|| format!("({})", v.data_type()), |s| format::clip(s, 60));
            format!("{k}={value}")
        })
        .collect();
    pairs.sort();
    pairs.join("\n")
}

fn json(m: &Received, now: u64, no_body: bool) -> serde_json::Value {
    let attrs: serde_json::Map<String, serde_json::Value> = m
        .attributes
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.string_value()
                    .map_or(serde_json::Value::Null, |s| s.to_owned().into()),
            )
        })
        .collect();
    let mut obj = serde_json::json!({
        "message_id": m.id,
        "receive_count": m.receive_count,
        "age_seconds": m.sent_at_ms.map(|s| now.saturating_sub(s) / 1000),
        "group_id": m.group_id,
        "attributes": attrs,
    });
    if !no_body && let Some(o) = obj.as_object_mut() {
        o.insert("body".to_owned(), m.body.clone().into());
    }
    obj
}
