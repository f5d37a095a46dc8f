//! `sqs-worker send QUEUE [--file F | -] [--group G] [--attr k=v]...`.

use std::collections::HashMap;
use std::io::Read;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageAttributeValue;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::SendArgs;
use crate::error::{CliError, exit};
use crate::queue;
use crate::scan::now_ms;
use crate::sender::{self, Outgoing};

/// From this many messages on, a progress bar is drawn (on a terminal).
const PROGRESS_FROM: usize = 100;

pub(crate) async fn run(
    client: &Client,
    region: Option<&str>,
    args: &SendArgs,
) -> Result<u8, CliError> {
    let attributes = parse_attrs(&args.attrs)?;
    let text = read_input(&args.file)?;
    let bodies = bodies(&text)?;
    if bodies.is_empty() {
        return Err(CliError::usage(
            "There is nothing to send: the input is empty.",
        ));
    }
    let q = queue::resolve(client, region, &args.queue).await?;
    if q.is_fifo() && args.group.is_none() {
        return Err(CliError::usage(format!(
            "{} is a FIFO queue: give a message group with --group.",
            q.name
        )));
    }
    let run = now_ms();
    let items: Vec<Outgoing> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| Outgoing {
            body,
            attributes: attributes.clone(),
            group_id: args.group.clone(),
            dedup_id: q.is_fifo().then(|| format!("send-{run}-{i}")),
        })
        .collect();
    let bar = progress(items.len(), "sending");
    let results = sender::send_all(client, &q.url, &items, &mut |n| bar.inc(n as u64)).await;
    bar.finish_and_clear();
    let failed: Vec<(usize, &String)> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e)))
        .collect();
    println!(
        "Sent {} of {} messages to {}.",
        items.len() - failed.len(),
        items.len(),
        q.name
    );
    for (i, why) in failed.iter().take(10) {
        eprintln!("  message {} (input #{}) was not sent: {why}", i + 1, i + 1);
    }
    Ok(if failed.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

/// A progress bar on stderr (hidden when stderr is not a terminal or the job
/// is small).
pub(crate) fn progress(len: usize, what: &'static str) -> ProgressBar {
    if len < PROGRESS_FROM {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

fn read_input(file: &str) -> Result<String, CliError> {
    let mut text = String::new();
    let read = if file == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|t| text = t)
    };
    read.map_err(|e| CliError::usage(format!("Could not read {file}: {e}.")))?;
    Ok(text)
}

/// A JSON array: one body per element (strings as they are, other values as
/// compact JSON). Anything else: one body per non-empty line.
pub(crate) fn bodies(text: &str) -> Result<Vec<String>, CliError> {
    if text.trim_start().starts_with('[')
        && let Ok(serde_json::Value::Array(items)) = serde_json::from_str(text)
    {
        return Ok(items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect());
    }
    Ok(text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect())
}

fn parse_attrs(attrs: &[String]) -> Result<HashMap<String, MessageAttributeValue>, CliError> {
    if attrs.len() > 10 {
        return Err(CliError::usage("SQS allows at most 10 message attributes."));
    }
    let mut out = HashMap::new();
    for a in attrs {
        let Some((k, v)) = a.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
            return Err(CliError::usage(format!(
                "The attribute {a:?} is not KEY=VALUE."
            )));
        };
        let value = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .map_err(|e| CliError::usage(format!("The attribute {a:?} is not valid: {e}.")))?;
        out.insert(k.trim().to_owned(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_a_json_array_or_lines() {
        let arr = bodies(r#"["a", {"id": 1}, 2]"#).ok();
        assert_eq!(
            arr,
            Some(vec!["a".into(), r#"{"id":1}"#.into(), "2".into()])
        );
        let lines = bodies("{\"id\":1}\r\n\n  \n{\"id\":2}\n").ok();
        assert_eq!(
            lines,
            Some(vec![r#"{"id":1}"#.into(), r#"{"id":2}"#.into()])
        );
        // A first line that looks like an array, in a file that is not one.
        let mixed = bodies("[1]\n[2]\n").ok();
        assert_eq!(mixed, Some(vec!["[1]".into(), "[2]".into()]));
    }

    #[test]
    fn attributes_are_key_value() {
        assert!(parse_attrs(&["source=backfill".into()]).is_ok_and(|m| m.len() == 1));
        assert!(parse_attrs(&["novalue".into()]).is_err());
        assert!(parse_attrs(&["=x".into()]).is_err());
    }
}
