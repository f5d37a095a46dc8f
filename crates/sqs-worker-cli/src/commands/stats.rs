//! `sqs-worker stats QUEUE [--watch]`.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use aws_sdk_sqs::Client;

use crate::cli::StatsArgs;
use crate::error::{CliError, exit};
use crate::format;
use crate::queue::{self, Queue};

/// Printed under the table: the age of the oldest message needs CloudWatch.
const NO_AGE: &str = "Age of the oldest message: not available (this build has no \
CloudWatch client; see ApproximateAgeOfOldestMessage in the template's dashboard).";

/// One reading of a queue.
#[derive(Debug, serde::Serialize)]
struct Stats {
    queue: String,
    url: String,
    visible: u64,
    in_flight: u64,
    delayed: u64,
    dead_letter_queue: Option<DlqStats>,
}

/// The dead-letter queue named by the redrive policy.
#[derive(Debug, serde::Serialize)]
struct DlqStats {
    queue: String,
    visible: u64,
    max_receive_count: Option<u64>,
}

pub(crate) async fn run(
    client: &Client,
    region: Option<&str>,
    args: &StatsArgs,
) -> Result<u8, CliError> {
    let q = queue::resolve(client, region, &args.queue).await?;
    if args.json {
        let s = read(client, region, &q).await?;
        let text = serde_json::to_string_pretty(&s)
            .map_err(|e| CliError::new(exit::SERVICE, format!("Could not write JSON: {e}")))?;
        println!("{text}");
        return Ok(exit::OK);
    }
    if !args.watch {
        println!("{}", render(&read(client, region, &q).await?));
        return Ok(exit::OK);
    }
    let mut lines_before = 0;
    loop {
        let frame = render(&read(client, region, &q).await?);
        let mut out = std::io::stdout().lock();
        if lines_before > 0 {
            // Up to the previous frame's first line, then clear to the end.
            let _ = write!(out, "\x1b[{lines_before}A\x1b[J");
        }
        let _ = writeln!(out, "{frame}");
        let _ = out.flush();
        lines_before = frame.lines().count();
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(args.interval)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(exit::OK),
        }
    }
}

async fn read(client: &Client, region: Option<&str>, q: &Queue) -> Result<Stats, CliError> {
    let a = queue::attributes(client, q).await?;
    let dead_letter_queue = match dlq_of(&a) {
        Some((arn, max)) => {
            let dlq = queue::resolve(client, region, &arn).await?;
            let da = queue::attributes(client, &dlq).await?;
            Some(DlqStats {
                queue: dlq.name,
                visible: num(&da, "ApproximateNumberOfMessages"),
                max_receive_count: max,
            })
        }
        None => None,
    };
    Ok(Stats {
        queue: q.name.clone(),
        url: q.url.clone(),
        visible: num(&a, "ApproximateNumberOfMessages"),
        in_flight: num(&a, "ApproximateNumberOfMessagesNotVisible"),
        delayed: num(&a, "ApproximateNumberOfMessagesDelayed"),
        dead_letter_queue,
    })
}

/// The DLQ ARN and maxReceiveCount of a `RedrivePolicy` attribute.
fn dlq_of(a: &HashMap<String, String>) -> Option<(String, Option<u64>)> {
    let policy: serde_json::Value = serde_json::from_str(a.get("RedrivePolicy")?).ok()?;
    let arn = policy.get("deadLetterTargetArn")?.as_str()?.to_owned();
    let max = policy.get("maxReceiveCount").and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    });
    Some((arn, max))
}

fn num(a: &HashMap<String, String>, k: &str) -> u64 {
    a.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn render(s: &Stats) -> String {
    let mut t = format::table(&["queue", &s.queue]);
    t.add_row(vec!["visible".to_owned(), s.visible.to_string()]);
    t.add_row(vec!["in flight".to_owned(), s.in_flight.to_string()]);
    t.add_row(vec!["delayed".to_owned(), s.delayed.to_string()]);
    match &s.dead_letter_queue {
        Some(d) => {
            let after = d
                .max_receive_count
                .map(|m| format!(" (after {m} receives)"))
                .unwrap_or_default();
            t.add_row(vec![
                format!("dead letters{after}"),
                format!("{} in {}", d.visible, d.queue),
            ]);
        }
        None => {
            t.add_row(vec!["dead letters", "no redrive policy"]);
        }
    }
    format!("{t}\n{NO_AGE}")
}
