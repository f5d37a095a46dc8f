//! [`run`]: one entry point for both runners, and its error, [`RunError`].

use crate::BoxError;
#[cfg(any(feature = "poller", feature = "lambda"))]
use crate::IntoHandler;
use sqs_worker_core::config::ConfigError;
#[cfg(all(
    any(feature = "poller", feature = "lambda"),
    not(feature = "large-payloads")
))]
use sqs_worker_core::config::var::PAYLOAD_BUCKETS;

/// Runs `handler` with the runner the environment asks for: the Lambda
/// adapter when `AWS_LAMBDA_RUNTIME_API` is set (feature `lambda`), otherwise
/// the long-poll consumer configured from `SQS_QUEUE_URL` and friends
/// (feature `poller`). Every variable is in the README's configuration
/// table.
///
/// It first sets up logs and metrics with [`telemetry::init`](crate::telemetry::init)
/// (leaving any subscriber or recorder you installed alone); the poller also
/// serves `/metrics` and `/healthz` when `SQS_WORKER_METRICS_ADDR` is set.
///
/// With feature `large-payloads`, `SQS_WORKER_PAYLOAD_BUCKETS` (the
/// allow-list) turns on Amazon SQS Extended Client payloads in either runner:
/// the handler is wrapped in
/// [`PayloadLayer::from_env`](crate::producer::payload::PayloadLayer::from_env),
/// so it sees the S3 object as the body and the object is deleted after it
/// succeeded. Without the feature, that variable set is a configuration
/// error.
///
/// Errors come back as a [`RunError`], whose `Debug` is the readable cause
/// chain: a `main` that returns it prints a sentence, not SDK internals.
#[cfg(any(feature = "poller", feature = "lambda"))]
pub async fn run<A, H: IntoHandler<A>>(handler: H) -> Result<(), RunError> {
    crate::telemetry::init()?;
    let handler = handler.into_handler();
    #[cfg(feature = "large-payloads")]
    if let Some(layer) = sqs_worker_producer::payload::PayloadLayer::from_env().await? {
        use tower_layer::Layer as _;
        return run_handler(layer.layer(handler)).await;
    }
    // Ignored, the variable would let pointers reach the handler as bodies.
    #[cfg(not(feature = "large-payloads"))]
    if let Some(value) = sqs_worker_core::config::Env::process().string(PAYLOAD_BUCKETS) {
        return Err(RunError::Config(ConfigError::InvalidEnv {
            var: PAYLOAD_BUCKETS,
            value,
            reason: "this build lacks feature `large-payloads`, so Extended Client pointers \
                     would reach the handler unresolved"
                .to_owned(),
        }));
    }
    run_handler(handler).await
}

/// [`run`] once the handler is final.
#[cfg(any(feature = "poller", feature = "lambda"))]
async fn run_handler<H: crate::Handler>(handler: H) -> Result<(), RunError> {
    #[cfg(feature = "lambda")]
    if crate::telemetry::in_lambda() {
        return sqs_worker_lambda::run(handler)
            .await
            .map_err(RunError::lambda);
    }
    #[cfg(feature = "poller")]
    {
        let _metrics = crate::telemetry::serve_metrics_from_env()
            .await
            .map_err(RunError::telemetry)?;
        sqs_worker_poller::run(handler)
            .await
            .map_err(RunError::from)
    }
    #[cfg(not(feature = "poller"))]
    {
        let _ = handler;
        Err(RunError::NoRunner)
    }
}

/// Why [`run`] failed. `Display` is the error, `Debug` the error and its
/// causes, one per line (what `main` prints when it returns the error).
#[non_exhaustive]
pub enum RunError {
    /// A setting is missing or invalid; names the variable or setting.
    Config(ConfigError),
    /// The long-poll consumer could not start, or stopped with an error.
    #[cfg(feature = "poller")]
    #[cfg_attr(docsrs, doc(cfg(feature = "poller")))]
    Poller(sqs_worker_poller::PollerError),
    /// The Lambda runtime failed.
    Lambda(BoxError),
    /// The logs or the metrics endpoint could not be set up.
    Telemetry(BoxError),
    /// Outside Lambda, in a build without the `poller` feature.
    NoRunner,
}

impl RunError {
    /// A Lambda runner error: a configuration error stays one.
    pub fn lambda(e: BoxError) -> Self {
        match e.downcast::<ConfigError>() {
            Ok(c) => Self::Config(*c),
            Err(e) => Self::Lambda(e),
        }
    }

    /// A telemetry set-up error: a configuration error stays one.
    pub fn telemetry(e: BoxError) -> Self {
        match e.downcast::<ConfigError>() {
            Ok(c) => Self::Config(*c),
            Err(e) => Self::Telemetry(e),
        }
    }

    /// The error itself (whose `source` chain this error's `source` continues).
    fn inner(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            #[cfg(feature = "poller")]
            Self::Poller(e) => Some(e),
            Self::Lambda(e) | Self::Telemetry(e) => Some(e.as_ref()),
            Self::NoRunner => None,
        }
    }
}

impl From<ConfigError> for RunError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

#[cfg(feature = "poller")]
impl From<sqs_worker_poller::PollerError> for RunError {
    fn from(e: sqs_worker_poller::PollerError) -> Self {
        match e {
            sqs_worker_poller::PollerError::Config(c) => Self::Config(c),
            e => Self::Poller(e),
        }
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.inner() {
            Some(e) => std::fmt::Display::fmt(e, f),
            None => f.write_str(
                "AWS_LAMBDA_RUNTIME_API is not set and the `poller` feature is off: \
                 this binary can only run inside AWS Lambda",
            ),
        }
    }
}

impl std::fmt::Debug for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        if source.is_some() {
            f.write_str("\n\nCaused by:")?;
        }
        while let Some(e) = source {
            write!(f, "\n    {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner().and_then(|e| e.source())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Inner;
    impl std::fmt::Display for Inner {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the queue does not exist")
        }
    }
    impl std::error::Error for Inner {}

    #[derive(Debug)]
    struct Outer(Inner);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("start-up failed")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn run_errors_debug_as_a_readable_chain() {
        let e = RunError::lambda(Box::new(Outer(Inner)));
        assert_eq!(
            format!("{e:?}"),
            "start-up failed\n\nCaused by:\n    the queue does not exist"
        );
        assert_eq!(e.to_string(), "start-up failed");
        assert!(matches!(e, RunError::Lambda(_)));
    }

    #[test]
    fn a_configuration_error_stays_one_whichever_runner_reports_it() {
        let config = || ConfigError::MissingEnv {
            var: "SQS_QUEUE_URL",
            hint: "the URL of the queue to poll",
        };
        let e = RunError::lambda(Box::new(config()));
        assert!(matches!(e, RunError::Config(_)), "{e:?}");
        assert_eq!(format!("{e:?}"), config().to_string());
        let e = RunError::telemetry(Box::new(config()));
        assert!(matches!(e, RunError::Config(_)), "{e:?}");
        #[cfg(feature = "poller")]
        {
            let e = RunError::from(sqs_worker_poller::PollerError::Config(config()));
            assert!(matches!(e, RunError::Config(_)), "{e:?}");
        }
    }
}
