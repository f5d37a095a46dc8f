//! Receiving every message of a queue once: messages are held (invisible) for
//! a short visibility timeout, renewed every half of it while the scan runs,
//! and released (visibility 0) at its end. Releasing each at once would make
//! SQS hand the same ones back and the scan would never reach the rest; a
//! killed scan's messages reappear when the short timeout runs out. Every
//! receive raises a message's `ApproximateReceiveCount`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
};

use crate::error::CliError;
use crate::queue::Queue;

/// Empty receives in a row that end a scan.
const IDLE_ROUNDS: u32 = 2;
/// Receives in a row that return only messages seen before (their hold ran
/// out before it was renewed) that end a scan.
const STALE_ROUNDS: u32 = 10;
/// Long-poll wait of each receive, seconds (a long poll asks every SQS server,
/// so an empty answer means empty).
const WAIT_SECONDS: i32 = 1;

/// A received message.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) id: String,
    pub(crate) receipt: String,
    pub(crate) body: String,
    pub(crate) attributes: HashMap<String, MessageAttributeValue>,
    pub(crate) receive_count: u64,
    /// `SentTimestamp`, ms since the epoch.
    pub(crate) sent_at_ms: Option<u64>,
    pub(crate) group_id: Option<String>,
    /// `DeadLetterQueueSourceArn`: set when SQS itself moved the message here.
    pub(crate) sqs_source_arn: Option<String>,
}

impl Received {
    /// A string or number attribute's value.
    pub(crate) fn attr(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).and_then(|v| v.string_value())
    }
}

/// A scan of one queue.
#[derive(Debug)]
pub(crate) struct Scan<'a> {
    client: &'a Client,
    queue: &'a Queue,
    hold_seconds: i32,
    seen: HashSet<String>,
    /// Messages held by this scan, by message id: receipt handle and when
    /// the hold was last set.
    held: HashMap<String, (String, Instant)>,
    idle: u32,
    stale: u32,
}

impl<'a> Scan<'a> {
    /// A scan that holds what it receives for `hold_seconds`.
    pub(crate) fn new(client: &'a Client, queue: &'a Queue, hold_seconds: u32) -> Self {
        Self {
            client,
            queue,
            hold_seconds: i32::try_from(hold_seconds.clamp(1, 43_200)).unwrap_or(30),
            seen: HashSet::new(),
            held: HashMap::new(),
            idle: 0,
            stale: 0,
        }
    }

    /// Messages this scan has not returned before (at most `max`, ≤ 10), or
    /// `None` when the queue has nothing new.
    pub(crate) async fn next(&mut self, max: usize) -> Result<Option<Vec<Received>>, CliError> {
        while self.idle < IDLE_ROUNDS && self.stale < STALE_ROUNDS {
            self.renew_if_due().await;
            let out = self
                .client
                .receive_message()
                .queue_url(&self.queue.url)
                .max_number_of_messages(i32::try_from(max.clamp(1, 10)).unwrap_or(10))
                .visibility_timeout(self.hold_seconds)
                .wait_time_seconds(WAIT_SECONDS)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .map_err(|e| CliError::sdk("ReceiveMessage", &self.queue.url, &e))?;
            let mut fresh = Vec::new();
            for m in out.messages() {
                let Some(r) = convert(m) else { continue };
                self.held
                    .insert(r.id.clone(), (r.receipt.clone(), Instant::now()));
                if self.seen.insert(r.id.clone()) {
                    fresh.push(r);
                }
            }
            match (fresh.is_empty(), out.messages().is_empty()) {
                (false, _) => {
                    (self.idle, self.stale) = (0, 0);
                    return Ok(Some(fresh));
                }
                (true, true) => self.idle += 1,
                (true, false) => self.stale += 1,
            }
        }
        Ok(None)
    }

    /// Renews the hold of every message held for half of it or longer, so
    /// that none reappears during the scan.
    async fn renew_if_due(&mut self) {
        let half = Duration::from_millis(u64::try_from(self.hold_seconds).unwrap_or(30) * 500);
        let due: Vec<(String, String)> = self
            .held
            .iter()
            .filter(|(_, (_, at))| at.elapsed() >= half)
            .map(|(id, (receipt, _))| (id.clone(), receipt.clone()))
            .collect();
        if due.is_empty() {
            return;
        }
        change_visibility(self.client, &self.queue.url, &due, self.hold_seconds).await;
        let now = Instant::now();
        for (id, _) in &due {
            if let Some(entry) = self.held.get_mut(id) {
                entry.1 = now;
            }
        }
    }

    /// Whether the scan stopped because held messages kept reappearing (their
    /// hold ran out before it was renewed): some messages may be unread.
    pub(crate) fn incomplete(&self) -> bool {
        self.stale >= STALE_ROUNDS
    }

    /// Forgets a message this scan deleted (it is not released at the end).
    pub(crate) fn forget(&mut self, id: &str) {
        self.held.remove(id);
    }

    /// Makes every held message visible again; returns how many could not be
    /// released (their hold simply runs out).
    pub(crate) async fn release(mut self) -> usize {
        let held: Vec<(String, String)> = self
            .held
            .drain()
            .map(|(id, (receipt, _))| (id, receipt))
            .collect();
        release(self.client, &self.queue.url, &held).await
    }
}

/// Makes `(id, receipt)` messages visible again (visibility 0) in batches of
/// 10; returns how many failed.
pub(crate) async fn release(client: &Client, url: &str, held: &[(String, String)]) -> usize {
    change_visibility(client, url, held, 0).await
}

/// Sets the visibility timeout of `(id, receipt)` messages in batches of 10;
/// returns how many failed.
async fn change_visibility(
    client: &Client,
    url: &str,
    held: &[(String, String)],
    seconds: i32,
) -> usize {
    let mut failed = 0;
    for chunk in held.chunks(10) {
        let entries = chunk.iter().enumerate().filter_map(|(i, (_, receipt))| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(receipt)
                .visibility_timeout(seconds)
                .build()
                .ok()
        });
        match client
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries.collect()))
            .send()
            .await
        {
            Ok(out) => failed += out.failed().len(),
            Err(_) => failed += chunk.len(),
        }
    }
    failed
}

fn convert(m: &aws_sdk_sqs::types::Message) -> Option<Received> {
    let sys = m.attributes();
    let get = |k: MessageSystemAttributeName| sys.and_then(|a| a.get(&k)).cloned();
    Some(Received {
        id: m.message_id()?.to_owned(),
        receipt: m.receipt_handle()?.to_owned(),
        body: m.body().unwrap_or_default().to_owned(),
        attributes: m.message_attributes().cloned().unwrap_or_default(),
        receive_count: get(MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        sent_at_ms: get(MessageSystemAttributeName::SentTimestamp).and_then(|v| v.parse().ok()),
        group_id: get(MessageSystemAttributeName::MessageGroupId),
        sqs_source_arn: get(MessageSystemAttributeName::DeadLetterQueueSourceArn),
    })
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
