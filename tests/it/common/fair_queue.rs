//! An SQS fair queue imitated in front of the local server, which has no
//! fair-queue dequeuing: moto serves a standard queue's oldest visible
//! messages first, whoever sent them.
//!
//! What it imitates (SQS Developer Guide, "How Amazon SQS fair queues
//! work"): "Each message without a `MessageGroupId` is treated as belonging
//! to its own distinct tenant." Detection looks at the "Concurrency share —
//! the tenant's in-flight messages as a fraction of all in-flight messages
//! in the queue" and the "Processing time share — the tenant's recent share
//! of total consumer processing time". Then: "Once a tenant is detected as a
//! noisy neighbor, Amazon SQS prioritizes delivering messages from quiet
//! tenants. Consumer instances polling for messages receive messages from
//! quiet tenants whenever quiet-tenant messages are available." "Noisy
//! neighbor messages are not dropped or throttled. […] When no quiet-tenant
//! messages are waiting, consumer instances receive noisy neighbor messages
//! as usual." "If multiple tenants are detected as noisy neighbors
//! simultaneously, consumer instances receive messages from the noisy tenant
//! with the fewest in-flight messages first."
//!
//! How: on each `ReceiveMessage` for `k` messages, the proxy scans the
//! queue's visible messages (up to [`MAX_SCAN_RECEIVES`] receives of 10 with
//! the client's visibility timeout, each holding what it got invisible so
//! that the next gets the following ones), hands the client up to `k` of
//! them, chosen one at a time from the tenant with the fewest messages in
//! flight (counting those already chosen), oldest first among equals, and
//! makes the rest visible again at once (`ChangeMessageVisibilityBatch` to
//! 0, sent by the proxy itself) before the next scan starts. "In flight" is
//! SQS's own sense, tracked through the proxy: handed to the client and
//! neither deleted nor past its visibility timeout
//! (`ChangeMessageVisibility(Batch)` moves the deadline; 0 ends the
//! flight). A long poll that finds nothing scans again every [`RESCAN`]
//! until its wait time is over.
//!
//! Each client receive costs a scan: about one local receive per 10
//! visible messages and one release call per 10 passed over (45 and 44 for
//! a backlog of 450).
//!
//! Simplified: the documented thresholds (more than 10 % of the in-flight
//! messages and at least 30 of them, or more than 10 % of the recent
//! processing time) are not modelled: a tenant counts as the noisier the
//! more messages it has in flight, so one with nothing in flight (a quiet
//! one) always comes before one with messages in flight; with a handful of
//! tenants each running several messages, each of them is past the 10 %
//! processing-time threshold anyway. A tenant's recent processing time is forgotten as soon as its
//! messages settle. The scans are receives on the local server: the proxy
//! reports the client's own receives in `ApproximateReceiveCount`, but moto
//! counts every scan, so do not use it on a queue with a redrive policy.
//! Standard queues only: a FIFO queue's receives are forwarded unchanged.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::sqs_proxy::{self, Request, SqsProxy, Verdict};

/// At most this many receives of 10 per client receive: the first 500
/// visible messages are considered, and a quiet tenant's messages behind a
/// longer visible backlog are not found (SQS has no such limit). A scan
/// stops earlier at the end of the visible messages, or once it has seen
/// `k` tenants with nothing in flight.
pub const MAX_SCAN_RECEIVES: usize = 50;

/// How often a long poll that found nothing looks again.
pub const RESCAN: Duration = Duration::from_millis(50);

/// The imitation's state, shared by the proxy's connections.
pub struct FairQueue {
    upstream: String,
    book: Mutex<Book>,
    /// One scan at a time: a scan holds what it passes over invisible.
    scanning: tokio::sync::Mutex<()>,
    /// Each queue's own visibility timeout (seconds), for receives without one.
    visibility: Mutex<HashMap<String, u64>>,
    /// Receives from the client.
    pub client_receives: AtomicU64,
    /// Receives the proxy made on the local server while scanning.
    pub scan_receives: AtomicU64,
    /// Messages handed to the client.
    pub handed_out: AtomicU64,
    /// Messages scanned, not chosen, and made visible again.
    pub passed_over: AtomicU64,
}

/// A message handed to the client, until it settles or its visibility
/// timeout ends.
struct Flight {
    tenant: String,
    until: Instant,
}

/// Messages in flight, by message id, and the receipt handles they were
/// handed out with.
#[derive(Default)]
struct Book {
    flights: HashMap<String, Flight>,
    handles: HashMap<String, String>,
    /// The client's receives of each message (not the proxy's scans).
    receives: HashMap<String, u64>,
}

impl Book {
    /// Each tenant's messages in flight now (forgetting those whose
    /// visibility timeout has ended).
    fn in_flight(&mut self) -> HashMap<String, usize> {
        let now = Instant::now();
        self.flights.retain(|_, f| f.until > now);
        let mut n = HashMap::new();
        for f in self.flights.values() {
            *n.entry(f.tenant.clone()).or_default() += 1;
        }
        n
    }

    /// A settlement through the proxy: deleted (`None`) or a new visibility
    /// timeout in seconds (0 ends the flight).
    fn settle(&mut self, handle: &str, visibility: Option<u64>) {
        let Some(id) = self.handles.get(handle).cloned() else {
            return;
        };
        match visibility {
            Some(s) if s > 0 => {
                if let Some(f) = self.flights.get_mut(&id) {
                    f.until = Instant::now() + Duration::from_secs(s);
                }
            }
            _ => {
                self.flights.remove(&id);
                if visibility.is_none() {
                    self.handles.remove(handle);
                }
            }
        }
    }
}

/// A message's tenant: its group id, or itself without one.
fn tenant(m: &Value) -> String {
    match m["Attributes"]["MessageGroupId"].as_str() {
        Some(g) => format!("group {g}"),
        None => format!("message {}", m["MessageId"].as_str().unwrap_or_default()),
    }
}

/// Chooses `k` of `seen` (oldest first): each time, the oldest message of
/// the tenant with the fewest in flight, counting those already chosen.
/// Returns the chosen and the rest, each in their original order.
fn choose(
    seen: Vec<Value>,
    in_flight: &HashMap<String, usize>,
    k: usize,
) -> (Vec<Value>, Vec<Value>) {
    let tenants: Vec<String> = seen.iter().map(tenant).collect();
    let mut counts = in_flight.clone();
    let mut chosen = vec![false; seen.len()];
    for _ in 0..k.min(seen.len()) {
        let best = (0..seen.len())
            .filter(|&i| !chosen[i])
            .min_by_key(|&i| (counts.get(&tenants[i]).copied().unwrap_or(0), i))
            .unwrap();
        chosen[best] = true;
        *counts.entry(tenants[best].clone()).or_default() += 1;
    }
    let (mut picked, mut rest) = (Vec::new(), Vec::new());
    for (m, c) in seen.into_iter().zip(chosen) {
        if c { picked.push(m) } else { rest.push(m) }
    }
    (picked, rest)
}

impl FairQueue {
    /// Starts a proxy to `upstream` (`http://HOST:PORT`) whose standard
    /// queues behave as fair queues; give the client `proxy.endpoint`.
    pub async fn start(upstream: &str) -> (SqsProxy, Arc<FairQueue>) {
        let fair = Arc::new(FairQueue {
            upstream: upstream.to_owned(),
            book: Mutex::default(),
            scanning: tokio::sync::Mutex::new(()),
            visibility: Mutex::default(),
            client_receives: AtomicU64::new(0),
            scan_receives: AtomicU64::new(0),
            handed_out: AtomicU64::new(0),
            passed_over: AtomicU64::new(0),
        });
        let (f, g) = (fair.clone(), fair.clone());
        let proxy = SqsProxy::start(
            upstream,
            move |req| {
                let fifo = req.body["QueueUrl"]
                    .as_str()
                    .unwrap_or_default()
                    .ends_with(".fifo");
                if req.action == "ReceiveMessage" && !fifo {
                    Verdict::Answer(Box::pin(f.clone().receive(req.clone())))
                } else {
                    Verdict::Forward
                }
            },
            move |req, body, _| g.observe(req, body),
        )
        .await;
        (proxy, fair)
    }

    /// A line for the test's output.
    pub fn figures(&self) -> String {
        format!(
            "client receives {}, scan receives {}, messages handed out {}, passed over {}",
            self.client_receives.load(Relaxed),
            self.scan_receives.load(Relaxed),
            self.handed_out.load(Relaxed),
            self.passed_over.load(Relaxed),
        )
    }

    /// Tracks the client's deletes and visibility changes that succeeded.
    fn observe(&self, req: &Request, body: &Value) {
        if body.get("__type").is_some() {
            return;
        }
        let mut book = self.book.lock().unwrap();
        let handle = |e: &Value| e["ReceiptHandle"].as_str().unwrap_or_default().to_owned();
        match req.action.as_str() {
            "DeleteMessage" => book.settle(&handle(&req.body), None),
            "ChangeMessageVisibility" => {
                book.settle(&handle(&req.body), req.body["VisibilityTimeout"].as_u64());
            }
            "DeleteMessageBatch" | "ChangeMessageVisibilityBatch" => {
                let ok: HashSet<&str> = body["Successful"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["Id"].as_str())
                    .collect();
                let deleting = req.action == "DeleteMessageBatch";
                for e in req.body["Entries"].as_array().into_iter().flatten() {
                    if ok.contains(e["Id"].as_str().unwrap_or_default()) {
                        let visibility = if deleting {
                            None
                        } else {
                            e["VisibilityTimeout"].as_u64()
                        };
                        book.settle(&handle(e), visibility);
                    }
                }
            }
            _ => {}
        }
    }

    /// Answers one client `ReceiveMessage`.
    async fn receive(self: Arc<Self>, req: Request) -> Option<Vec<u8>> {
        self.client_receives.fetch_add(1, Relaxed);
        let k = req.body["MaxNumberOfMessages"]
            .as_u64()
            .unwrap_or(1)
            .clamp(1, 10) as usize;
        let wait = Duration::from_secs(req.body["WaitTimeSeconds"].as_u64().unwrap_or(0));
        let visibility = match req.body["VisibilityTimeout"].as_u64() {
            Some(v) => v,
            None => self.queue_visibility(&req).await?,
        };
        let end = Instant::now() + wait;
        loop {
            let picked = self.receive_once(&req, k, visibility).await;
            if !picked.is_empty() {
                return Some(sqs_proxy::ok_response(&json!({ "Messages": picked })));
            }
            if Instant::now() + RESCAN >= end {
                return Some(sqs_proxy::ok_response(&json!({})));
            }
            tokio::time::sleep(RESCAN).await;
        }
    }

    /// The queue's own visibility timeout (asked once per queue).
    async fn queue_visibility(&self, req: &Request) -> Option<u64> {
        let url = req.body["QueueUrl"].as_str().unwrap_or_default().to_owned();
        if let Some(v) = self.visibility.lock().unwrap().get(&url) {
            return Some(*v);
        }
        let ask = json!({ "QueueUrl": url, "AttributeNames": ["VisibilityTimeout"] });
        let out = sqs_proxy::call(&self.upstream, req, "GetQueueAttributes", &ask).await?;
        let v = out["Attributes"]["VisibilityTimeout"]
            .as_str()?
            .parse()
            .ok()?;
        self.visibility.lock().unwrap().insert(url, v);
        Some(v)
    }

    /// One scan: what the client gets now (possibly nothing).
    async fn receive_once(&self, req: &Request, k: usize, visibility: u64) -> Vec<Value> {
        let _one_at_a_time = self.scanning.lock().await;
        let mut ask = req.body.clone();
        ask["MaxNumberOfMessages"] = json!(10);
        ask["WaitTimeSeconds"] = json!(0);
        ask["VisibilityTimeout"] = json!(visibility);
        let asked = |key: &str| {
            req.body[key]
                .as_array()
                .is_some_and(|names| names.iter().any(|n| n == "All" || n == "MessageGroupId"))
        };
        let add_group = !asked("MessageSystemAttributeNames") && !asked("AttributeNames");
        if add_group {
            let mut names = req.body["MessageSystemAttributeNames"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            names.push(json!("MessageGroupId"));
            ask["MessageSystemAttributeNames"] = json!(names);
        }
        let in_flight = self.book.lock().unwrap().in_flight();
        let mut seen: Vec<Value> = Vec::new();
        let mut quiet = HashSet::new();
        for _ in 0..MAX_SCAN_RECEIVES {
            let Some(out) = sqs_proxy::call(&self.upstream, req, "ReceiveMessage", &ask).await
            else {
                break;
            };
            self.scan_receives.fetch_add(1, Relaxed);
            let got = out["Messages"].as_array().cloned().unwrap_or_default();
            if got.is_empty() {
                break;
            }
            quiet.extend(
                got.iter()
                    .map(tenant)
                    .filter(|t| !in_flight.contains_key(t)),
            );
            seen.extend(got);
            if quiet.len() >= k {
                break; // k quiet tenants' oldest messages: nothing later comes first
            }
        }
        let (mut picked, rest) = choose(seen, &in_flight, k);
        self.release(req, &rest).await;
        let until = Instant::now() + Duration::from_secs(visibility);
        let mut book = self.book.lock().unwrap();
        for m in &mut picked {
            let id = m["MessageId"].as_str().unwrap_or_default().to_owned();
            let handle = m["ReceiptHandle"].as_str().unwrap_or_default().to_owned();
            let tenant = tenant(m);
            let receives = book.receives.entry(id.clone()).or_default();
            *receives += 1;
            let receives = *receives;
            if let Some(attributes) = m["Attributes"].as_object_mut() {
                if attributes.contains_key("ApproximateReceiveCount") {
                    attributes.insert(
                        "ApproximateReceiveCount".into(),
                        json!(receives.to_string()),
                    );
                }
                if add_group {
                    attributes.remove("MessageGroupId");
                }
            }
            book.flights.insert(id.clone(), Flight { tenant, until });
            book.handles.insert(handle, id);
        }
        self.handed_out.fetch_add(picked.len() as u64, Relaxed);
        self.passed_over.fetch_add(rest.len() as u64, Relaxed);
        picked
    }

    /// Makes `messages` visible again at once, 10 to a call, the calls at once.
    async fn release(&self, req: &Request, messages: &[Value]) {
        let mut calls = tokio::task::JoinSet::new();
        for chunk in messages.chunks(10) {
            let entries: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    json!({
                        "Id": i.to_string(),
                        "ReceiptHandle": m["ReceiptHandle"],
                        "VisibilityTimeout": 0,
                    })
                })
                .collect();
            let body = json!({ "QueueUrl": req.body["QueueUrl"], "Entries": entries });
            let (upstream, req) = (self.upstream.clone(), req.clone());
            calls.spawn(async move {
                sqs_proxy::call(&upstream, &req, "ChangeMessageVisibilityBatch", &body).await
            });
        }
        while calls.join_next().await.is_some() {}
    }
}
