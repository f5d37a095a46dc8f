//! Dead-letter queues at start-up: the configured one is checked, and on a
//! FIFO queue the redrive policy's is found, so that the poller can move a
//! FIFO group's head there itself after its in-process retries (see
//! [`fifo`](crate::fifo)).

use std::sync::Arc;

use aws_sdk_sqs::types::QueueAttributeName;
use backon::Retryable;
use sqs_worker_core::config::ConfigError;
use sqs_worker_sqs::classify::{classify, describe, settle_backoff};
use sqs_worker_sqs::dead_letter::{DEFAULT_MAX_MESSAGE_SIZE, DeadLetterQueue};

use crate::error::{PollerError, fatal};
use crate::settle::DeadLetter;

/// The `deadLetterTargetArn` of a queue's `RedrivePolicy` attribute (JSON).
pub(crate) fn dead_letter_target_arn(redrive_policy: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(redrive_policy).ok()?;
    let arn = v.get("deadLetterTargetArn")?.as_str()?;
    (!arn.is_empty()).then(|| arn.to_owned())
}

/// The queue name and owner account of an SQS queue ARN
/// (`arn:aws:sqs:eu-west-1:123456789012:orders-dlq.fifo`).
fn arn_parts(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (_, _, service, _, account, name) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    (service == "sqs" && !name.is_empty()).then_some((name, account))
}

/// The redrive policy's dead-letter queue (ARN `arn`) of the FIFO queue
/// `queue` (ARN `source_arn`), for the heads the poller moves itself.
/// `None`, with a warning, when it cannot be found: heads that keep failing
/// then go back to SQS, whose redrive policy moves them.
pub(crate) async fn redrive_dead_letter(
    client: &aws_sdk_sqs::Client,
    arn: &str,
    queue: &str,
    source_arn: &str,
) -> Option<Arc<DeadLetter>> {
    let warn = |reason: &dyn std::fmt::Display| {
        tracing::warn!(
            queue,
            dead_letter_target_arn = arn,
            %reason,
            "cannot use the redrive policy's dead-letter queue: a FIFO head that keeps failing \
             is left to SQS's redrive, and the rest of its group counts those receives too"
        );
    };
    let Some((name, account)) = arn_parts(arn) else {
        warn(&"not an SQS queue ARN");
        return None;
    };
    let call = || {
        client
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
    };
    let url = match call
        .retry(settle_backoff().with_max_times(5))
        .when(|e| classify(e).is_transient())
        .await
    {
        Ok(out) => out.queue_url?,
        Err(e) => {
            warn(&describe(&e));
            return None;
        }
    };
    match check_dead_letter_queue(client, &url, queue).await {
        Ok(dlq) => Some(Arc::new(DeadLetter {
            queue: dlq,
            source_arn: source_arn.to_owned(),
        })),
        Err(e) => {
            warn(&e);
            None
        }
    }
}

/// Checks that the dead-letter queue `dlq` answers and is not `queue`, and
/// reads its maximum message size.
pub(crate) async fn check_dead_letter_queue(
    client: &aws_sdk_sqs::Client,
    dlq: &str,
    queue: &str,
) -> Result<DeadLetterQueue, PollerError> {
    if dlq == queue {
        return Err(ConfigError::invalid("dead_letter_queue", "is the queue being polled").into());
    }
    let out = (|| {
        client
            .get_queue_attributes()
            .queue_url(dlq)
            .attribute_names(QueueAttributeName::MaximumMessageSize)
            .send()
    })
    .retry(settle_backoff().with_max_times(5))
    .when(|e| classify(e).is_transient())
    .await
    .map_err(|e| fatal(&e, dlq, "GetQueueAttributes"))?;
    // The dead-letter send keeps each message within the DLQ's own limit.
    let max_message_size = out
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::MaximumMessageSize))
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE);
    Ok(DeadLetterQueue {
        url: dlq.to_owned(),
        max_message_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redrive_target_and_its_parts() {
        let arn = "arn:aws:sqs:eu-west-1:123456789012:orders-dlq.fifo";
        let policy = format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"3"}}"#);
        assert_eq!(dead_letter_target_arn(&policy).as_deref(), Some(arn));
        assert_eq!(arn_parts(arn), Some(("orders-dlq.fifo", "123456789012")));
        assert_eq!(dead_letter_target_arn(r#"{"maxReceiveCount":"3"}"#), None);
        assert_eq!(dead_letter_target_arn("not json"), None);
        assert_eq!(arn_parts("arn:aws:sns:eu-west-1:1:topic"), None);
        assert_eq!(arn_parts("orders-dlq"), None);
    }
}
