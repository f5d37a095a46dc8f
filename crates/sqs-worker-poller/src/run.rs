//! A run: start-up checks, the stages wired together, and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::config::BehaviorVersion;
use aws_sdk_sqs::types::QueueAttributeName;
use backon::Retryable;
use sqs_worker_core::config::{ConfigError, var};
use sqs_worker_core::runner::Processor;
use sqs_worker_sqs::RequestCounter;
use sqs_worker_sqs::classify::{classify, describe, settle_backoff};
use sqs_worker_sqs::dead_letter::{DEFAULT_MAX_MESSAGE_SIZE, DeadLetterQueue};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::clients::Clients;
use crate::config::{Queue, Settings, Signal};
use crate::error::PollerError;
use crate::error::fatal;
use crate::lease::Leases;
use crate::receive::{Activity, Receiver};
use crate::settle::{Acker, DeadLetter, Job};
use crate::stats::{RunSummary, Stats};

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
    /// gracefully: stops receiving, lets in-flight messages finish within the
    /// grace period, makes the rest visible again, flushes every pending
    /// delete and visibility change. Returns what it did.
    ///
    /// Fails at start-up when the queue does not exist or access is refused
    /// (the error names the queue), and later only on a non-transient receive
    /// error; transient SQS errors are retried with backoff and logged.
    pub async fn run(self) -> Result<RunSummary, PollerError> {
        let started = Instant::now();
        let s = self.settings;
        let shutdown = match self.shutdown {
            Some(signal) => signal,
            None => default_signal()?,
        };
        let base = match self.client {
            Some(c) => c,
            None => aws_sdk_sqs::Client::new(
                &aws_config::load_defaults(BehaviorVersion::latest()).await,
            ),
        };
        let requests = RequestCounter::default();
        let clients = Clients::new(&base, s.wait_time, &requests);
        let facts = check_queue(&clients.settle, &s).await?;
        let (visibility, heartbeat) = crate::env::lease_timing(&s, facts.visibility)?;
        let stop_timeout = std::env::var(var::ECS_CONTAINER_STOP_TIMEOUT).ok();
        if let Some(w) = crate::env::stop_timeout_warning(s.grace_period, stop_timeout.as_deref()) {
            tracing::warn!("{w}");
        }
        let dead_letter = match &s.dead_letter_queue {
            Some(dlq) => Some(Arc::new(DeadLetter {
                queue: check_dead_letter_queue(&clients.settle, dlq, &facts.url).await?,
                source_arn: facts.arn.clone(),
            })),
            None => None,
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

        let stats = Arc::new(Stats::default());
        let leases = Arc::new(Leases {
            table: Default::default(),
            gate: Default::default(),
            client: clients.settle.clone(),
            queue_url: facts.url.clone(),
            stats: stats.clone(),
            extension: visibility,
            heartbeat,
            max_processing: s.max_processing_time,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let (heartbeat_stop_tx, heartbeat_stop) = watch::channel(false);
        let heartbeat_task = tokio::spawn(leases.clone().heartbeat(heartbeat_stop.clone()));
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let acker = Arc::new(Acker {
            leases: leases.clone(),
            dead_letter,
            flush_interval: s.flush_interval,
        });
        let acker_task = tokio::spawn(acker.run(settle_rx));
        let activity = Arc::new(Activity::new());
        let mut helpers = JoinSet::new();
        {
            let stop_tx = stop_tx.clone();
            helpers.spawn(async move {
                shutdown.await;
                tracing::info!("shutdown signal received: stopping receives");
                let _ = stop_tx.send(true);
            });
        }
        if let Some(idle) = s.idle_exit {
            helpers.spawn(idle_monitor(
                idle,
                leases.clone(),
                activity.clone(),
                stop_tx.clone(),
            ));
        }
        if let Some(every) = s.stats_interval {
            helpers.spawn(stats_logger(
                every,
                stats.clone(),
                requests.clone(),
                started,
                stop_rx.clone(),
            ));
        }

        let capacity = Arc::new(Semaphore::new(s.concurrency));
        let mut loops = JoinSet::new();
        let backlog = Arc::new(watch::channel(false).0);
        for i in 0..s.receivers {
            let receiver = Receiver {
                client: clients.receive.clone(),
                queue_url: facts.url.as_str().into(),
                queue_name: queue_name(&facts.url),
                processor: self.processor.clone(),
                capacity: capacity.clone(),
                leases: leases.clone(),
                control: leases.control(),
                settle: settle_tx.clone(),
                activity: activity.clone(),
                max_messages: s.max_messages,
                // With idle exit, an empty queue must answer within about
                // the idle time.
                wait_seconds: match s.idle_exit {
                    Some(idle) => s.wait_time.min(idle.max(Duration::from_secs(1))),
                    None => s.wait_time,
                }
                .as_secs() as i32,
                visibility_override: s.visibility_timeout.map(|v| v.as_secs_f64().ceil() as i32),
                visibility,
                dead_letter: s.dead_letter_queue.is_some(),
                primary: i == 0,
                backlog: backlog.clone(),
                concurrency: s.concurrency,
            };
            loops.spawn(receiver.run(stop_rx.clone()));
        }
        drop(settle_tx);

        // Receiving ends on the signal, idle exit, or a non-transient error.
        let mut error = None;
        let mut batches = Vec::new();
        while let Some(joined) = loops.join_next().await {
            match joined {
                Ok((set, err)) => {
                    batches.push(set);
                    if let Some(e) = err {
                        let _ = stop_tx.send(true);
                        error.get_or_insert(e);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "a receive loop panicked");
                    let _ = stop_tx.send(true);
                }
            }
        }
        let _ = stop_tx.send(true);

        // Let in-flight messages finish within the grace period.
        let grace_end = tokio::time::Instant::now() + s.grace_period;
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
                in_flight = leases.len(),
                "grace period over: stopping the handlers still running"
            );
        }
        for mut set in batches {
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
        // Whatever was received and not settled (stopped, or never started)
        // becomes visible again at once.
        heartbeat_stop_tx.send(true).ok();
        let _ = heartbeat_task.await;
        let leftovers = leases.drain();
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
                let _ = tx.send(job);
            }
            drop(tx);
            // The main acker may still be flushing; a second one releases these.
            let release = Arc::new(Acker {
                leases: leases.clone(),
                dead_letter: None,
                flush_interval: Duration::ZERO,
            });
            release.run(rx).await;
        }
        let _ = acker_task.await;
        helpers.abort_all();
        let summary = stats.snapshot(requests.get(), started.elapsed());
        tracing::info!(%summary, "poller stopped");
        if s.stats_interval.is_some() {
            log_stats(&summary, "final");
        }
        match error {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }
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
    Ok(QueueFacts {
        url,
        arn,
        visibility,
    })
}

async fn check_dead_letter_queue(
    client: &aws_sdk_sqs::Client,
    dlq: &str,
    queue: &str,
) -> Result<DeadLetterQueue, PollerError> {
    if dlq == queue {
        return Err(ConfigError::invalid("dead_letter_queue", "is the queue being polled").into());
    }
    let out = (|| {
        client
            .get_queue_attributes()
            .queue_url(dlq)
            .attribute_names(QueueAttributeName::MaximumMessageSize)
            .send()
    })
    .retry(settle_backoff().with_max_times(5))
    .when(|e| classify(e).is_transient())
    .await
    .map_err(|e| fatal(&e, dlq, "GetQueueAttributes"))?;
    // The dead-letter send keeps each message within the DLQ's own limit.
    let max_message_size = out
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::MaximumMessageSize))
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE);
    Ok(DeadLetterQueue {
        url: dlq.to_owned(),
        max_message_size,
    })
}

async fn idle_monitor(
    idle: Duration,
    leases: Arc<Leases>,
    activity: Arc<Activity>,
    stop: watch::Sender<bool>,
) {
    let tick = (idle / 4).clamp(Duration::from_millis(20), Duration::from_millis(500));
    loop {
        tokio::time::sleep(tick).await;
        if leases.len() == 0 && activity.idle_for().is_some_and(|t| t >= idle) {
            tracing::info!(idle_ms = idle.as_millis() as u64, "queue idle: stopping");
            let _ = stop.send(true);
            return;
        }
    }
}

async fn stats_logger(
    every: Duration,
    stats: Arc<Stats>,
    requests: RequestCounter,
    started: Instant,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = crate::receive::stopped(&mut stop) => return,
            _ = tick.tick() => {}
        }
        let s = stats.snapshot(requests.get(), started.elapsed());
        log_stats(&s, "progress");
    }
}

fn log_stats(s: &RunSummary, what: &'static str) {
    tracing::info!(
        target: "sqs_worker_poller::stats",
        received = s.received,
        succeeded = s.succeeded,
        failed = s.failed,
        retried = s.retried,
        dead_lettered = s.dead_lettered,
        released = s.released,
        in_flight = s.in_flight,
        extensions = s.extensions,
        settlement_failures = s.settlement_failures,
        sdk_errors = s.sdk_errors,
        requests = s.requests,
        elapsed_ms = s.elapsed.as_millis() as u64,
        "{what}"
    );
}
