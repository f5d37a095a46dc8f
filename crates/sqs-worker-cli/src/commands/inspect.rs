//! `sqs-worker dlq inspect DLQ [--json]`: dead letters grouped by error kind
//! and the start of the error text.

use std::collections::BTreeMap;

use aws_sdk_sqs::Client;

use crate::cli::InspectArgs;
use crate::deadletter::DeadLetter;
use crate::error::{CliError, exit};
use crate::format;
use crate::queue;
use crate::scan::Scan;

/// The kind shown for messages SQS moved here itself (no `SqsWorker.*`).
const BY_SQS: &str = "(moved by SQS)";

/// One group of dead letters.
#[derive(Debug, serde::Serialize)]
struct Group {
    /// `SqsWorker.ErrorKind`; null for messages SQS dead-lettered itself.
    kind: Option<String>,
    /// The first `--prefix` characters of `SqsWorker.Error`.
    error: Option<String>,
    count: u64,
    first_failed_at_ms: Option<u64>,
    last_failed_at_ms: Option<u64>,
    example_message_id: String,
}

/// The whole report.
#[derive(Debug, serde::Serialize)]
struct Report {
    queue: String,
    total: u64,
    groups: Vec<Group>,
}

pub(crate) async fn run(
    client: &Client,
    region: Option<&str>,
    args: &InspectArgs,
) -> Result<u8, CliError> {
    let q = queue::resolve(client, region, &args.queue).await?;
    let mut scan = Scan::new(client, &q, args.visibility_timeout);
    let mut groups: BTreeMap<(Option<String>, Option<String>), Group> = BTreeMap::new();
    let mut total = 0;
    loop {
        let batch = match scan.next(10).await {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) => {
                scan.release().await;
                return Err(e);
            }
        };
        for m in batch {
            total += 1;
            let d = DeadLetter::of(&m);
            let prefix = match (&d.error, &m.sqs_source_arn) {
                (Some(e), _) => Some(format::clip(e, args.prefix)),
                (None, Some(arn)) if !d.by_runner => {
                    let from = arn.rsplit(':').next().unwrap_or(arn);
                    Some(format!("after maxReceiveCount receives from {from}"))
                }
                (None, _) => None,
            };
            let kind = d
                .kind
                .clone()
                .or_else(|| d.by_runner.then(|| "?".to_owned()));
            let g = groups
                .entry((kind.clone(), prefix.clone()))
                .or_insert_with(|| Group {
                    kind,
                    error: prefix,
                    count: 0,
                    first_failed_at_ms: None,
                    last_failed_at_ms: None,
                    example_message_id: m.id.clone(),
                });
            g.count += 1;
            if let Some(at) = d.failed_at_ms {
                g.first_failed_at_ms = Some(g.first_failed_at_ms.map_or(at, |f| f.min(at)));
                g.last_failed_at_ms = Some(g.last_failed_at_ms.map_or(at, |l| l.max(at)));
            }
        }
    }
    let incomplete = scan.incomplete();
    let not_released = scan.release().await;
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then(a.kind.cmp(&b.kind)));
    let report = Report {
        queue: q.name.clone(),
        total,
        groups,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| CliError::new(exit::SERVICE, format!("Could not write JSON: {e}")))?;
        println!("{text}");
    } else {
        print_table(&report);
    }
    if not_released > 0 {
        eprintln!(
            "{not_released} message(s) could not be released; they reappear within {} s.",
            args.visibility_timeout
        );
    }
    if incomplete {
        eprintln!(
            "The scan stopped early: held messages reappeared before their hold was renewed, \
             so some dead letters may be missing. Run it again with a larger --visibility-timeout."
        );
        return Ok(exit::PARTIAL);
    }
    Ok(exit::OK)
}

fn print_table(r: &Report) {
    if r.total == 0 {
        println!("{} holds no dead letters.", r.queue);
        return;
    }
    let mut t = format::table(&[
        "kind",
        "error",
        "count",
        "first failed",
        "last failed",
        "example id",
    ]);
    let time = |t: Option<u64>| t.map_or_else(|| "-".to_owned(), format::utc);
    for g in &r.groups {
        t.add_row(vec![
            g.kind.clone().unwrap_or_else(|| BY_SQS.to_owned()),
            g.error.clone().unwrap_or_else(|| "-".to_owned()),
            g.count.to_string(),
            time(g.first_failed_at_ms),
            time(g.last_failed_at_ms),
            g.example_message_id.clone(),
        ]);
    }
    println!("{t}");
    println!(
        "{} dead letter(s) in {} group(s) in {}; each was received once to read it.",
        r.total,
        r.groups.len(),
        r.queue
    );
}
