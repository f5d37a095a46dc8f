//! A run: start-up checks, the stages wired together, and shutdown.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use aws_sdk_sqs::config::BehaviorVersion;
use aws_sdk_sqs::types::QueueAttributeName;
use backon::Retryable;
use sqs_worker_core::config::var;
use sqs_worker_core::flow::{CircuitBreaker, parse_max_receive_count};
use sqs_worker_core::runner::Processor;
use sqs_worker_sqs::RequestCounter;
use sqs_worker_sqs::classify::{classify, describe, settle_backoff};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::clients::Clients;
use crate::config::{Queue, Settings, Signal};
use crate::error::{PollerError, fatal};
use crate::fifo::Groups;
use crate::handoff::Handoff;
use crate::inflight::InFlight;
use crate::receive::Receiver;
use crate::settle::{Acker, DeadLetter, Job};
use crate::stats::{Activity, RunSummary, Stats};
use crate::stop::stopped;

/// A configured long-poll consumer; [`run`](Self::run) it. Built with
/// [`Poller::builder`], [`Poller::with_processor`] or [`Poller::from_env`].
pub struct Poller<P> {
    settings: Settings,
    processor: P,
    client: Option<aws_sdk_sqs::Client>,
    shutdown: Option<Signal>,
}

impl<P> std::fmt::Debug for Poller<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What the start-up check learned about the queue.
struct QueueFacts {
    url: String,
    arn: String,
    visibility: Duration,
    max_receive_count: Option<u32>,
    /// The redrive policy's `deadLetterTargetArn`.
    redrive_target: Option<String>,
}

fn queue_name(url: &str) -> String {
    url.rsplit('/').next().unwrap_or(url).to_owned()
}

impl<P: Processor> Poller<P> {
    pub(crate) fn new(
        settings: Settings,
        processor: P,
        client: Option<aws_sdk_sqs::Client>,
        shutdown: Option<Signal>,
    ) -> Self {
        Self {
            settings,
            processor,
            client,
            shutdown,
        }
    }

    #[cfg(test)]
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Polls until the shutdown signal (or idle exit), then shuts down
    /// gracefully: stops receiving (a receive in flight is let finish, at
    /// most the wait time, and what it brings is released at once), lets
    /// in-flight messages finish within the grace period (counted from the
    /// signal), makes the rest visible again, flushes every pending delete
    /// and visibility change. Returns what it did.
    ///
    /// Fails at start-up when the queue does not exist, access is refused or
    /// credentials are missing (the error names the queue), and later only
    /// on a receive error no retry can fix; transient SQS errors, the
    /// queue's in-flight limit and credentials failing after the first
    /// successful receive are retried with backoff and logged.
    pub async fn run(self) -> Result<RunSummary, PollerError> {
        let started = Instant::now();
        let Self {
            settings: s,
            processor,
            client,
            shutdown,
        } = self;
        let shutdown = match shutdown {
            Some(signal) => signal,
            None => default_signal()?,
        };
        let base = match client {
            Some(c) => c,
            None => aws_sdk_sqs::Client::new(
                &aws_config::load_defaults(BehaviorVersion::latest()).await,
            ),
        };
        let requests = RequestCounter::default();
        let clients = Clients::new(&base, s.wait_time, &requests);
        let start = start_up(&clients.settle, &s).await?;
        let stages = Stages::wire(&s, &clients, &start);
        let mut helpers = stages.helpers(&s, shutdown, &requests, started);
        let (receiving, error) = stages
            .receive_until_stopped(&s, &clients, &start, processor)
            .await;
        let stats = stages.stats.clone();
        stages.wind_down(&s, receiving).await;
        helpers.abort_all();
        let summary = stats.snapshot(requests.get(), started.elapsed());
        tracing::info!(%summary, "poller stopped");
        if s.stats_interval.is_some() {
            crate::monitor::log_stats(&summary, "final");
        }
        match error {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }
}

/// What start-up learned and decided.
struct Start {
    facts: QueueFacts,
    visibility: Duration,
    heartbeat: Duration,
    dead_letter: Option<Arc<DeadLetter>>,
    /// Where a FIFO group's exhausted head goes (see [`crate::fifo`]).
    fifo_dead_letter: Option<Arc<DeadLetter>>,
}

/// Start-up checks: the queue (and dead-letter queue) exist and answer; the
/// visibility timeout and heartbeat in force.
async fn start_up(client: &aws_sdk_sqs::Client, s: &Settings) -> Result<Start, PollerError> {
    let facts = check_queue(client, s).await?;
    let (visibility, heartbeat) = crate::env::lease_timing(s, facts.visibility)?;
    crate::env::apply_retry_budget(s, facts.max_receive_count);
    let stop_timeout = std::env::var(var::ECS_CONTAINER_STOP_TIMEOUT).ok();
    if let Some(w) = crate::env::stop_timeout_warning(s.grace_period, stop_timeout.as_deref()) {
        tracing::warn!("{w}");
    }
    let dead_letter = match &s.dead_letter_queue {
        Some(dlq) => Some(Arc::new(DeadLetter {
            queue: crate::redrive::check_dead_letter_queue(client, dlq, &facts.url).await?,
            source_arn: facts.arn.clone(),
        })),
        None => None,
    };
    let fifo_dead_letter = match (&dead_letter, &facts.redrive_target) {
        (Some(d), _) => Some(d.clone()),
        (None, Some(arn)) if facts.url.ends_with(".fifo") => {
            crate::redrive::redrive_dead_letter(client, arn, &facts.url, &facts.arn).await
        }
        _ => None,
    };
    tracing::info!(
        queue = %facts.url,
        concurrency = s.concurrency,
        receivers = s.receivers,
        visibility_timeout_s = visibility.as_secs(),
        heartbeat_ms = heartbeat.as_millis() as u64,
        dead_letter_queue = s.dead_letter_queue.as_deref(),
        "poller started"
    );
    Ok(Start {
        facts,
        visibility,
        heartbeat,
        dead_letter,
        fifo_dead_letter,
    })
}

/// What the receive loops leave when they stop.
struct Receiving {
    /// Their batch tasks still running.
    batches: Vec<JoinSet<()>>,
    /// When receiving was told to stop.
    stopped_at: tokio::time::Instant,
}

/// The stages of a run, wired together: the in-flight table and its
/// heartbeat, settlement, and the stop signal.
struct Stages {
    /// Handler slots (the concurrency).
    slots: Arc<Semaphore>,
    /// Received and not yet settled ([`crate::ahead::lease_bound`]).
    leases: Arc<Semaphore>,
    ahead: Option<Arc<crate::ahead::Ahead>>,
    stats: Arc<Stats>,
    inflight: Arc<InFlight>,
    activity: Arc<Activity>,
    handoff: Arc<Handoff>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    heartbeat_stop: watch::Sender<bool>,
    heartbeat_task: JoinHandle<()>,
    acker_task: JoinHandle<()>,
}

impl Stages {
    fn wire(s: &Settings, clients: &Clients, start: &Start) -> Self {
        let stats = Arc::new(Stats::default());
        let inflight = Arc::new(InFlight {
            table: Default::default(),
            gate: Default::default(),
            client: clients.settle.clone(),
            queue_url: start.facts.url.clone(),
            stats: stats.clone(),
            extension: start.visibility,
            heartbeat: start.heartbeat,
            max_processing: s.max_processing_time,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let (heartbeat_stop, heartbeat_rx) = watch::channel(false);
        let heartbeat_task = tokio::spawn(inflight.clone().heartbeat(heartbeat_rx));
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let acker = Arc::new(Acker {
            inflight: inflight.clone(),
            dead_letter: start.dead_letter.clone(),
            flush_interval: s.flush_interval,
        });
        let acker_task = tokio::spawn(acker.run(settle_rx));
        let activity = Arc::new(Activity::new());
        let slots = Arc::new(Semaphore::new(s.concurrency));
        let ahead = crate::ahead::enabled(s, &start.facts.url)
            .then(|| Arc::new(crate::ahead::Ahead::new(s, slots.clone(), start.visibility)));
        let leases = Arc::new(Semaphore::new(crate::ahead::lease_bound(
            s,
            ahead.is_some(),
        )));
        let handoff = Arc::new(Handoff {
            inflight: inflight.clone(),
            activity: activity.clone(),
            settle: settle_tx,
            dead_letter: s.dead_letter_queue.is_some(),
            groups: crate::tenant::limit(s, &start.facts.url, start.facts.max_receive_count),
            ahead: ahead.clone(),
        });
        Self {
            slots,
            leases,
            ahead,
            stats,
            inflight,
            activity,
            handoff,
            stop_tx,
            stop_rx,
            heartbeat_stop,
            heartbeat_task,
            acker_task,
        }
    }

    /// The shutdown signal's watcher, idle exit and the stats logger.
    fn helpers(
        &self,
        s: &Settings,
        shutdown: Signal,
        requests: &RequestCounter,
        started: Instant,
    ) -> JoinSet<()> {
        let mut helpers = JoinSet::new();
        let stop_tx = self.stop_tx.clone();
        helpers.spawn(async move {
            shutdown.await;
            tracing::info!("shutdown signal received: stopping receives");
            let _ = stop_tx.send(true);
        });
        if let Some(idle) = s.idle_exit {
            helpers.spawn(crate::monitor::idle_monitor(
                idle,
                self.inflight.clone(),
                self.activity.clone(),
                self.stop_tx.clone(),
            ));
        }
        if let Some(protection) = &s.scale_in_protection {
            helpers.spawn(crate::protection::protect(
                protection.clone(),
                self.inflight.clone(),
                self.activity.clone(),
                self.stop_rx.clone(),
            ));
        }
        if let Some(every) = s.stats_interval {
            helpers.spawn(crate::monitor::stats_logger(
                every,
                self.stats.clone(),
                requests.clone(),
                started,
                self.stop_rx.clone(),
            ));
        }
        helpers
    }

    /// Runs the receive loops until they stop (signal, idle exit, or an
    /// error no retry fixes); returns their batch tasks still running and
    /// the first error. A loop stopping lets its receive in flight finish.
    async fn receive_until_stopped<P: Processor>(
        &self,
        s: &Settings,
        clients: &Clients,
        start: &Start,
        processor: P,
    ) -> (Receiving, Option<PollerError>) {
        let url = &start.facts.url;
        let backlog = Arc::new(watch::channel(false).0);
        let started = Arc::new(AtomicBool::new(false));
        let breaker = s.breaker.map(|c| Arc::new(CircuitBreaker::new(c)));
        let limits = crate::limits::Limits::new(s, &self.slots);
        let groups = Arc::new(Groups {
            handoff: self.handoff.clone(),
            breaker: breaker.clone(),
            adaptive: limits.adaptive.clone(),
            dead_letter: start.fifo_dead_letter.clone(),
            max_receive_count: start.facts.max_receive_count,
            control: self.inflight.control(),
            queue_url: url.as_str().into(),
        });
        let mut loops = JoinSet::new();
        for i in 0..s.receivers {
            let receiver = Receiver {
                client: clients.receive.clone(),
                queue_url: url.as_str().into(),
                queue_name: queue_name(url),
                processor: processor.clone(),
                slots: self.slots.clone(),
                leases: self.leases.clone(),
                ahead: self.ahead.clone(),
                inflight: self.inflight.clone(),
                control: self.inflight.control(),
                handoff: self.handoff.clone(),
                activity: self.activity.clone(),
                max_messages: s.max_messages,
                // With idle exit, an empty queue must answer within about
                // the idle time.
                wait_seconds: match s.idle_exit {
                    Some(idle) => s.wait_time.min(idle.max(Duration::from_secs(1))),
                    None => s.wait_time,
                }
                .as_secs() as i32,
                visibility_override: s.visibility_timeout.map(|v| v.as_secs_f64().ceil() as i32),
                visibility: start.visibility,
                primary: i == 0,
                backlog: backlog.clone(),
                concurrency: s.concurrency,
                stop_wait: s.grace_period,
                started: started.clone(),
                attempt_prefix: url.ends_with(".fifo").then(|| attempt_prefix(i)),
                breaker: breaker.clone(),
                groups: groups.clone(),
                limits: limits.clone(),
            };
            loops.spawn(receiver.run(self.stop_rx.clone()));
        }
        if let Some(ahead) = &self.ahead {
            let starter = crate::ahead::Starter {
                ahead: ahead.clone(),
                processor: processor.clone(),
                groups: groups.clone(),
                handoff: self.handoff.clone(),
                queue_name: queue_name(url),
                queue_url: url.as_str().into(),
            };
            loops.spawn(starter.run(self.stop_rx.clone()));
        }
        let mut error = None;
        let mut batches = Vec::new();
        // The grace period counts from the stop, not from the end of the
        // receives still in flight then.
        let mut stop = self.stop_rx.clone();
        let mut stopped_at = None;
        loop {
            let joined = tokio::select! {
                () = stopped(&mut stop), if stopped_at.is_none() => {
                    stopped_at = Some(tokio::time::Instant::now());
                    continue;
                }
                joined = loops.join_next() => joined,
            };
            let Some(joined) = joined else { break };
            match joined {
                Ok((set, err)) => {
                    batches.push(set);
                    if let Some(e) = err {
                        let _ = self.stop_tx.send(true);
                        error.get_or_insert(e);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "a receive loop panicked");
                    let _ = self.stop_tx.send(true);
                }
            }
        }
        let _ = self.stop_tx.send(true);
        let stopped_at = stopped_at.unwrap_or_else(tokio::time::Instant::now);
        (
            Receiving {
                batches,
                stopped_at,
            },
            error,
        )
    }

    /// Lets in-flight messages finish within the grace period, releases the
    /// rest (visibility 0), and waits for settlement to flush.
    async fn wind_down(self, s: &Settings, receiving: Receiving) {
        let Receiving {
            mut batches,
            stopped_at,
        } = receiving;
        let grace_end = stopped_at + s.grace_period;
        let mut timed_out = false;
        for set in &mut batches {
            while !timed_out {
                match tokio::time::timeout_at(grace_end, set.join_next()).await {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => timed_out = true,
                }
            }
        }
        if timed_out {
            tracing::warn!(
                grace_ms = s.grace_period.as_millis() as u64,
                in_flight = self.inflight.len(),
                "grace period over: stopping the handlers still running"
            );
        }
        for mut set in batches {
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
        // Whatever was received and not settled (stopped, or never started)
        // becomes visible again at once.
        self.heartbeat_stop.send(true).ok();
        let _ = self.heartbeat_task.await;
        let leftovers = self.inflight.drain();
        if !leftovers.is_empty() {
            tracing::info!(
                messages = leftovers.len(),
                "releasing unfinished messages (visibility 0)"
            );
            let (tx, rx) = mpsc::unbounded_channel();
            for e in leftovers {
                let job = Job::Release {
                    message: e.message.clone(),
                    delay: Duration::ZERO,
                    received: e.received,
                    retry: false,
                };
                let _ = tx.send((job, e.lease));
            }
            drop(tx);
            // The main acker may still be flushing; a second one releases
            // these. Every job is queued already: a short flush interval
            // lets it send them in batches of ten, not one call per pair.
            let release = Arc::new(Acker {
                inflight: self.inflight.clone(),
                dead_letter: None,
                flush_interval: RELEASE_FLUSH,
            });
            release.run(rx).await;
        }
        drop(self.handoff);
        let _ = self.acker_task.await;
    }
}

/// The release acker's flush interval at shutdown (its jobs are all queued
/// before it starts).
const RELEASE_FLUSH: Duration = Duration::from_millis(20);

/// A prefix unique to this process and receive loop for FIFO
/// `ReceiveRequestAttemptId`s (at most 128 characters: letters, digits, `-`).
fn attempt_prefix(receiver: usize) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("sqs-worker-{}-{nanos}-{receiver}", std::process::id())
}

/// SIGTERM or SIGINT.
fn default_signal() -> Result<Signal, PollerError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(PollerError::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(PollerError::Signal)?;
        Ok(Box::pin(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }))
    }
    #[cfg(not(unix))]
    {
        Ok(Box::pin(async {
            let _ = tokio::signal::ctrl_c().await;
        }))
    }
}

async fn check_queue(
    client: &aws_sdk_sqs::Client,
    s: &Settings,
) -> Result<QueueFacts, PollerError> {
    let url = match &s.queue {
        Queue::Url(u) => u.clone(),
        Queue::Name(name) => {
            let out = (|| client.get_queue_url().queue_name(name).send())
                .retry(settle_backoff().with_max_times(5))
                .when(|e| classify(e).is_transient())
                .notify(|e, d| tracing::warn!(error = %describe(e), retry_in = ?d, "GetQueueUrl failed; retrying"))
                .await
                .map_err(|e| fatal(&e, name, "GetQueueUrl"))?;
            out.queue_url.ok_or_else(|| PollerError::QueueNotFound {
                queue: name.clone(),
                source: "GetQueueUrl returned no URL".into(),
            })?
        }
    };
    let out = (|| {
        client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::All)
            .send()
    })
    .retry(settle_backoff().with_max_times(5))
    .when(|e| classify(e).is_transient())
    .notify(|e, d| tracing::warn!(error = %describe(e), retry_in = ?d, "GetQueueAttributes failed; retrying"))
    .await
    .map_err(|e| fatal(&e, &url, "GetQueueAttributes"))?;
    let attrs = out.attributes.unwrap_or_default();
    let visibility = attrs
        .get(&QueueAttributeName::VisibilityTimeout)
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Duration::from_secs(30), Duration::from_secs);
    let fifo = attrs
        .get(&QueueAttributeName::FifoQueue)
        .is_some_and(|v| v == "true");
    let redrive = attrs.get(&QueueAttributeName::RedrivePolicy);
    match (redrive, &s.dead_letter_queue) {
        (None, None) => tracing::warn!(
            queue = %url,
            "the queue has no redrive policy and no dead-letter queue is configured: a message \
             that always fails is retried until its retention period ends"
        ),
        (None, Some(dlq)) => tracing::warn!(
            queue = %url,
            dead_letter_queue = %dlq,
            "a dead-letter queue is configured but the queue has no redrive policy: a message \
             whose dead-letter send fails for good is retried after its retry delay until its \
             retention period ends"
        ),
        _ => {}
    }
    let arn = attrs
        .get(&QueueAttributeName::QueueArn)
        .cloned()
        .unwrap_or_default();
    if let Some(dlq) = &s.dead_letter_queue
        && fifo != dlq.ends_with(".fifo")
    {
        tracing::warn!(queue = %url, dead_letter_queue = %dlq, "the dead-letter queue's type (FIFO or standard) differs from the queue's: dead-letter sends will fail");
    }
    if let Some(v) = s.visibility_timeout
        && v < visibility / 4
    {
        tracing::warn!(
            configured_s = v.as_secs(),
            queue_s = visibility.as_secs(),
            "the configured visibility timeout is far below the queue's; extensions will be frequent"
        );
    }
    let max_receive_count = redrive.and_then(|r| parse_max_receive_count(r));
    let redrive_target = redrive.and_then(|r| crate::redrive::dead_letter_target_arn(r));
    Ok(QueueFacts {
        url,
        arn,
        visibility,
        max_receive_count,
        redrive_target,
    })
}
