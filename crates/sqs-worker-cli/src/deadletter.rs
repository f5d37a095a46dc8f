//! A dead letter read through the schema (`dlq_schema`), and redrive filters.

use crate::dlq_schema as schema;
use crate::error::CliError;
use crate::scan::Received;

/// What the schema attributes say about a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeadLetter {
    /// `SqsWorker.ErrorKind`.
    pub(crate) kind: Option<String>,
    /// `SqsWorker.Error`.
    pub(crate) error: Option<String>,
    /// `SqsWorker.SourceQueueUrl` (or the legacy `SqsWorker.SourceQueue`).
    pub(crate) source_url: Option<String>,
    /// `SqsWorker.SourceQueueArn`.
    pub(crate) source_arn: Option<String>,
    /// `SqsWorker.FailedAt`, ms since the epoch.
    pub(crate) failed_at_ms: Option<u64>,
    /// Whether a runner wrote it (any `SqsWorker.*` attribute); else SQS
    /// moved it here after `maxReceiveCount` receives.
    pub(crate) by_runner: bool,
}

impl DeadLetter {
    /// Reads the schema attributes of `m`.
    pub(crate) fn of(m: &Received) -> Self {
        let own = |k: &str| m.attr(k).map(str::to_owned);
        Self {
            kind: own(schema::ERROR_KIND),
            error: own(schema::ERROR),
            source_url: own(schema::SOURCE_QUEUE_URL).or_else(|| own(schema::LEGACY_SOURCE_QUEUE)),
            source_arn: own(schema::SOURCE_QUEUE_ARN),
            failed_at_ms: m
                .attr(schema::FAILED_AT)
                .and_then(|v| v.trim().parse().ok()),
            by_runner: m.attributes.keys().any(|k| k.starts_with(schema::PREFIX)),
        }
    }
}

/// One `--filter`: `kind=VALUE` (exact) or `error~TEXT` (the error contains it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filter {
    /// `SqsWorker.ErrorKind` equals this.
    Kind(String),
    /// `SqsWorker.Error` contains this.
    ErrorContains(String),
}

impl Filter {
    /// Parses `kind=..` or `error~..`.
    pub(crate) fn parse(s: &str) -> Result<Self, CliError> {
        if let Some(v) = s.strip_prefix("kind=") {
            return Ok(Self::Kind(v.to_owned()));
        }
        if let Some(v) = s.strip_prefix("error~") {
            return Ok(Self::ErrorContains(v.to_owned()));
        }
        Err(CliError::usage(format!(
            "The filter {s:?} is not understood: use kind=KIND or error~TEXT."
        )))
    }

    /// Whether `d` passes this filter.
    pub(crate) fn matches(&self, d: &DeadLetter) -> bool {
        match self {
            Self::Kind(k) => d.kind.as_deref() == Some(k.as_str()),
            Self::ErrorContains(t) => d.error.as_deref().is_some_and(|e| e.contains(t.as_str())),
        }
    }
}

/// Whether `d` passes every filter.
pub(crate) fn matches_all(filters: &[Filter], d: &DeadLetter) -> bool {
    filters.iter().all(|f| f.matches(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dl(kind: &str, error: &str) -> DeadLetter {
        DeadLetter {
            kind: Some(kind.into()),
            error: Some(error.into()),
            source_url: None,
            source_arn: None,
            failed_at_ms: None,
            by_runner: true,
        }
    }

    #[test]
    fn filters_parse_and_match() {
        let k = Filter::parse("kind=permanent").ok();
        assert_eq!(k, Some(Filter::Kind("permanent".into())));
        let e = Filter::parse("error~timeout").ok();
        assert!(Filter::parse("kind:permanent").is_err());
        let both = [k.into_iter().collect::<Vec<_>>(), e.into_iter().collect()].concat();
        assert!(matches_all(&both, &dl("permanent", "db timeout after 5s")));
        assert!(!matches_all(&both, &dl("permanent", "bad json")));
        assert!(!matches_all(&both, &dl("panicked", "timeout")));
        assert!(matches_all(&[], &dl("panicked", "x")));
    }
}
