//! The two SQS clients the poller uses: one for long polls, one for the
//! rest, each with its attempt timeout and the request counter.

use std::time::Duration;

use aws_sdk_sqs::config::timeout::TimeoutConfig;
use sqs_worker_sqs::RequestCounter;

/// The two clients the poller uses, both sharing the caller's connection pool:
/// one for long polls (attempt timeout above the wait time), one for the rest.
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    pub(crate) receive: aws_sdk_sqs::Client,
    pub(crate) settle: aws_sdk_sqs::Client,
}

impl Clients {
    pub(crate) fn new(
        base: &aws_sdk_sqs::Client,
        wait: Duration,
        counter: &RequestCounter,
    ) -> Self {
        let make = |attempt: Duration| {
            let mut timeouts = base
                .config()
                .timeout_config()
                .cloned()
                .unwrap_or_else(TimeoutConfig::disabled)
                .to_builder();
            timeouts = timeouts.operation_attempt_timeout(attempt);
            let conf = base
                .config()
                .to_builder()
                .timeout_config(timeouts.build())
                .interceptor(counter.clone())
                .build();
            aws_sdk_sqs::Client::from_conf(conf)
        };
        Self {
            receive: make(wait + Duration::from_secs(10)),
            settle: make(Duration::from_secs(15)),
        }
    }
}
