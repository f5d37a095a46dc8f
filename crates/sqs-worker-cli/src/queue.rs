//! The SQS client from the environment, and queues named by URL, name or ARN.

use std::collections::HashMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;

use crate::error::{CliError, exit};

/// A queue the command works on.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    /// Its URL.
    pub(crate) url: String,
    /// Its name (the last path segment of the URL).
    pub(crate) name: String,
}

impl Queue {
    /// Whether it is a FIFO queue (its name ends in `.fifo`).
    pub(crate) fn is_fifo(&self) -> bool {
        self.name.ends_with(".fifo")
    }
}

/// The SQS client, configured like the runners: `AWS_REGION`, `AWS_PROFILE`,
/// `AWS_ACCESS_KEY_ID`..., and `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_SQS`)
/// for a local server.
pub(crate) async fn client() -> Result<(Client, Option<String>), CliError> {
    let conf = aws_config::load_from_env().await;
    let region = conf.region().map(|r| r.as_ref().to_owned());
    if region.is_none() {
        return Err(CliError::new(
            exit::CONFIG,
            "No AWS region is configured: set AWS_REGION (or a profile with a region).",
        ));
    }
    Ok((Client::new(&conf), region))
}

/// The queue behind `spec`: a URL is used as it is (after a region check),
/// a name or an ARN is looked up with `GetQueueUrl`.
pub(crate) async fn resolve(
    client: &Client,
    region: Option<&str>,
    spec: &str,
) -> Result<Queue, CliError> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(CliError::usage("The queue is empty: give its URL or name."));
    }
    if spec.starts_with("https://") || spec.starts_with("http://") {
        check_region(spec, region)?;
        let name = spec
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(spec);
        return Ok(Queue {
            url: spec.to_owned(),
            name: name.to_owned(),
        });
    }
    let (name, owner) = match parse_arn(spec) {
        Some(arn) => {
            if let Some(r) = region
                && arn.region != r
            {
                return Err(wrong_region(spec, arn.region, r));
            }
            (arn.name.to_owned(), Some(arn.account.to_owned()))
        }
        None => (spec.to_owned(), None),
    };
    let out = client
        .get_queue_url()
        .queue_name(&name)
        .set_queue_owner_aws_account_id(owner)
        .send()
        .await
        .map_err(|e| CliError::sdk("GetQueueUrl", spec, &e))?;
    let url = out.queue_url().unwrap_or_default().to_owned();
    if url.is_empty() {
        return Err(CliError::new(
            exit::SERVICE,
            format!("SQS returned no URL for the queue {spec}."),
        ));
    }
    Ok(Queue { url, name })
}

/// The parts of an SQS queue ARN.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Arn<'a> {
    pub(crate) region: &'a str,
    pub(crate) account: &'a str,
    pub(crate) name: &'a str,
}

/// `arn:PARTITION:sqs:REGION:ACCOUNT:NAME`.
pub(crate) fn parse_arn(s: &str) -> Option<Arn<'_>> {
    let mut parts = s.splitn(6, ':');
    let (arn, _partition, service) = (parts.next()?, parts.next()?, parts.next()?);
    if arn != "arn" || service != "sqs" {
        return None;
    }
    let (region, account, name) = (parts.next()?, parts.next()?, parts.next()?);
    (!name.is_empty()).then_some(Arn {
        region,
        account,
        name,
    })
}

/// A queue URL on `sqs.REGION.amazonaws.com` (or the legacy
/// `REGION.queue.amazonaws.com`) must match the configured region: the SDK
/// signs for the configured one, and SQS answers a mismatch obscurely.
fn check_region(url: &str, region: Option<&str>) -> Result<(), CliError> {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    let in_url = host
        .strip_prefix("sqs.")
        .and_then(|h| h.split('.').next())
        .or_else(|| host.strip_suffix(".queue.amazonaws.com"));
    match (in_url, region) {
        (Some(u), Some(r)) if host.contains("amazonaws.com") && u != r => {
            Err(wrong_region(url, u, r))
        }
        _ => Ok(()),
    }
}

fn wrong_region(queue: &str, in_queue: &str, configured: &str) -> CliError {
    CliError::new(
        exit::CONFIG,
        format!(
            "The queue {queue} is in region {in_queue} but the configured region is \
             {configured}; set AWS_REGION={in_queue}."
        ),
    )
}

/// All attributes of a queue, by name.
pub(crate) async fn attributes(
    client: &Client,
    queue: &Queue,
) -> Result<HashMap<String, String>, CliError> {
    let out = client
        .get_queue_attributes()
        .queue_url(&queue.url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(|e| CliError::sdk("GetQueueAttributes", &queue.url, &e))?;
    Ok(out
        .attributes()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_parse() {
        assert_eq!(
            parse_arn("arn:aws:sqs:eu-west-1:123456789012:orders-dlq"),
            Some(Arn {
                region: "eu-west-1",
                account: "123456789012",
                name: "orders-dlq"
            })
        );
        assert_eq!(parse_arn("orders"), None);
        assert_eq!(parse_arn("arn:aws:sns:eu-west-1:1:topic"), None);
    }

    #[test]
    fn a_url_in_another_region_is_a_sentence() {
        let url = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders";
        assert!(check_region(url, Some("eu-west-1")).is_ok());
        let err = check_region(url, Some("us-east-1")).err();
        assert!(err.is_some_and(|e| e.code == exit::CONFIG && e.message.contains("eu-west-1")));
        assert!(check_region("http://127.0.0.1:5000/123/orders", Some("us-east-1")).is_ok());
    }
}
