//! What an SDK error means: retry it soon, back off, or stop. And the error's
//! text for logs, with receipt handles redacted.

use std::fmt;
use std::time::Duration;

use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use backon::ExponentialBuilder;

/// What an SDK error means for a runner. New classes may be added (for
/// example expired credentials apart from a missing permission): match with
/// a `_` arm, or use [`Class::is_transient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Class {
    /// 5xx, timeouts, connection failures: retry with backoff.
    Transient,
    /// SQS or KMS asked the caller to slow down (throttling codes, HTTP 429):
    /// retry with backoff.
    Throttled,
    /// The queue reached a limit on messages in flight (HTTP 403 `OverLimit`):
    /// retry with a long backoff; it ends when in-flight messages settle.
    OverLimit,
    /// The queue does not exist.
    NoQueue,
    /// Credentials refused or a permission missing.
    Denied,
    /// The client cannot sign requests: no region or no credentials found.
    Setup(SetupProblem),
    /// Anything else: retrying will not help.
    Fatal,
}

impl Class {
    /// Whether the same request may succeed later (transient, throttled or
    /// over the in-flight limit).
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Transient | Self::Throttled | Self::OverLimit)
    }

    /// Worth retrying once a runner has called SQS successfully: transient
    /// errors, and credential or permission failures too (an expired token or
    /// a role's credentials failing to refresh are temporary on a running
    /// task; at start-up they stay fatal).
    pub fn retryable_after_start(self) -> bool {
        self.is_transient() || self.is_credentials()
    }

    /// Credentials refused, missing or expired, or a permission missing.
    pub fn is_credentials(self) -> bool {
        matches!(self, Self::Denied | Self::Setup(SetupProblem::Credentials))
    }
}

/// What is missing for the client to sign requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetupProblem {
    /// No region.
    Region,
    /// No credentials.
    Credentials,
}

impl SetupProblem {
    /// What is missing and how to provide it, in one sentence.
    pub fn hint(self) -> &'static str {
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

/// Error codes that mean "slow down".
fn throttled_code(code: &str) -> bool {
    code.contains("Throttl")
        || matches!(
            code,
            "RequestThrottled"
                | "KmsThrottled"
                | "SlowDown"
                | "TooManyRequestsException"
                | "ProvisionedThroughputExceededException"
        )
}

/// Error codes that mean "try again".
fn transient_code(code: &str) -> bool {
    matches!(
        code,
        "ServiceUnavailable"
            | "InternalError"
            | "InternalFailure"
            | "RequestTimeout"
            | "RequestTimeoutException"
    )
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

/// Whether a per-entry batch error code (`BatchResultErrorEntry`) is worth
/// retrying: throttling and server faults are; an invalid or expired receipt
/// handle and other sender faults are not.
pub fn transient_entry(code: &str, sender_fault: bool) -> bool {
    throttled_code(code)
        || transient_code(code)
        || !sender_fault && !code.starts_with("ReceiptHandle") && !code.contains("NonExistent")
}

/// Classifies an SDK error.
pub fn classify<E>(e: &SdkError<E>) -> Class
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
            classify_code(code, status)
        }
        _ => Class::Fatal,
    }
}

/// Classifies a service error by its code and HTTP status.
fn classify_code(code: &str, status: u16) -> Class {
    if no_queue_code(code) {
        Class::NoQueue
    } else if code == "OverLimit" || code.ends_with("#OverLimit") {
        // HTTP 403 `x-amzn-query-error: OverLimit;Sender`, or JSON
        // `__type: com.amazonaws.sqs#OverLimit` (the SDK strips the namespace).
        Class::OverLimit
    } else if denied_code(code) {
        Class::Denied
    } else if throttled_code(code) || status == 429 {
        Class::Throttled
    } else if transient_code(code) || status >= 500 {
        Class::Transient
    } else if status == 403 {
        Class::Denied
    } else {
        Class::Fatal
    }
}

/// Whether a `SendMessage` error says the message is too large (SQS answers
/// `InvalidParameterValue`, "Message must be shorter than N bytes"). Any
/// invalid-parameter answer counts: sending fewer attributes may fix it too.
pub fn too_large<E>(e: &SdkError<E>) -> bool
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    matches!(
        e.code(),
        Some(
            "InvalidParameterValue"
                | "InvalidParameterValueException"
                | "MessageTooLong"
                | "InvalidMessageContents"
        )
    )
}

/// An SDK error with its whole context in `Display` (the SDK's own `Display`
/// says only "service error"), receipt handles redacted.
pub struct Described(String);

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
pub fn describe<E>(e: &SdkError<E>) -> Described
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
pub fn redact(text: &str) -> String {
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

/// Backoff for a receive loop: 100 ms doubling to 10 s, with jitter, forever.
pub fn receive_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
}

/// Backoff of the receive loop for the in-flight limit and for credentials
/// failing mid-run: 1 s doubling to 60 s, with jitter, forever.
pub fn long_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
}

/// Backoff for settlement calls: 50 ms doubling to 5 s, with jitter, for
/// about a minute in all (a receipt handle is rarely worth more).
pub fn settle_backoff() -> ExponentialBuilder {
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

    #[test]
    fn over_limit_is_not_access_denied() {
        assert_eq!(classify_code("OverLimit", 403), Class::OverLimit);
        assert!(Class::OverLimit.is_transient());
        assert_eq!(classify_code("AccessDenied", 403), Class::Denied);
        assert_eq!(classify_code("SomethingElse", 403), Class::Denied);
        assert!(!Class::Denied.is_transient());
        assert_eq!(classify_code("RequestThrottled", 400), Class::Throttled);
        assert_eq!(classify_code("", 429), Class::Throttled);
        assert_eq!(classify_code("InternalError", 500), Class::Transient);
        assert_eq!(classify_code("InvalidParameterValue", 400), Class::Fatal);
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
        let conf = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
            .credentials_provider(aws_sdk_sqs::config::SharedCredentialsProvider::new(Failing))
            .build();
        let e = aws_sdk_sqs::Client::from_conf(conf)
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
        assert!(!class.is_transient());
        assert!(Class::Denied.retryable_after_start());
        assert!(!Class::NoQueue.retryable_after_start());
        assert!(!Class::Fatal.retryable_after_start());
    }
}
