//! The SQS client as the poller uses it: request counting, attempt timeouts,
//! and what an SDK error means (retry it, or stop).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sqs::error::{BoxError, DisplayErrorContext, ProvideErrorMetadata, SdkError};
use backon::ExponentialBuilder;

use crate::error::PollerError;

/// Counts every HTTP attempt the poller's clients send (SDK retries included).
#[derive(Debug, Clone)]
pub(crate) struct RequestCounter(pub(crate) Arc<AtomicU64>);

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "SqsWorkerRequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        let action = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map_or("unknown", |m| action_label(m.name()));
        metrics::counter!(sqs_worker_core::observe::names::SQS_REQUESTS, "action" => action)
            .increment(1);
        Ok(())
    }
}

/// A static label for the SQS actions the poller sends.
fn action_label(name: &str) -> &'static str {
    match name {
        "ReceiveMessage" => "ReceiveMessage",
        "DeleteMessageBatch" => "DeleteMessageBatch",
        "DeleteMessage" => "DeleteMessage",
        "ChangeMessageVisibilityBatch" => "ChangeMessageVisibilityBatch",
        "ChangeMessageVisibility" => "ChangeMessageVisibility",
        "SendMessage" => "SendMessage",
        "SendMessageBatch" => "SendMessageBatch",
        "GetQueueAttributes" => "GetQueueAttributes",
        "GetQueueUrl" => "GetQueueUrl",
        _ => "other",
    }
}

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

/// What an SDK error means for the poller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Throttling, 5xx, timeouts, connection failures: back off and retry.
    Transient,
    /// The queue does not exist.
    NoQueue,
    /// Credentials refused or permission missing.
    Denied,
    /// The client cannot sign requests: no region or no credentials found.
    Setup(SetupProblem),
    /// Anything else: retrying will not help.
    Fatal,
    /// The queue is at its in-flight limit (HTTP 403 `OverLimit`): back off.
    OverLimit,
}

/// Error codes that mean "back off and retry".
fn transient_code(code: &str) -> bool {
    code.contains("Throttl")
        || matches!(
            code,
            "RequestThrottled"
                | "ServiceUnavailable"
                | "InternalError"
                | "InternalFailure"
                | "KmsThrottled"
                | "RequestTimeout"
                | "RequestTimeoutException"
                | "SlowDown"
                | "TooManyRequestsException"
                | "ProvisionedThroughputExceededException"
        )
}

/// Whether a per-entry batch error code is worth retrying.
pub(crate) fn transient_entry(code: &str, sender_fault: bool) -> bool {
    transient_code(code)
        || !sender_fault && !code.starts_with("ReceiptHandle") && !code.contains("NonExistent")
}

fn denied_code(code: &str) -> bool {
    matches!(
        code,
        "AccessDenied"
            | "AccessDeniedException"
            | "InvalidClientTokenId"
            | "UnrecognizedClientException"
            | "SignatureDoesNotMatch"
            | "InvalidSecurity"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "MissingAuthenticationToken"
            | "IncompleteSignature"
            | "InvalidAccessKeyId"
            | "KMS.AccessDeniedException"
    )
}

fn no_queue_code(code: &str) -> bool {
    matches!(
        code,
        "AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist" | "NonExistentQueue"
    )
}

/// Classifies an SDK error.
pub(crate) fn classify<E>(e: &SdkError<E>) -> Class
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::DispatchFailure(d) if !(d.is_io() || d.is_timeout()) => {
            // A request that never left: a missing region or credentials is
            // a set-up problem no retry fixes; anything else may pass.
            let text = DisplayErrorContext(e).to_string().to_ascii_lowercase();
            if text.contains("region") {
                Class::Setup(SetupProblem::Region)
            } else if text.contains("credential") {
                Class::Setup(SetupProblem::Credentials)
            } else {
                Class::Transient
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Class::Transient
        }
        SdkError::ServiceError(_) => {
            let code = e.code().unwrap_or("");
            let status = e.raw_response().map_or(0, |r| r.status().as_u16());
            if no_queue_code(code) {
                Class::NoQueue
            } else if over_limit_code(code) {
                Class::OverLimit
            } else if denied_code(code) {
                Class::Denied
            } else if transient_code(code) || status >= 500 || status == 429 {
                Class::Transient
            } else if status == 403 {
                Class::Denied
            } else {
                Class::Fatal
            }
        }
        _ => Class::Fatal,
    }
}

// ---- Issue 14: limits and credentials that fail after start-up ------------
// (A separate block so it ports as one piece into the shared SQS crate.)

/// `OverLimit`: the queue holds its maximum of in-flight messages (about
/// 120,000 standard, 20,000 FIFO). SQS answers HTTP 403 with
/// `x-amzn-query-error: OverLimit;Sender` and, in the JSON protocol,
/// `__type: com.amazonaws.sqs#OverLimit`; the SDK reports the code as `OverLimit`.
fn over_limit_code(code: &str) -> bool {
    code == "OverLimit" || code.ends_with("#OverLimit")
}

impl Class {
    /// Worth retrying once the poller has received successfully: transient
    /// errors, the in-flight limit, and credential or permission failures
    /// (an expired token or a role's credentials failing to refresh are
    /// temporary on a running task; at start-up they stay fatal).
    pub(crate) fn retryable_after_start(self) -> bool {
        matches!(
            self,
            Class::Transient
                | Class::OverLimit
                | Class::Denied
                | Class::Setup(SetupProblem::Credentials)
        )
    }

    /// Credentials refused, missing or expired, or a permission missing.
    pub(crate) fn is_credentials(self) -> bool {
        matches!(
            self,
            Class::Denied | Class::Setup(SetupProblem::Credentials)
        )
    }
}

/// Backoff of the receive loop for the in-flight limit and for credentials
/// failing mid-run: 1 s doubling to 60 s, with jitter, forever.
pub(crate) fn long_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
}

// ---- end of the issue 14 block -----------------------------------------------

/// What is missing for the client to sign requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetupProblem {
    /// No region.
    Region,
    /// No credentials.
    Credentials,
}

impl SetupProblem {
    fn hint(self) -> &'static str {
        match self {
            Self::Region => {
                "no AWS region is configured: set AWS_REGION (or a region in the AWS profile)"
            }
            Self::Credentials => {
                "no AWS credentials were found: set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with a task or instance role"
            }
        }
    }
}

/// An SDK error with its whole context in `Display` (the SDK's own `Display`
/// says only "service error").
pub(crate) struct Described(String);

impl fmt::Debug for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Described {}

/// The error's text with its context, for logs and error sources.
pub(crate) fn describe<E>(e: &SdkError<E>) -> Described
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let text = match e {
        // The code and message, not the raw response the SDK's context dumps.
        SdkError::ServiceError(_) => format!(
            "{}: {} (HTTP {})",
            e.code().unwrap_or("unknown error"),
            e.message().unwrap_or("no message"),
            e.raw_response().map_or(0, |r| r.status().as_u16())
        ),
        _ => DisplayErrorContext(e).to_string(),
    };
    Described(redact(&text))
}

/// Replaces anything that looks like a receipt handle (a long run of base64
/// characters: SQS quotes the handle in some error messages) so it never
/// reaches a log.
pub(crate) fn redact(text: &str) -> String {
    // A quoted value in a message about a receipt handle is the handle, whatever its length.
    let text = &if text.to_ascii_lowercase().contains("receipt handle") {
        redact_quoted(text)
    } else {
        text.to_owned()
    };
    const MIN: usize = 40;
    let token = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-');
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= MIN {
            out.push_str("<redacted>");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if token(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Replaces every double-quoted span with `"<redacted>"`.
fn redact_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut parts = text.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        out.push('"');
        out.push_str(if inside { "<redacted>" } else { part });
        inside = !inside;
    }
    out
}

/// Turns a non-transient SDK error into the poller's error, naming the queue.
pub(crate) fn fatal<E>(e: &SdkError<E>, queue: &str, operation: &'static str) -> PollerError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let source: BoxError = Box::new(describe(e));
    let queue = queue.to_owned();
    match classify(e) {
        Class::NoQueue => PollerError::QueueNotFound { queue, source },
        Class::Setup(problem) => PollerError::Setup {
            queue,
            problem: problem.hint(),
        },
        Class::Denied => PollerError::AccessDenied {
            queue,
            operation,
            source,
        },
        _ => PollerError::Sqs {
            queue,
            operation,
            source,
        },
    }
}

/// Backoff for the receive loop: 100 ms doubling to 10 s, with jitter, forever.
pub(crate) fn receive_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
}

/// Backoff for settlement calls: 50 ms doubling to 5 s, with jitter, for
/// about a minute in all (a receipt handle is rarely worth more).
pub(crate) fn settle_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .with_max_times(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_handles_are_redacted() {
        let handle =
            "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a/5t+jQ7Cc8hMrWWcQ7hL9kL6n0T8pVYxGvS1IYhyWAD1g==";
        let text = format!("The input receipt handle \"{handle}\" is not a valid receipt handle.");
        let r = redact(&text);
        assert!(!r.contains(handle), "{r}");
        assert!(r.contains("is not a valid receipt handle"));
        // Short handles (moto's) are caught by the quoting, whatever their length.
        let short = "The input receipt handle \"jkndzdujunitxq\" is not a valid receipt handle";
        let r = redact(short);
        assert!(!r.contains("jkndzdujunitxq"), "{r}");
        assert!(
            r.contains("\"<redacted>\" is not a valid receipt handle"),
            "{r}"
        );
        let url = "http://127.0.0.1:5000/123456789012/orders-dlq-4242 message 5fea7756-0ea4-451a-a703-a558b933e274";
        assert_eq!(redact(url), url);
    }

    #[test]
    fn entry_codes() {
        assert!(transient_entry("InternalError", false));
        assert!(transient_entry("RequestThrottled", true));
        assert!(!transient_entry("ReceiptHandleIsInvalid", true));
        assert!(!transient_entry("ReceiptHandleIsInvalid", false));
        assert!(!transient_entry("InvalidParameterValue", true));
        assert!(denied_code("InvalidClientTokenId"));
        assert!(no_queue_code("AWS.SimpleQueueService.NonExistentQueue"));
    }

    // ---- issue 14 block: classification of limits and credentials ----

    /// A client to a closed port, with `credentials` (or none).
    fn client(
        credentials: Option<aws_sdk_sqs::config::SharedCredentialsProvider>,
        endpoint: &str,
    ) -> aws_sdk_sqs::Client {
        let mut b = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled());
        if let Some(c) = credentials {
            b = b.credentials_provider(c);
        }
        aws_sdk_sqs::Client::from_conf(b.build())
    }

    /// An HTTP server answering every request once with `status`, `headers`, `body`.
    async fn answer(status: &'static str, headers: &'static str, body: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = c.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.0\r\n{headers}\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = c.write_all(resp.as_bytes()).await;
            }
        });
        endpoint
    }

    #[tokio::test]
    async fn over_limit_is_not_access_denied() {
        let endpoint = answer(
            "403 Forbidden",
            "x-amzn-query-error: OverLimit;Sender\r\n",
            r#"{"__type":"com.amazonaws.sqs#OverLimit","message":"too many in flight"}"#,
        )
        .await;
        let creds = aws_sdk_sqs::config::Credentials::new("a", "b", None, None, "test");
        let c = client(
            Some(aws_sdk_sqs::config::SharedCredentialsProvider::new(creds)),
            &endpoint,
        );
        let e = c
            .receive_message()
            .queue_url("http://q")
            .send()
            .await
            .unwrap_err();
        assert_eq!(classify(&e), Class::OverLimit, "{}", describe(&e));
        assert!(Class::OverLimit.retryable_after_start());
        assert!(over_limit_code("com.amazonaws.sqs#OverLimit"));
        // Any other 403 is still access denied.
        let endpoint = answer(
            "403 Forbidden",
            "",
            r#"{"__type":"com.amazonaws.sqs#Whatever","message":"no"}"#,
        )
        .await;
        let creds = aws_sdk_sqs::config::Credentials::new("a", "b", None, None, "test");
        let c = client(
            Some(aws_sdk_sqs::config::SharedCredentialsProvider::new(creds)),
            &endpoint,
        );
        let e = c
            .receive_message()
            .queue_url("http://q")
            .send()
            .await
            .unwrap_err();
        assert_eq!(classify(&e), Class::Denied);
    }

    #[derive(Debug)]
    struct Failing;

    impl aws_sdk_sqs::config::ProvideCredentials for Failing {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            aws_credential_types::provider::future::ProvideCredentials::ready(Err(
                aws_credential_types::provider::error::CredentialsError::provider_error(
                    "the role's credentials could not be refreshed",
                ),
            ))
        }
    }

    #[tokio::test]
    async fn a_failing_credentials_provider_is_a_credentials_problem_retryable_after_start() {
        let c = client(
            Some(aws_sdk_sqs::config::SharedCredentialsProvider::new(Failing)),
            "http://127.0.0.1:9",
        );
        let e = c
            .receive_message()
            .queue_url("http://q")
            .send()
            .await
            .unwrap_err();
        let class = classify(&e);
        assert_eq!(
            class,
            Class::Setup(SetupProblem::Credentials),
            "{}",
            describe(&e)
        );
        assert!(class.is_credentials() && class.retryable_after_start());
        // Fatal at start-up: the clear sentence.
        assert!(matches!(
            fatal(&e, "q", "ReceiveMessage"),
            PollerError::Setup { .. }
        ));
        assert!(!Class::NoQueue.retryable_after_start());
        assert!(!Class::Fatal.retryable_after_start());
        assert!(!Class::Setup(SetupProblem::Region).retryable_after_start());
    }
}
