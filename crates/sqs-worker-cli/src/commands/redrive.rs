//! `sqs-worker dlq redrive DLQ [--to Q] [--filter ..] [--rate N] [--dry-run] [--yes]`.
//!
//! Each matching dead letter is re-sent (without the `SqsWorker.*`
//! attributes, with a fresh deduplication id) and deleted from the DLQ only
//! after its send succeeded: nothing is lost; a crash between the send and
//! the delete leaves a duplicate.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use tokio::time::Instant;

use crate::cli::RedriveArgs;
use crate::commands::send::progress;
use crate::confirm::confirm;
use crate::deadletter::{self, DeadLetter, Filter};
use crate::dlq_schema;
use crate::error::{CliError, exit};
use crate::queue::{self, Queue};
use crate::scan::{Received, Scan, now_ms};
use crate::sender::{self, Outgoing};

mod report;

use report::Tally;

/// What to do with one dead letter.
enum Decision {
    /// Re-send to this queue.
    Move(Queue),
    /// Leave it: it does not match the filters.
    Filtered,
    /// SQS dead-lettered it itself: `StartMessageMoveTask` may move it.
    BySqs,
    /// Leave it: its source queue is unknown or gone (the reason).
    Unroutable(String),
}

/// Paces sends to `--rate` messages per second.
struct Pacer {
    rate: Option<u32>,
    start: Instant,
    sent: u64,
}

impl Pacer {
    async fn wait(&mut self, n: usize) {
        if let Some(rate) = self.rate.filter(|r| *r > 0) {
            let due = self.start + Duration::from_secs_f64(self.sent as f64 / f64::from(rate));
            tokio::time::sleep_until(due).await;
        }
        self.sent += n as u64;
    }
}

/// One redrive run.
struct Redrive<'a> {
    client: &'a Client,
    region: Option<&'a str>,
    args: &'a RedriveArgs,
    filters: Vec<Filter>,
    to: Option<Queue>,
    sources: HashMap<String, Result<Queue, String>>,
    pacer: Pacer,
    run_id: u64,
    tally: Tally,
}

pub(crate) async fn run(
    client: &Client,
    region: Option<&str>,
    args: &RedriveArgs,
) -> Result<u8, CliError> {
    let filters = args
        .filters
        .iter()
        .map(|f| Filter::parse(f))
        .collect::<Result<Vec<_>, _>>()?;
    let dlq = queue::resolve(client, region, &args.queue).await?;
    let to = match &args.to {
        Some(t) => Some(queue::resolve(client, region, t).await?),
        None => None,
    };
    let attrs = queue::attributes(client, &dlq).await?;
    let depth: u64 = attrs
        .get("ApproximateNumberOfMessages")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if !args.dry_run {
        let whither = to
            .as_ref()
            .map_or_else(|| "their source queues".to_owned(), |q| q.name.clone());
        let which = if args.filters.is_empty() {
            String::new()
        } else {
            format!(" matching {}", args.filters.join(" and "))
        };
        confirm(
            &format!(
                "Move the dead letters{which} of {} (about {depth}) to {whither}?",
                dlq.name
            ),
            args.yes,
        )?;
    }
    let mut r = Redrive {
        client,
        region,
        args,
        filters,
        to,
        sources: HashMap::new(),
        pacer: Pacer {
            rate: args.rate,
            start: Instant::now(),
            sent: 0,
        },
        run_id: now_ms(),
        tally: Tally::default(),
    };
    r.scan(&dlq, depth).await?;
    if r.should_start_move_task() {
        let arn = attrs.get("QueueArn").cloned().unwrap_or_default();
        r.start_move_task(&dlq, &arn).await?;
    }
    r.tally.print(&dlq.name, args.dry_run);
    Ok(if r.tally.failed() {
        exit::PARTIAL
    } else {
        exit::OK
    })
}

impl Redrive<'_> {
    /// Receives every dead letter once and moves the matching ones.
    async fn scan(&mut self, dlq: &Queue, depth: u64) -> Result<(), CliError> {
        let bar = progress(usize::try_from(depth).unwrap_or(usize::MAX), "redriving");
        let batch = match self.args.rate {
            Some(r) if r < 10 => usize::try_from(r.max(1)).unwrap_or(1),
            _ => 10,
        };
        let mut scan = Scan::new(self.client, dlq, self.args.visibility_timeout);
        let outcome = loop {
            let got = match scan.next(batch).await {
                Ok(Some(got)) => got,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            if bar
                .length()
                .is_some_and(|l| bar.position() + got.len() as u64 > l)
            {
                bar.inc_length(got.len() as u64);
            }
            let n = got.len() as u64;
            if let Err(e) = self.handle(dlq, &mut scan, got).await {
                break Err(e);
            }
            bar.inc(n);
        };
        bar.finish_and_clear();
        self.tally.incomplete = scan.incomplete();
        self.tally.not_released = scan.release().await;
        outcome
    }

    /// Decides, sends and deletes one received batch.
    async fn handle(
        &mut self,
        dlq: &Queue,
        scan: &mut Scan<'_>,
        got: Vec<Received>,
    ) -> Result<(), CliError> {
        let mut moves: BTreeMap<String, (Queue, Vec<Received>)> = BTreeMap::new();
        for m in got {
            match self.decide(&m).await {
                Decision::Move(q) => moves
                    .entry(q.url.clone())
                    .or_insert((q, Vec::new()))
                    .1
                    .push(m),
                Decision::Filtered => self.tally.filtered += 1,
                Decision::BySqs => self.tally.by_sqs += 1,
                Decision::Unroutable(why) => self.tally.unroutable(why),
            }
        }
        for (_, (dest, msgs)) in moves {
            if self.args.dry_run {
                self.tally.moved(&dest.name, msgs.len());
                continue;
            }
            let items: Vec<Outgoing> = msgs.iter().map(|m| self.outgoing(m, &dest)).collect();
            self.pacer.wait(items.len()).await;
            let results = sender::send_all(self.client, &dest.url, &items, &mut |_| {}).await;
            let mut sent = Vec::new();
            for (m, res) in msgs.iter().zip(results) {
                match res {
                    Ok(()) => sent.push(m),
                    Err(why) => self.tally.send_failed(&dest.name, why),
                }
            }
            let deleted = delete(self.client, &dlq.url, &sent).await;
            for (m, ok) in sent.iter().zip(deleted) {
                if ok {
                    scan.forget(&m.id);
                    self.tally.moved(&dest.name, 1);
                } else {
                    self.tally.not_deleted += 1;
                }
            }
        }
        Ok(())
    }

    async fn decide(&mut self, m: &Received) -> Decision {
        let d = DeadLetter::of(m);
        if !d.by_runner {
            // SQS moved it here: no kind or error to filter on.
            return match (&self.to, self.filters.is_empty()) {
                (_, false) => Decision::Filtered,
                (Some(q), true) => Decision::Move(q.clone()),
                (None, true) => Decision::BySqs,
            };
        }
        if !deadletter::matches_all(&self.filters, &d) {
            return Decision::Filtered;
        }
        if let Some(q) = &self.to {
            return Decision::Move(q.clone());
        }
        let Some(source) = d.source_url.or(d.source_arn) else {
            return Decision::Unroutable("no SqsWorker.SourceQueueUrl (use --to)".to_owned());
        };
        if !self.sources.contains_key(&source) {
            let found = queue::resolve(self.client, self.region, &source)
                .await
                .map_err(|e| e.message);
            self.sources.insert(source.clone(), found);
        }
        match self.sources.get(&source) {
            Some(Ok(q)) => Decision::Move(q.clone()),
            Some(Err(why)) => Decision::Unroutable(why.clone()),
            None => Decision::Unroutable(format!("{source} could not be resolved")),
        }
    }

    /// The message to send: body, the user's attributes, FIFO group, and a
    /// fresh deduplication id.
    fn outgoing(&self, m: &Received, dest: &Queue) -> Outgoing {
        Outgoing {
            body: m.body.clone(),
            attributes: m
                .attributes
                .iter()
                .filter(|(k, _)| !k.starts_with(dlq_schema::PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            group_id: dest.is_fifo().then(|| {
                m.group_id
                    .clone()
                    .unwrap_or_else(|| "sqs-worker-redrive".to_owned())
            }),
            dedup_id: dest
                .is_fifo()
                .then(|| format!("redrive-{}-{}", self.run_id, m.id)),
        }
    }

    fn should_start_move_task(&self) -> bool {
        !self.args.dry_run
            && self.tally.by_sqs > 0
            && self.filters.is_empty()
            && self.to.is_none()
            && !self.tally.failed()
    }

    /// Hands the messages SQS dead-lettered itself to `StartMessageMoveTask`
    /// (SQS knows their source; we do not).
    async fn start_move_task(&mut self, dlq: &Queue, arn: &str) -> Result<(), CliError> {
        let out = self
            .client
            .start_message_move_task()
            .source_arn(arn)
            .set_max_number_of_messages_per_second(
                self.args.rate.and_then(|r| i32::try_from(r.min(500)).ok()),
            )
            .send()
            .await
            .map_err(|e| CliError::sdk("StartMessageMoveTask", &dlq.url, &e))?;
        self.tally.move_task = Some(out.task_handle().unwrap_or("(no handle)").to_owned());
        Ok(())
    }
}

/// Deletes `msgs` from the DLQ; one flag per message, in order.
async fn delete(client: &Client, url: &str, msgs: &[&Received]) -> Vec<bool> {
    let mut ok = vec![true; msgs.len()];
    for (c, chunk) in msgs.chunks(10).enumerate() {
        let entries = chunk.iter().enumerate().filter_map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(&m.receipt)
                .build()
                .ok()
        });
        let base = c * 10;
        match client
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries.collect()))
            .send()
            .await
        {
            Ok(out) => {
                for f in out.failed() {
                    if let Some(slot) = f
                        .id()
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| ok.get_mut(base + i))
                    {
                        *slot = false;
                    }
                }
            }
            Err(_) => ok[base..base + chunk.len()]
                .iter_mut()
                .for_each(|s| *s = false),
        }
    }
    ok
}
