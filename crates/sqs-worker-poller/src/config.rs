//! The poller's settings: builder methods, environment variables, validation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sqs_worker_core::config::{ConfigError, check_concurrency};
use sqs_worker_core::flow::{
    AdaptiveConcurrency, BreakerConfig, DEFAULT_RETRY_WINDOW, RateLimit, RetryBudget,
};
use sqs_worker_core::runner::{Engine, Processor};
use sqs_worker_core::{EngineConfig, Execution, IntoHandler, RetryPolicy};

use crate::protection::ScaleInProtection;
use crate::run::Poller;

/// The queue to poll: its URL, or its name (resolved with `GetQueueUrl` at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queue {
    /// A queue URL, e.g. `https://sqs.eu-west-1.amazonaws.com/123456789012/orders`.
    Url(String),
    /// A queue name, e.g. `orders` or `orders.fifo`.
    Name(String),
}

impl Queue {
    /// A queue URL, taken as is.
    pub fn url(url: impl Into<String>) -> Self {
        Self::Url(url.into())
    }

    /// A queue name, resolved with `GetQueueUrl` when the poller starts.
    pub fn name(name: impl Into<String>) -> Self {
        Self::Name(name.into())
    }

    /// The URL or name, for messages.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Url(s) | Self::Name(s) => s,
        }
    }
}

/// `http://…` and `https://…` are URLs, anything else a queue name.
impl From<&str> for Queue {
    fn from(s: &str) -> Self {
        Self::from(s.to_owned())
    }
}

impl From<String> for Queue {
    fn from(s: String) -> Self {
        if s.starts_with("https://") || s.starts_with("http://") {
            Self::Url(s)
        } else {
            Self::Name(s)
        }
    }
}

impl std::fmt::Display for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A future that resolves when the poller should shut down.
pub(crate) type Signal = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

type MakeProcessor<P> = Box<dyn FnOnce(EngineConfig) -> P + Send>;

/// The validated settings (see [`PollerBuilder`] for their meaning).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) queue: Queue,
    pub(crate) concurrency: usize,
    pub(crate) receivers: usize,
    pub(crate) wait_time: Duration,
    pub(crate) max_messages: usize,
    pub(crate) visibility_timeout: Option<Duration>,
    pub(crate) heartbeat_interval: Option<Duration>,
    pub(crate) max_processing_time: Duration,
    pub(crate) dead_letter_queue: Option<String>,
    pub(crate) grace_period: Duration,
    pub(crate) idle_exit: Option<Duration>,
    pub(crate) flush_interval: Duration,
    pub(crate) stats_interval: Option<Duration>,
    pub(crate) scale_in_protection: Option<ScaleInProtection>,
    pub(crate) retry_window: Duration,
    pub(crate) breaker: Option<BreakerConfig>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) adaptive: Option<AdaptiveConcurrency>,
    /// Fair queues: messages of one tenant at once (`crate::tenant`).
    pub(crate) max_in_flight_per_group: Option<usize>,
    /// Messages received ahead of a free slot at most (`crate::ahead`).
    pub(crate) receive_ahead: usize,
    /// The default retry policy, told the queue's `maxReceiveCount` at
    /// start-up; `None` with a custom retry policy or processor.
    pub(crate) retry_budget: Option<Arc<RetryBudget>>,
}

/// Default concurrency: messages handled at once by this process.
pub const DEFAULT_CONCURRENCY: usize = 32;
/// Default long-poll wait.
pub const DEFAULT_WAIT_TIME: Duration = Duration::from_secs(20);
/// Default maximum processing time of one message (from its handler's start).
pub const DEFAULT_MAX_PROCESSING_TIME: Duration = Duration::from_secs(60 * 60);
/// Default grace period at shutdown: 20 s, so that the release of unfinished
/// messages and the last deletes fit before the SIGKILL of ECS's and
/// Kubernetes' default 30 s stop timeout. Keep the grace period a few seconds
/// below the platform's stop timeout.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(20);

/// Builds a [`Poller`]: required values in the constructor, options as
/// chained methods, [`build`](Self::build) validates.
///
/// ```no_run
/// use std::time::Duration;
/// use sqs_worker_core::{Error, Message};
/// use sqs_worker_poller::Poller;
///
/// async fn handle(msg: Message) -> Result<(), Error> {
///     let _ = msg.id();
///     Ok(())
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let summary = Poller::builder("https://sqs.eu-west-1.amazonaws.com/123456789012/orders", handle)
///     .concurrency(64)
///     .visibility_timeout(Duration::from_secs(60))
///     .dead_letter_queue("https://sqs.eu-west-1.amazonaws.com/123456789012/orders-dlq")
///     .build()?
///     .run()
///     .await?;
/// println!("{summary}");
/// # Ok(()) }
/// ```
#[must_use]
pub struct PollerBuilder<P> {
    pub(crate) settings: Settings,
    concurrency: Option<usize>,
    receivers: Option<usize>,
    make: MakeProcessor<P>,
    custom_processor: bool,
    retry: Option<Arc<dyn RetryPolicy>>,
    retry_window_set: bool,
    execution: Execution,
    client: Option<aws_sdk_sqs::Client>,
    shutdown: Option<Signal>,
}

impl<P> std::fmt::Debug for PollerBuilder<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollerBuilder")
            .field("settings", &self.settings)
            .field("concurrency", &self.concurrency)
            .field("receivers", &self.receivers)
            .finish_non_exhaustive()
    }
}

impl Poller<()> {
    /// A poller on `queue` (a URL, or a queue name) running `handler` through
    /// the core [`Engine`].
    pub fn builder<A, H>(queue: impl Into<Queue>, handler: H) -> PollerBuilder<Engine<H::Handler>>
    where
        H: IntoHandler<A> + Send + 'static,
    {
        PollerBuilder::new(
            queue.into(),
            false,
            Box::new(move |cfg| Engine::with_config(handler, cfg)),
        )
    }

    /// A poller on `queue` driving any [`Processor`], e.g. a
    /// [`BatchEngine`](sqs_worker_core::runner::BatchEngine). The processor's own
    /// [`EngineConfig`] applies (retry policy, handler timeout, execution);
    /// [`PollerBuilder::retry_policy`] is then refused.
    pub fn with_processor<P: Processor>(queue: impl Into<Queue>, processor: P) -> PollerBuilder<P> {
        PollerBuilder::new(queue.into(), true, Box::new(move |_| processor))
    }
}

impl<P: Processor> PollerBuilder<P> {
    fn new(queue: Queue, custom_processor: bool, make: MakeProcessor<P>) -> Self {
        Self {
            settings: Settings {
                queue,
                concurrency: DEFAULT_CONCURRENCY,
                receivers: 1,
                wait_time: DEFAULT_WAIT_TIME,
                max_messages: 10,
                visibility_timeout: None,
                heartbeat_interval: None,
                max_processing_time: DEFAULT_MAX_PROCESSING_TIME,
                dead_letter_queue: None,
                grace_period: DEFAULT_GRACE_PERIOD,
                idle_exit: None,
                flush_interval: Duration::from_millis(20),
                stats_interval: None,
                scale_in_protection: None,
                retry_window: DEFAULT_RETRY_WINDOW,
                breaker: None,
                rate_limit: None,
                adaptive: None,
                max_in_flight_per_group: None,
                receive_ahead: crate::ahead::DEFAULT_RECEIVE_AHEAD,
                retry_budget: None,
            },
            concurrency: None,
            receivers: None,
            make,
            custom_processor,
            retry: None,
            retry_window_set: false,
            execution: Execution::Inline,
            client: None,
            shutdown: None,
        }
    }

    /// The SQS client to use (e.g. one pointed at a local server). Default: one
    /// built from `aws_config::load_defaults` when the poller starts.
    pub fn client(mut self, client: aws_sdk_sqs::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Messages handled at once by this process (`SQS_WORKER_CONCURRENCY`):
    /// at most `n` received and not yet settled, across all receive loops,
    /// so at most `n` handlers run at once. 1 to
    /// [`MAX_CONCURRENCY`](sqs_worker_core::config::MAX_CONCURRENCY); default 32.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n);
        self
    }

    /// How handlers are driven. Default [`Execution::Inline`]: the messages
    /// of one receive run concurrently inside that batch's task, and batches
    /// run in parallel on the runtime's worker threads — the cheapest, and
    /// enough for handlers that wait on I/O. [`Execution::Spawn`] gives each
    /// message a task of its own, so handlers that compute for long stretches
    /// without awaiting spread over every worker thread even within one
    /// batch. (Handlers that block a thread belong in
    /// `tokio::task::spawn_blocking` either way.) Not used with
    /// [`Poller::with_processor`], whose processor has its own settings.
    pub fn execution(mut self, execution: Execution) -> Self {
        self.execution = execution;
        self
    }

    /// The number of receive loops (the extra ones poll only while receives
    /// come back full). Default 2 when the concurrency is 20 or more, or 2
    /// or more with [`receive_ahead`](Self::receive_ahead) in use; else 1.
    pub fn receivers(mut self, n: usize) -> Self {
        self.receivers = Some(n);
        self
    }

    /// The long-poll wait (`WaitTimeSeconds`): whole seconds from 0 to 20;
    /// [`build`](Self::build) refuses fractions. 0 means short polls: after
    /// one comes back empty the receive loop backs off (100 ms doubling to
    /// 1 s), so an empty queue is no busy loop. Default 20 s.
    pub fn wait_time(mut self, wait: Duration) -> Self {
        self.settings.wait_time = wait;
        self
    }

    /// Messages per receive, 1 to 10 (fewer when less capacity is free). Default 10.
    pub fn max_messages(mut self, n: usize) -> Self {
        self.settings.max_messages = n;
        self
    }

    /// The visibility timeout to receive with and to extend by. Default: the queue's.
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.settings.visibility_timeout = Some(timeout);
        self
    }

    /// How often running messages are checked and extended when their
    /// visibility is about to run out. Default: a third of the visibility timeout.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.settings.heartbeat_interval = Some(interval);
        self
    }

    /// The longest one handler may run, from its start: the handler is
    /// stopped then (the engine's handler timeout) and its message retried,
    /// and the heartbeat stops extending the message. A message not started
    /// yet (waiting behind others of its FIFO group in the same receive) is
    /// kept invisible until it starts, up to SQS's 12 hours from receipt.
    /// Above 0 and at most 12 h (SQS's limit on a message's visibility);
    /// default 1 hour. With [`Poller::with_processor`] the processor's own
    /// time limit applies ([`Processor::time_limit`]); `build` warns when it
    /// has none, or a longer one.
    pub fn max_processing_time(mut self, limit: Duration) -> Self {
        self.settings.max_processing_time = limit;
        self
    }

    /// The retry policy that sets a failed message's retry delay. Default: a
    /// [`RetryBudget`] over [`retry_window`](Self::retry_window), told the
    /// queue's `maxReceiveCount` at start-up (without a redrive policy,
    /// [`ExponentialBackoff::default`](sqs_worker_core::ExponentialBackoff::default)). Not with [`Poller::with_processor`].
    pub fn retry_policy(mut self, policy: impl RetryPolicy) -> Self {
        self.retry = Some(Arc::new(policy));
        self
    }

    /// The default retry policy's window (default 1 hour,
    /// `SQS_WORKER_RETRY_WINDOW_SECONDS`): a message that keeps failing
    /// reaches the redrive policy's dead-letter queue no sooner than this
    /// (see [`RetryBudget`]). Above 0; not with a custom retry policy.
    pub fn retry_window(mut self, window: Duration) -> Self {
        self.settings.retry_window = window;
        self.retry_window_set = true;
        self
    }

    /// A circuit breaker (default: none; `SQS_WORKER_CIRCUIT_BREAKER=true`
    /// for the defaults of [`BreakerConfig`]): when most recent handler runs
    /// fail, or one returns [`Error::downstream`](sqs_worker_core::Error::downstream),
    /// the poller stops receiving for a cool-down, releases what it holds
    /// unstarted, then tries one message. See the README's "Flow control".
    pub fn circuit_breaker(mut self, config: BreakerConfig) -> Self {
        self.settings.breaker = Some(config);
        self
    }

    /// A dead-letter queue URL: permanent failures are sent there at once,
    /// with attributes naming the error and the source queue, then deleted.
    /// Without one they are left to the queue's redrive policy.
    pub fn dead_letter_queue(mut self, url: impl Into<String>) -> Self {
        self.settings.dead_letter_queue = Some(url.into());
        self
    }

    /// Stop when `signal` resolves. Default: SIGTERM or SIGINT (Ctrl-C).
    pub fn shutdown_signal(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    /// How long in-flight messages may finish after shutdown starts; those
    /// still running then are stopped and made visible again. At most 12 h;
    /// default 20 s ([`DEFAULT_GRACE_PERIOD`]). Keep it a few seconds below
    /// the platform's stop timeout (ECS `stopTimeout`, Kubernetes
    /// `terminationGracePeriodSeconds`, systemd `TimeoutStopSec`): the
    /// release and flush come after it.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.settings.grace_period = grace;
        self
    }

    /// Stop (as on a shutdown signal) once the queue looks empty (a receive
    /// came back empty) and nothing was received or in flight for `idle`:
    /// for drain-and-exit jobs. The long-poll wait is then capped at `idle`
    /// (at least 1 s), so an empty queue is noticed in time.
    pub fn idle_exit(mut self, idle: Duration) -> Self {
        self.settings.idle_exit = Some(idle);
        self
    }

    /// How long a delete or visibility change may wait to be batched with
    /// others (a batch also goes when 10 are pending). Default 20 ms.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.settings.flush_interval = interval;
        self
    }

    /// Log the progress counters (target `sqs_worker_poller::stats`, level
    /// info) this often. Default: never.
    pub fn stats_interval(mut self, interval: Duration) -> Self {
        self.settings.stats_interval = Some(interval);
        self
    }

    /// Marks the ECS task protected from scale-in while messages are in
    /// flight or work came recently, unprotected when idle (see
    /// [`ScaleInProtection`]). Off by default; [`Poller::from_env`] turns it
    /// on inside ECS (`ECS_AGENT_URI` set) unless
    /// `SQS_WORKER_SCALE_IN_PROTECTION=false`.
    pub fn scale_in_protection(mut self, protection: ScaleInProtection) -> Self {
        self.settings.scale_in_protection = Some(protection);
        self
    }

    /// Turns scale-in protection off (after [`Poller::from_env`] turned it on).
    pub fn without_scale_in_protection(mut self) -> Self {
        self.settings.scale_in_protection = None;
        self
    }

    /// Validates the settings: every value in range (durations at most
    /// 12 h, so no clock arithmetic can overflow), none contradicting
    /// another. The queue's own visibility timeout is checked when the
    /// poller starts.
    pub fn build(self) -> Result<Poller<P>, ConfigError> {
        let mut s = self.settings;
        let bad =
            |setting: &'static str, reason: String| Err(ConfigError::invalid(setting, reason));
        if s.queue.as_str().trim().is_empty() {
            return bad("queue", "the queue URL or name is empty".into());
        }
        s.concurrency = self.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        crate::limits::check(&mut s, self.concurrency)?;
        check_concurrency("concurrency", s.concurrency)?;
        // Two loops keep two receives on their way when receiving ahead (one
        // receive per round trip alone cannot feed fast handlers).
        let two = s.concurrency >= 20
            || (s.concurrency >= 2 && crate::ahead::enabled(&s, s.queue.as_str()));
        s.receivers = self.receivers.unwrap_or(if two { 2 } else { 1 });
        if s.receivers == 0 || s.receivers > s.concurrency {
            return bad(
                "receivers",
                format!("must be between 1 and the concurrency ({})", s.concurrency),
            );
        }
        crate::check::settings(&s)?;
        if self.custom_processor && self.retry.is_some() {
            return bad(
                "retry_policy",
                "a custom processor uses its own EngineConfig's retry policy".into(),
            );
        }
        if self.retry_window_set && (self.custom_processor || self.retry.is_some()) {
            return bad(
                "retry_window",
                "applies to the default retry policy only (build a `RetryBudget` yourself)".into(),
            );
        }
        if s.retry_window.is_zero() {
            return bad("retry_window", "must be above 0".into());
        }
        let retry: Arc<dyn RetryPolicy> = match self.retry {
            Some(policy) => policy,
            None => {
                let budget = Arc::new(RetryBudget::new(s.retry_window));
                s.retry_budget = (!self.custom_processor).then(|| budget.clone());
                budget
            }
        };
        let engine_config = EngineConfig::default()
            .concurrency(s.max_messages)
            .execution(self.execution)
            .handler_timeout(Some(s.max_processing_time))
            .retry_policy_arc(retry);
        let processor = (self.make)(engine_config);
        if self.custom_processor
            && let Some(w) =
                crate::env::time_limit_warning(processor.time_limit(), s.max_processing_time)
        {
            tracing::warn!("{w}");
        }
        Ok(Poller::new(s, processor, self.client, self.shutdown))
    }
}

#[cfg(test)]
mod tests {
    use sqs_worker_core::{Error, Message};

    use super::*;
    use sqs_worker_core::MAX_VISIBILITY_TIMEOUT;

    async fn ok(_m: Message) -> Result<(), Error> {
        Ok(())
    }

    #[test]
    fn build_validates() {
        let b = || Poller::builder("q", ok);
        assert!(b().build().is_ok());
        assert_eq!(b().build().unwrap().settings().receivers, 2);
        assert!(b().concurrency(0).build().is_err());
        assert!(b().concurrency(4).receivers(5).build().is_err());
        assert!(b().max_messages(11).build().is_err());
        assert!(b().wait_time(Duration::from_secs(21)).build().is_err());
        let e = b()
            .visibility_timeout(Duration::from_secs(10))
            .heartbeat_interval(Duration::from_secs(10))
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("heartbeat_interval"), "{e}");
        let e = b().visibility_timeout(Duration::ZERO).build().unwrap_err();
        assert!(e.to_string().contains("visibility_timeout"), "{e}");
        assert_eq!(Queue::from("orders"), Queue::Name("orders".into()));
        assert_eq!(
            Queue::from("http://h/1/orders"),
            Queue::Url("http://h/1/orders".into())
        );
    }

    #[test]
    fn extreme_settings_are_refused_by_build_not_a_panic() {
        let b = || Poller::builder("q", ok);
        let cases: Vec<(&str, PollerBuilder<_>)> = vec![
            ("grace_period", b().grace_period(Duration::MAX)),
            ("heartbeat_interval", b().heartbeat_interval(Duration::MAX)),
            (
                "heartbeat_interval",
                b().heartbeat_interval(MAX_VISIBILITY_TIMEOUT * 2),
            ),
            ("concurrency", b().concurrency(usize::MAX)),
            (
                "concurrency",
                b().concurrency(usize::MAX).receivers(usize::MAX),
            ),
            (
                "max_processing_time",
                b().max_processing_time(Duration::MAX),
            ),
            (
                "max_processing_time",
                b().max_processing_time(MAX_VISIBILITY_TIMEOUT + Duration::from_secs(1)),
            ),
            ("idle_exit", b().idle_exit(Duration::MAX)),
            ("stats_interval", b().stats_interval(Duration::MAX)),
            ("visibility_timeout", b().visibility_timeout(Duration::MAX)),
        ];
        for (setting, builder) in cases {
            let e = builder.build().unwrap_err();
            assert!(e.to_string().contains(setting), "{setting}: {e}");
        }
        assert!(
            b().max_processing_time(MAX_VISIBILITY_TIMEOUT)
                .build()
                .is_ok()
        );
        assert!(b().grace_period(MAX_VISIBILITY_TIMEOUT).build().is_ok());
    }

    #[test]
    fn fractional_and_overlong_waits_are_refused() {
        let b = || Poller::builder("q", ok);
        for wait in [
            Duration::from_millis(500),
            Duration::from_millis(1500),
            Duration::from_secs(21),
        ] {
            let e = b().wait_time(wait).build().unwrap_err();
            assert!(e.to_string().contains("wait_time"), "{wait:?}: {e}");
        }
        assert!(b().wait_time(Duration::from_secs(1)).build().is_ok());
        // Short polls back off when empty (receive.rs), so 0 is allowed.
        assert!(b().wait_time(Duration::ZERO).build().is_ok());
    }
}
