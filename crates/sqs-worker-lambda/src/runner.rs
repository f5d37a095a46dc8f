//! Configuration and the entry points: [`LambdaRunner`] and [`run`](crate::run).

use std::time::Duration;

use aws_lambda_events::event::sqs::SqsBatchResponse;
use lambda_runtime::{LambdaEvent, service_fn};
use sqs_worker_core::runner::{Engine, Processor};
use sqs_worker_core::{BoxError, EngineConfig, Handler, IntoHandler};

use crate::payload::SqsPayload;
use crate::record::EventError;
use crate::service::{DEFAULT_SAFETY_MARGIN, LambdaService};

/// Environment variables read by [`run`](crate::run) and
/// [`LambdaRunner::with_env`].
pub mod env {
    /// Dead-letter queue URL for permanent failures (feature `sqs-client`).
    pub const DLQ_URL: &str = "SQS_WORKER_DLQ_URL";
    /// Safety margin before the invocation deadline, in milliseconds
    /// (default 500).
    pub const SAFETY_MARGIN_MS: &str = "SQS_WORKER_SAFETY_MARGIN_MS";
    /// `false`/`0`/`off` turns off retry delays as visibility changes
    /// (feature `sqs-client`; default on).
    pub const BACKOFF: &str = "SQS_WORKER_BACKOFF";
    /// Handlers running at once within a batch (default 16); read by
    /// [`run`](crate::run) only.
    pub const CONCURRENCY: &str = "SQS_WORKER_CONCURRENCY";
}

/// A configuration mistake, found before the first invocation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An environment variable has a value that does not parse.
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    InvalidVar {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is expected.
        reason: &'static str,
    },
    /// A dead-letter queue was given to a [`LambdaRunner`] without an SQS
    /// client.
    #[error(
        "a dead-letter queue ({0}) needs an SQS client: call `sqs_client` or `with_env` \
         on the LambdaRunner"
    )]
    DeadLetterQueueWithoutClient(String),
}

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
/// LambdaRunner::with_config(handle, EngineConfig::default().concurrency(4))
///     .safety_margin(Duration::from_secs(1))
///     .with_env()
///     .await?
///     .run()
///     .await
/// # }
/// ```
#[must_use]
pub struct LambdaRunner<P> {
    processor: P,
    safety_margin: Duration,
    #[cfg(feature = "sqs-client")]
    client: Option<aws_sdk_sqs::Client>,
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
            #[cfg(feature = "sqs-client")]
            client: None,
            #[cfg(feature = "sqs-client")]
            dead_letter_queue: None,
            #[cfg(feature = "sqs-client")]
            backoff: true,
        }
    }

    /// The engine stops this long before the invocation deadline (default
    /// 500 ms): no record starts after it, handlers still running are
    /// stopped, and the rest of the margin is for the dead-letter and
    /// visibility calls and the response. Keep it well under the function
    /// timeout.
    pub fn safety_margin(mut self, margin: Duration) -> Self {
        self.safety_margin = margin;
        self
    }

    /// The SQS client for dead-lettering, retry delays and visibility
    /// extension (e.g. one pointed at a local server in tests).
    #[cfg(feature = "sqs-client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqs-client")))]
    pub fn sqs_client(mut self, client: aws_sdk_sqs::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Permanent failures go to this queue (URL) and then count as handled.
    /// Needs an SQS client ([`sqs_client`](Self::sqs_client) or
    /// [`with_env`](Self::with_env)). A FIFO DLQ gets the original group id
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

    /// Applies the environment ([`env`](mod@env)): the safety margin, and with the
    /// `sqs-client` feature the dead-letter queue, backoff switch and, unless
    /// one was given, an SQS client from the default AWS configuration
    /// (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL`).
    ///
    /// Fails naming the variable when a value does not parse. In a build
    /// without the `sqs-client` feature, `SQS_WORKER_DLQ_URL` is ignored with a
    /// warning (one configuration often serves both runners).
    pub async fn with_env(mut self) -> Result<Self, ConfigError> {
        if let Some(ms) = var(env::SAFETY_MARGIN_MS) {
            let ms = ms.parse::<u64>().map_err(|_| ConfigError::InvalidVar {
                name: env::SAFETY_MARGIN_MS,
                value: ms,
                reason: "expected a number of milliseconds",
            })?;
            self.safety_margin = Duration::from_millis(ms);
        }
        // One configuration often serves both runners (the poller always has
        // a client): without one here, say so and keep going; permanent
        // failures are reported and still reach the DLQ by the redrive policy.
        #[cfg(not(feature = "sqs-client"))]
        if let Some(url) = var(env::DLQ_URL) {
            tracing::warn!(
                dead_letter_queue = url,
                "{} is set, but sqs-worker-lambda was built without its `sqs-client` feature: \
                 permanent failures are reported and the queue's redrive policy applies",
                env::DLQ_URL
            );
        }
        #[cfg(feature = "sqs-client")]
        {
            if let Some(url) = var(env::DLQ_URL) {
                self.dead_letter_queue = Some(url);
            }
            if let Some(v) = var(env::BACKOFF) {
                self.backoff = parse_bool(env::BACKOFF, v)?;
            }
            if self.client.is_none() {
                let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                self.client = Some(aws_sdk_sqs::Client::new(&config));
            }
        }
        Ok(self)
    }

    /// The service (for tests, or to wrap in your own `lambda_runtime`
    /// setup). Fails when a dead-letter queue is set without an SQS client.
    pub fn build(self) -> Result<LambdaService<P>, ConfigError> {
        #[cfg(feature = "sqs-client")]
        {
            let settler = match (self.client, self.dead_letter_queue) {
                (Some(c), dlq) => Some(crate::client::SqsSettler::new(c, dlq, self.backoff)),
                (None, Some(dlq)) => return Err(ConfigError::DeadLetterQueueWithoutClient(dlq)),
                (None, None) => None,
            };
            Ok(LambdaService::from_parts(
                self.processor,
                self.safety_margin,
                settler,
            ))
        }
        #[cfg(not(feature = "sqs-client"))]
        Ok(LambdaService::from_parts(
            self.processor,
            self.safety_margin,
        ))
    }

    /// Runs the function on the Lambda Runtime API (`lambda_runtime::run`)
    /// until the runtime stops it. Installs the runtime's default `tracing`
    /// subscriber when none is set (`AWS_LAMBDA_LOG_LEVEL`, `RUST_LOG`,
    /// `AWS_LAMBDA_LOG_FORMAT`).
    pub async fn run(self) -> Result<(), BoxError> {
        init_logs();
        let service = self.build()?;
        lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsPayload>| {
            let service = service.clone();
            async move {
                let result: Result<SqsBatchResponse, EventError> =
                    service.handle_payload(event.payload, &event.context).await;
                result
            }
        }))
        .await
    }
}

/// The engine settings from the environment ([`env::CONCURRENCY`]).
pub fn engine_config_from_env() -> Result<EngineConfig, ConfigError> {
    let mut config = EngineConfig::default();
    if let Some(n) = var(env::CONCURRENCY) {
        let n = n
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or(ConfigError::InvalidVar {
                name: env::CONCURRENCY,
                value: n,
                reason: "expected a positive whole number",
            })?;
        config = config.concurrency(n);
    }
    Ok(config)
}

/// Installs the Lambda runtime's default `tracing` subscriber unless one is
/// set.
pub(crate) fn init_logs() {
    if !tracing::dispatcher::has_been_set() {
        lambda_runtime::tracing::init_default_subscriber();
    }
}

/// A set, non-empty variable.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

#[cfg(feature = "sqs-client")]
fn parse_bool(name: &'static str, v: String) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => Err(ConfigError::InvalidVar {
            name,
            value: v,
            reason: "expected true or false",
        }),
    }
}
