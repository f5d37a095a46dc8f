//! Configuration and the entry points: [`LambdaRunner`] and [`run`](crate::run).

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsBatchResponse;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::value::RawValue;
use sqs_worker_core::config::{ConfigError, Env, check_concurrency, var};
#[cfg(feature = "sqs-client")]
use sqs_worker_core::flow::RetryBudget;
use sqs_worker_core::flow::{BreakerConfig, CircuitBreaker, RateLimit, RateLimiter};
use sqs_worker_core::runner::{Engine, Processor};
use sqs_worker_core::{BoxError, EngineConfig, Handler, IntoHandler};

use crate::env::engine_config_and_budget;
pub use crate::env::engine_config_from_env;
use crate::payload::SqsPayload;
use crate::record::EventError;
use crate::service::{DEFAULT_SAFETY_MARGIN, LambdaService};

/// The longest safety margin accepted: Lambda's longest function timeout.
pub const MAX_SAFETY_MARGIN: Duration = Duration::from_secs(900);

/// Builds and runs the Lambda adapter.
///
/// ```no_run
/// use std::time::Duration;
/// use sqs_worker_core::{EngineConfig, Error, Message};
/// use sqs_worker_lambda::LambdaRunner;
///
/// async fn handle(msg: Message) -> Result<(), Error> {
///     let _ = msg.body();
///     Ok(())
/// }
///
/// # async fn main_() -> Result<(), sqs_worker_core::BoxError> {
/// // Settings from SQS_WORKER_*, then options chained; `run` validates.
/// LambdaRunner::from_env(handle)?
///     .safety_margin(Duration::from_secs(1))
///     .run()
///     .await
/// # }
/// # let _ = EngineConfig::default();
/// ```
#[must_use]
pub struct LambdaRunner<P> {
    processor: P,
    safety_margin: Duration,
    breaker: Option<BreakerConfig>,
    fail_when_all_failed: bool,
    rate_limit: Option<RateLimit>,
    #[cfg(feature = "sqs-client")]
    retry_budget: Option<Arc<RetryBudget>>,
    max_in_flight_per_group: Option<usize>,
    max_receive_count: Option<u32>,
    /// The client given, or with `default_client` one from the default
    /// configuration at its first use.
    #[cfg(feature = "sqs-client")]
    client: Option<aws_sdk_sqs::Client>,
    #[cfg(feature = "sqs-client")]
    default_client: bool,
    #[cfg(feature = "sqs-client")]
    dead_letter_queue: Option<String>,
    #[cfg(feature = "sqs-client")]
    backoff: bool,
}

impl<P> std::fmt::Debug for LambdaRunner<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("LambdaRunner");
        d.field("safety_margin", &self.safety_margin);
        #[cfg(feature = "sqs-client")]
        d.field("sqs_client", &self.client.is_some())
            .field("dead_letter_queue", &self.dead_letter_queue)
            .field("backoff", &self.backoff);
        d.finish_non_exhaustive()
    }
}

impl<H: Handler> LambdaRunner<Engine<H>> {
    /// A runner for `handler` with the default engine settings
    /// ([`Execution::Inline`](sqs_worker_core::Execution::Inline)).
    pub fn new<A, F: IntoHandler<A, Handler = H>>(handler: F) -> Self {
        Self::with_config(handler, EngineConfig::default())
    }

    /// A runner for `handler` configured from the environment (synchronous,
    /// like the poller's `Poller::from_env`): `SQS_WORKER_CONCURRENCY`
    /// (handlers at once, default 16), `SQS_WORKER_SAFETY_MARGIN_SECONDS`,
    /// `SQS_WORKER_START_MARGIN_SECONDS`, `SQS_WORKER_FIFO_STOP_BATCH_ON_FAILURE`
    /// (see [`engine_config_from_env`]),
    /// `SQS_WORKER_RETRY_WINDOW_SECONDS` and `SQS_WORKER_MAX_RECEIVE_COUNT`
    /// (the retry budget, [`RetryBudget`]; without the count, with the
    /// `sqs-client` feature, it is read from the queue's redrive policy at
    /// the cold start), `SQS_WORKER_RATE_LIMIT`, `SQS_WORKER_CIRCUIT_BREAKER`,
    /// `SQS_WORKER_FAIL_INVOCATION_WHEN_ALL_FAILED`,
    /// and with the `sqs-client` feature `SQS_WORKER_DLQ_URL` and
    /// `SQS_WORKER_BACKOFF` (the README's configuration table; names in
    /// [`sqs_worker_core::config::var`]). Fails naming the variable when a
    /// value does not parse. The SQS client is loaded by [`run`](Self::run).
    ///
    /// In a build without the `sqs-client` feature, `SQS_WORKER_DLQ_URL` is
    /// ignored with a warning (one configuration often serves both runners).
    pub fn from_env<A, F: IntoHandler<A, Handler = H>>(handler: F) -> Result<Self, ConfigError> {
        let env = Env::process();
        let (config, _budget) = engine_config_and_budget(&env)?;
        #[allow(unused_mut)]
        let mut runner = Self::with_config(handler, config);
        #[cfg(feature = "sqs-client")]
        {
            runner.retry_budget = Some(_budget);
        }
        runner.env_in(&env)
    }

    /// A runner for `handler` with engine settings.
    pub fn with_config<A, F: IntoHandler<A, Handler = H>>(
        handler: F,
        config: EngineConfig,
    ) -> Self {
        Self::from_processor(Engine::with_config(handler, config))
    }
}

impl<P: Processor> LambdaRunner<P> {
    /// A runner for any processor, e.g. a
    /// [`BatchEngine`](sqs_worker_core::runner::BatchEngine).
    pub fn from_processor(processor: P) -> Self {
        Self {
            processor,
            safety_margin: DEFAULT_SAFETY_MARGIN,
            breaker: None,
            fail_when_all_failed: false,
            rate_limit: None,
            #[cfg(feature = "sqs-client")]
            retry_budget: None,
            max_in_flight_per_group: None,
            max_receive_count: None,
            #[cfg(feature = "sqs-client")]
            client: None,
            #[cfg(feature = "sqs-client")]
            default_client: false,
            #[cfg(feature = "sqs-client")]
            dead_letter_queue: None,
            #[cfg(feature = "sqs-client")]
            backoff: true,
        }
    }

    /// The engine stops this long before the invocation deadline (default
    /// 500 ms, `SQS_WORKER_SAFETY_MARGIN_SECONDS`): no record starts after
    /// it, handlers still running are stopped, and the rest of the margin is
    /// for the dead-letter and visibility calls and the response. Keep it
    /// well under the function timeout; [`build`](Self::build) refuses more
    /// than 900 s.
    pub fn safety_margin(mut self, margin: Duration) -> Self {
        self.safety_margin = margin;
        self
    }

    /// A circuit breaker, kept by a warm container across invocations
    /// (default none; `SQS_WORKER_CIRCUIT_BREAKER=true` for the defaults of
    /// [`BreakerConfig`]): while open, records are reported failed without
    /// running, with the rest of the cool-down as their visibility (with an
    /// SQS client), so an outage costs about one receive per cool-down.
    pub fn circuit_breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// When every record of an invocation failed, fail the invocation
    /// (default off; `SQS_WORKER_FAIL_INVOCATION_WHEN_ALL_FAILED`): the event
    /// source mapping scales its polling down after function errors, not
    /// after partial batch failures. Retry delays already set stay.
    pub fn fail_invocation_when_all_failed(mut self, on: bool) -> Self {
        self.fail_when_all_failed = on;
        self
    }

    /// A rate limit (default none; `SQS_WORKER_RATE_LIMIT`, per second):
    /// the records of an invocation start at most [`RateLimit::rate`] per
    /// second, from a bucket a warm container keeps across invocations.
    /// Records whose turn would come after the deadline are reported
    /// unstarted. It limits one container; for a fleet-wide limit, set the
    /// event source mapping's `MaximumConcurrency` too (the README's "Flow
    /// control").
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// The retry budget to tell the queue's `maxReceiveCount`: on the
    /// container's first invocation, unless it knows the count already
    /// (`SQS_WORKER_MAX_RECEIVE_COUNT`), the service reads the redrive
    /// policy of the records' queue with its SQS client and sets it. Pass
    /// the budget your [`EngineConfig`]'s retry policy uses;
    /// [`from_env`](LambdaRunner::from_env) does this with its own.
    #[cfg(feature = "sqs-client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqs-client")))]
    pub fn retry_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.retry_budget = Some(budget);
        self
    }

    /// On a fair queue (a standard queue whose records carry a
    /// `MessageGroupId` as a tenant label), at most `n` records of one
    /// tenant run per invocation (`SQS_WORKER_MAX_IN_FLIGHT_PER_GROUP`;
    /// default unlimited): the tenant's further records in the batch are
    /// reported failed without running, so one tenant never occupies all of
    /// an invocation's concurrency. With an SQS client they come back after
    /// a short delay (1–2 s, spread wider with their receive count up to 1–5 s);
    /// without one, after the queue's visibility timeout. Records without a
    /// group id, and FIFO records (whose groups already run one at a time),
    /// are not limited. Each report raises the record's receive count; with
    /// `SQS_WORKER_MAX_RECEIVE_COUNT` set, a record received that many times
    /// runs over the limit rather than reach the dead-letter queue unrun.
    /// 1 to [`MAX_CONCURRENCY`](sqs_worker_core::config::MAX_CONCURRENCY).
    pub fn max_in_flight_per_group(mut self, n: usize) -> Self {
        self.max_in_flight_per_group = Some(n);
        self
    }

    /// The SQS client for dead-lettering, retry delays and visibility
    /// extension (e.g. one pointed at a local server in tests). Default, with
    /// [`run`](Self::run): one built from `aws_config::load_defaults` when
    /// first needed (an invocation with a failed record, or a handler
    /// extending its visibility), so the cold start does not wait for it.
    #[cfg(feature = "sqs-client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqs-client")))]
    pub fn sqs_client(mut self, client: aws_sdk_sqs::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Permanent failures go to this queue (URL) and then count as handled.
    /// Needs an SQS client ([`sqs_client`](Self::sqs_client), or the default
    /// one [`run`](Self::run) loads). A FIFO DLQ gets the original group id
    /// and the message id as deduplication id.
    #[cfg(feature = "sqs-client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqs-client")))]
    pub fn dead_letter_queue(mut self, url: impl Into<String>) -> Self {
        self.dead_letter_queue = Some(url.into());
        self
    }

    /// Whether failed records get their retry delay as a visibility change
    /// (default on; needs an SQS client).
    #[cfg(feature = "sqs-client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqs-client")))]
    pub fn backoff(mut self, on: bool) -> Self {
        self.backoff = on;
        self
    }

    /// Applies the environment like [`from_env`](LambdaRunner::from_env)
    /// (except `SQS_WORKER_CONCURRENCY`, which needs the engine) and uses
    /// the default SQS client (built at its first need).
    #[deprecated(
        since = "0.2.0",
        note = "use `LambdaRunner::from_env(handler)` (synchronous); `run` loads the SQS client"
    )]
    pub async fn with_env(self) -> Result<Self, ConfigError> {
        #[allow(unused_mut)]
        let mut runner = self.env_in(&Env::process())?;
        #[cfg(feature = "sqs-client")]
        {
            runner.default_client = true;
        }
        Ok(runner)
    }

    /// Applies the runner's variables (all but the concurrency) from `env`.
    pub(crate) fn env_in<F>(mut self, env: &Env<F>) -> Result<Self, ConfigError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let margin = env.seconds_or_renamed(
            var::SAFETY_MARGIN_SECONDS,
            var::OLD_SAFETY_MARGIN_MS,
            Duration::from_millis(1),
        )?;
        if let Some(margin) = margin {
            self.safety_margin = margin;
        }
        if env.flag(var::CIRCUIT_BREAKER)? == Some(true) {
            self.breaker = Some(BreakerConfig::default());
        }
        if let Some(on) = env.flag(var::FAIL_INVOCATION_WHEN_ALL_FAILED)? {
            self.fail_when_all_failed = on;
        }
        if let Some(r) = env.per_second(var::RATE_LIMIT)? {
            self.rate_limit = Some(RateLimit::per_second(r));
        }
        if let Some(n) = env.count(var::MAX_IN_FLIGHT_PER_GROUP)? {
            self.max_in_flight_per_group = Some(n);
        }
        if let Some(n) = env.count(var::MAX_RECEIVE_COUNT)? {
            self.max_receive_count = u32::try_from(n).ok();
        }
        // One configuration often serves both runners (the poller always has
        // a client): without one here, say so and keep going; permanent
        // failures are reported and still reach the DLQ by the redrive policy.
        #[cfg(not(feature = "sqs-client"))]
        if let Some(url) = env.string(var::DLQ_URL) {
            tracing::warn!(
                dead_letter_queue = url,
                "{} is set, but sqs-worker-lambda was built without its `sqs-client` feature: \
                 permanent failures are reported and the queue's redrive policy applies",
                var::DLQ_URL
            );
        }
        #[cfg(feature = "sqs-client")]
        {
            if let Some(url) = env.string(var::DLQ_URL) {
                self.dead_letter_queue = Some(url);
            }
            if let Some(on) = env.flag(var::BACKOFF)? {
                self.backoff = on;
            }
        }
        Ok(self)
    }

    /// Validates the settings and returns the service (for tests, or to wrap
    /// in your own `lambda_runtime` setup). Fails when the safety margin is
    /// above 900 s, or a dead-letter queue is set without an SQS client.
    pub fn build(self) -> Result<LambdaService<P>, ConfigError> {
        if self.safety_margin > MAX_SAFETY_MARGIN {
            return Err(ConfigError::invalid(
                "safety_margin",
                format!(
                    "{:?} is above 900 s, Lambda's longest function timeout",
                    self.safety_margin
                ),
            ));
        }
        if let Some(r) = &self.rate_limit {
            r.check()
                .map_err(|reason| ConfigError::invalid("rate_limit", reason))?;
        }
        if let Some(n) = self.max_in_flight_per_group {
            check_concurrency("max_in_flight_per_group", n)?;
            #[cfg(not(feature = "sqs-client"))]
            tracing::warn!(
                "max_in_flight_per_group without an SQS client (feature `sqs-client`): a \
                 tenant's excess records come back after the queue's visibility timeout"
            );
        }
        let flow = crate::flow::Flow {
            breaker: self.breaker.map(CircuitBreaker::new),
            fail_when_all_failed: self.fail_when_all_failed,
            rate: self.rate_limit.map(|r| Arc::new(RateLimiter::new(r))),
            #[cfg(feature = "sqs-client")]
            redrive: self.retry_budget.map(crate::redrive::Redrive::new),
            group_limit: self
                .max_in_flight_per_group
                .map(|n| (n, self.max_receive_count)),
        };
        #[cfg(feature = "sqs-client")]
        {
            use crate::client::{LazyClient, SqsSettler};
            let settler = match (self.client, self.dead_letter_queue) {
                (Some(c), dlq) => Some(SqsSettler::new(LazyClient::ready(c), dlq, self.backoff)),
                (None, dlq) if self.default_client => Some(SqsSettler::new(
                    LazyClient::from_default_config(),
                    dlq,
                    self.backoff,
                )),
                (None, Some(dlq)) => {
                    return Err(ConfigError::invalid(
                        "dead_letter_queue",
                        format!(
                            "{dlq} needs an SQS client: call `sqs_client`, or start the \
                             function with `run`, which loads the default one"
                        ),
                    ));
                }
                (None, None) => None,
            };
            Ok(LambdaService::from_parts(
                self.processor,
                self.safety_margin,
                flow,
                settler,
            ))
        }
        #[cfg(not(feature = "sqs-client"))]
        Ok(LambdaService::from_parts(
            self.processor,
            self.safety_margin,
            flow,
        ))
    }

    /// Runs the function on the Lambda Runtime API (`lambda_runtime::run`)
    /// until the runtime stops it. With the `sqs-client` feature and no
    /// client given, uses the default SQS client, built at its first need
    /// (see [`sqs_client`](Self::sqs_client)). Installs the
    /// runtime's default `tracing` subscriber when none is set
    /// (`AWS_LAMBDA_LOG_LEVEL`, `RUST_LOG`, `AWS_LAMBDA_LOG_FORMAT`).
    #[allow(unused_mut)]
    pub async fn run(mut self) -> Result<(), BoxError> {
        init_logs();
        #[cfg(feature = "sqs-client")]
        {
            self.default_client = true;
        }
        let service = self.build()?;
        // The payload as raw JSON, parsed here without the runtime's path
        // tracking (`SqsPayload::from_json`).
        lambda_runtime::run(service_fn(move |event: LambdaEvent<Box<RawValue>>| {
            let service = service.clone();
            async move {
                let payload = SqsPayload::from_json(event.payload.get())?;
                let result: Result<SqsBatchResponse, EventError> =
                    service.handle_payload(payload, &event.context).await;
                result
            }
        }))
        .await
    }
}

/// Installs the Lambda runtime's default `tracing` subscriber unless one is
/// set.
pub(crate) fn init_logs() {
    if !tracing::dispatcher::has_been_set() {
        lambda_runtime::tracing::init_default_subscriber();
    }
}

#[cfg(test)]
mod tests {

    use sqs_worker_core::{Error, Message};

    use super::*;

    async fn ok(_m: Message) -> Result<(), Error> {
        Ok(())
    }

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        Env::from_pairs(pairs)
    }

    fn margin(pairs: &[(&str, &str)]) -> Duration {
        LambdaRunner::new(ok)
            .env_in(&env(pairs))
            .unwrap()
            .build()
            .unwrap()
            .safety_margin()
    }

    #[test]
    fn the_safety_margin_is_in_seconds_and_the_old_ms_name_is_still_read() {
        assert_eq!(margin(&[]), DEFAULT_SAFETY_MARGIN);
        let new = [("SQS_WORKER_SAFETY_MARGIN_SECONDS", "1.5")];
        assert_eq!(margin(&new), Duration::from_millis(1500));
        let old = [("SQS_WORKER_SAFETY_MARGIN_MS", "750")];
        assert_eq!(margin(&old), Duration::from_millis(750));
        let e = LambdaRunner::new(ok)
            .env_in(&env(&[("SQS_WORKER_SAFETY_MARGIN_SECONDS", "1s")]))
            .unwrap_err();
        assert!(
            e.to_string().contains("SQS_WORKER_SAFETY_MARGIN_SECONDS"),
            "{e}"
        );
    }

    #[test]
    fn an_extreme_safety_margin_is_refused_by_build() {
        let e = LambdaRunner::new(ok)
            .safety_margin(Duration::MAX)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("safety_margin"), "{e}");
    }

    #[cfg(feature = "sqs-client")]
    #[test]
    fn the_rate_limit_comes_from_the_environment() {
        let r = LambdaRunner::new(ok)
            .env_in(&env(&[("SQS_WORKER_RATE_LIMIT", "2.5")]))
            .unwrap();
        assert_eq!(r.rate_limit, Some(RateLimit::per_second(2.5)));
        let e = LambdaRunner::new(ok)
            .env_in(&env(&[("SQS_WORKER_RATE_LIMIT", "-3")]))
            .unwrap_err();
        assert!(e.to_string().contains("SQS_WORKER_RATE_LIMIT"), "{e}");
        let e = LambdaRunner::new(ok)
            .rate_limit(RateLimit::per_second(0.0))
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("rate_limit"), "{e}");
    }

    #[test]
    fn a_bad_backoff_switch_names_the_variable() {
        let e = LambdaRunner::new(ok)
            .env_in(&env(&[("SQS_WORKER_BACKOFF", "maybe")]))
            .unwrap_err();
        assert!(e.to_string().contains("SQS_WORKER_BACKOFF"), "{e}");
    }
}
