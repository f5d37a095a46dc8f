//! Errors as sentences, and the exit code each one means.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | done in part: some messages could not be sent, moved or read (the summary says which) |
//! | 2 | usage: bad arguments or input, or a destructive command not confirmed |
//! | 3 | the queue does not exist (name, URL, account or region) |
//! | 4 | access denied, or the credentials are invalid or expired |
//! | 5 | configuration: no region, no credentials, or a queue URL in another region |
//! | 6 | SQS could not be reached or failed (network, throttling, service error) |

use std::fmt;

use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// The exit codes, one meaning each (the table above; `--help` and the README
/// repeat it).
pub(crate) mod exit {
    /// Done.
    pub(crate) const OK: u8 = 0;
    /// Some messages could not be sent, moved or read.
    pub(crate) const PARTIAL: u8 = 1;
    /// Bad arguments or input, or not confirmed.
    pub(crate) const USAGE: u8 = 2;
    /// The queue does not exist.
    pub(crate) const NOT_FOUND: u8 = 3;
    /// Access denied or invalid credentials.
    pub(crate) const ACCESS: u8 = 4;
    /// No region, no credentials, or a queue in another region.
    pub(crate) const CONFIG: u8 = 5;
    /// SQS unreachable or failing.
    pub(crate) const SERVICE: u8 = 6;
}

/// The exit-code table as `--help` prints it (a macro so `concat!` can
/// put it into the help text).
macro_rules! exit_codes_help {
    () => {
        "Exit codes:
  0  done
  1  done in part: some messages could not be sent, moved or read (see the summary)
  2  usage: bad arguments or input, or a destructive command not confirmed
  3  the queue does not exist (check the name, account and region)
  4  access denied, or invalid or expired credentials
  5  configuration: no region, no credentials, or a queue URL in another region
  6  SQS could not be reached or failed (network, throttling, service error)"
    };
}
pub(crate) use exit_codes_help;

#[cfg(test)]
const EXIT_CODES_HELP: &str = exit_codes_help!();

/// A failure to report: a sentence for the terminal and an exit code.
#[derive(Debug)]
pub(crate) struct CliError {
    /// What went wrong, as a sentence.
    pub(crate) message: String,
    /// The process exit code (see [`exit`]).
    pub(crate) code: u8,
}

impl CliError {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code,
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(exit::USAGE, message)
    }

    /// An SDK error from `action` on `queue` (a URL or name), classified.
    pub(crate) fn sdk<E, R>(action: &str, queue: &str, err: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug,
    {
        let code = err.code().unwrap_or_default();
        let detail = err.message().unwrap_or_default();
        if is_not_found(code) {
            return Self::new(
                exit::NOT_FOUND,
                format!(
                    "The queue {queue} does not exist (or not in this account and region); \
                     check the name and AWS_REGION."
                ),
            );
        }
        if is_access(code) {
            return Self::new(
                exit::ACCESS,
                format!(
                    "Access denied: {action} on {queue} was refused ({code}{}); check the \
                     credentials and the IAM policy.",
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {detail}")
                    }
                ),
            );
        }
        match err {
            SdkError::ConstructionFailure(_) => Self::new(
                exit::CONFIG,
                format!(
                    "Could not build the {action} request: {}. Set AWS_REGION (and credentials).",
                    DisplayErrorContext(err)
                ),
            ),
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                let text = DisplayErrorContext(err).to_string();
                if text.contains("credentials") {
                    return Self::new(
                        exit::CONFIG,
                        format!("No AWS credentials were found for {action}: {text}"),
                    );
                }
                Self::new(
                    exit::SERVICE,
                    format!("Could not reach SQS for {action} on {queue}: {text}"),
                )
            }
            _ => Self::new(
                exit::SERVICE,
                format!(
                    "SQS refused {action} on {queue}: {}",
                    if code.is_empty() {
                        DisplayErrorContext(err).to_string()
                    } else {
                        format!("{code}: {detail}")
                    }
                ),
            ),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn is_not_found(code: &str) -> bool {
    code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist")
}

fn is_access(code: &str) -> bool {
    matches!(
        code,
        "AccessDenied"
            | "AccessDeniedException"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "UnrecognizedClientException"
            | "ExpiredToken"
            | "InvalidSecurity"
            | "KMS.AccessDeniedException"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        assert!(is_not_found("AWS.SimpleQueueService.NonExistentQueue"));
        assert!(is_not_found("QueueDoesNotExist"));
        assert!(is_access("AccessDenied"));
        assert!(!is_access("Throttling"));
    }

    #[test]
    fn help_table_lists_every_code() {
        for code in [
            exit::OK,
            exit::PARTIAL,
            exit::USAGE,
            exit::NOT_FOUND,
            exit::ACCESS,
            exit::CONFIG,
            exit::SERVICE,
        ] {
            assert!(EXIT_CODES_HELP.contains(&format!("\n  {code}  ")));
        }
    }
}
