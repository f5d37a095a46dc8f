//! Which SQS errors are worth retrying.
//!
//! Kept in one place so it can later point at the shared classification of
//! `sqs-worker-sqs` (the runners' settlement crate).

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};

/// Throttling, 5xx, timeouts and connection failures: back off and retry.
pub(crate) fn transient_error<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    match e {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(d) => d.is_io() || d.is_timeout(),
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            status >= 500 || status == 429 || e.code().is_some_and(transient_code)
        }
        _ => false,
    }
}

/// Whether a per-entry `Failed` result is worth retrying: a transient code,
/// or any failure SQS says was not the sender's fault.
pub(crate) fn transient_entry(code: &str, sender_fault: bool) -> bool {
    transient_code(code) || !sender_fault
}

fn transient_code(code: &str) -> bool {
    code.contains("Throttl")
        || matches!(
            code,
            "RequestThrottled"
                | "ServiceUnavailable"
                | "InternalError"
                | "InternalFailure"
                | "KmsThrottled"
                | "KMS.ThrottlingException"
                | "RequestTimeout"
                | "SlowDown"
                | "ExpiredToken"
                | "ExpiredTokenException"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_codes() {
        assert!(transient_entry("ThrottlingException", true));
        assert!(transient_entry("InternalError", false));
        assert!(transient_entry("Whatever", false));
        assert!(!transient_entry("InvalidParameterValue", true));
        assert!(!transient_entry("InvalidMessageContents", true));
    }
}
