//! [`Sender`]: sends typed messages to one queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeNameForSends, MessageSystemAttributeValue,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use serde::Serialize;
use sqs_worker_core::config::var;
use sqs_worker_core::{AttributeValue, MessageAttribute, MessageAttributes};

use crate::batch::{Prepared, Sent, chunk, send_chunk};
use crate::error::{SendError, SetupError};
use crate::outgoing::{MAX_DELAY, Outgoing, deduplication_id};

/// Requests in flight at once for one `send_batch` call on a standard queue
/// (FIFO queues send one at a time, to keep order).
const PARALLEL_REQUESTS: usize = 8;
/// Tries per request, transient failures included.
const DEFAULT_ATTEMPTS: usize = 5;

/// Sends messages to one SQS queue: typed, batched, FIFO-aware, with the
/// current trace context.
///
/// Cheap to clone (one `Arc`).
///
/// ```no_run
/// # async fn f(config: aws_config::SdkConfig) -> Result<(), Box<dyn std::error::Error>> {
/// use sqs_worker_producer::{Outgoing, Sender};
///
/// #[derive(serde::Serialize)]
/// struct Order { order_id: u64 }
///
/// let sender = Sender::new(aws_sdk_sqs::Client::new(&config), "orders").await?;
/// sender.send(&Order { order_id: 1 }).await?;
/// let results = sender
///     .send_batch((2..100).map(|id| Outgoing::json(&Order { order_id: id })).collect::<Result<Vec<_>, _>>()?)
///     .await;
/// assert!(results.iter().all(Result::is_ok));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Sender {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Clone)]
pub(crate) struct Inner {
    pub(crate) client: aws_sdk_sqs::Client,
    pub(crate) queue_url: String,
    pub(crate) fifo: bool,
    content_based_dedup: bool,
    max_message_size: usize,
    attempts: usize,
    #[cfg(feature = "large-payloads")]
    pub(crate) offload: Option<crate::payload::LargePayloads>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("queue_url", &self.inner.queue_url)
            .field("fifo", &self.inner.fifo)
            .field("content_based_dedup", &self.inner.content_based_dedup)
            .field("max_message_size", &self.inner.max_message_size)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// A sender for `queue` (a URL, or a name resolved with `GetQueueUrl`).
    /// Reads the queue's attributes once: its maximum message size and, for
    /// FIFO queues, whether content-based deduplication is on.
    pub async fn new(client: aws_sdk_sqs::Client, queue: &str) -> Result<Self, SetupError> {
        let lookup = |e: String| SetupError::Lookup {
            queue: queue.to_owned(),
            source: e.into(),
        };
        let queue_url = if queue.contains("://") {
            queue.to_owned()
        } else {
            let out = client.get_queue_url().queue_name(queue).send().await;
            let out = out.map_err(|e| lookup(DisplayErrorContext(&e).to_string()))?;
            out.queue_url().unwrap_or_default().to_owned()
        };
        let fifo = queue_url.ends_with(".fifo");
        let attrs = client
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::MaximumMessageSize)
            .attribute_names(QueueAttributeName::ContentBasedDeduplication)
            .send()
            .await
            .map_err(|e| lookup(DisplayErrorContext(&e).to_string()))?;
        let attrs = attrs.attributes();
        let get = |k: QueueAttributeName| attrs.and_then(|a| a.get(&k)).map(String::as_str);
        let max_message_size = get(QueueAttributeName::MaximumMessageSize)
            .and_then(|v| v.parse().ok())
            .unwrap_or(sqs_worker_core::MAX_MESSAGE_SIZE);
        let content_based_dedup =
            get(QueueAttributeName::ContentBasedDeduplication) == Some("true");
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                queue_url,
                fifo,
                content_based_dedup,
                max_message_size,
                attempts: DEFAULT_ATTEMPTS,
                #[cfg(feature = "large-payloads")]
                offload: None,
            }),
        })
    }

    /// A sender for `SQS_QUEUE_URL` (or `SQS_QUEUE_NAME`), with an SQS client
    /// configured by `aws-config` from the environment.
    ///
    /// With `SQS_WORKER_OFFLOAD_BUCKET` set, bodies over the queue's limit
    /// go to that S3 bucket as the Amazon SQS Extended Client stores them
    /// ([`LargePayloads::from_env`](crate::payload::LargePayloads::from_env));
    /// that needs feature `large-payloads`, and without it the variable is
    /// an error rather than ignored.
    pub async fn from_env() -> Result<Self, SetupError> {
        let queue = match env(var::QUEUE_URL)? {
            Some(url) => url,
            None => env(var::QUEUE_NAME)?.ok_or(SetupError::NoQueue)?,
        };
        #[cfg(not(feature = "large-payloads"))]
        if env(var::OFFLOAD_BUCKET)?.is_some() {
            return Err(SetupError::NeedsFeature {
                name: var::OFFLOAD_BUCKET,
                feature: "large-payloads",
            });
        }
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let sender = Self::new(aws_sdk_sqs::Client::new(&config), &queue).await?;
        #[cfg(feature = "large-payloads")]
        if let Some(offload) = crate::payload::LargePayloads::from_env_with(&config)? {
            return Ok(sender.large_payloads(offload));
        }
        Ok(sender)
    }

    /// Tries per request, transient failures included (default 5, at least 1).
    #[must_use]
    pub fn attempts(mut self, attempts: usize) -> Self {
        self.inner_mut().attempts = attempts.max(1);
        self
    }

    /// Offloads large bodies to S3 the way the Amazon SQS Extended Client
    /// does (feature `large-payloads`).
    #[cfg(feature = "large-payloads")]
    #[must_use]
    pub fn large_payloads(mut self, store: crate::payload::LargePayloads) -> Self {
        self.inner_mut().offload = Some(store);
        self
    }

    fn inner_mut(&mut self) -> &mut Inner {
        // Settings are chained right after `new`; a clone made earlier keeps
        // its own settings.
        Arc::make_mut(&mut self.inner)
    }

    /// The queue URL.
    pub fn queue_url(&self) -> &str {
        &self.inner.queue_url
    }

    /// Whether the queue is FIFO.
    pub fn is_fifo(&self) -> bool {
        self.inner.fifo
    }

    /// The queue's maximum message size, as read at start.
    pub fn max_message_size(&self) -> usize {
        self.inner.max_message_size
    }

    /// Sends `value` as JSON.
    pub async fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<Sent, SendError> {
        self.send_message(Outgoing::json(value)?).await
    }

    /// Sends a JSON value.
    pub async fn send_json(&self, value: &serde_json::Value) -> Result<Sent, SendError> {
        self.send(value).await
    }

    /// Sends a body as is, with message attributes.
    pub async fn send_raw(
        &self,
        body: impl Into<String>,
        attributes: impl Into<MessageAttributes>,
    ) -> Result<Sent, SendError> {
        self.send_message(Outgoing::new(body).attributes(attributes))
            .await
    }

    /// Sends one message with its options.
    pub async fn send_message(&self, message: Outgoing) -> Result<Sent, SendError> {
        let mut results = self.send_batch([message]).await;
        match results.pop() {
            Some(r) => r,
            None => unreachable!("one result per message"),
        }
    }

    /// Sends messages in as few `SendMessageBatch` requests as SQS allows
    /// (10 entries and 1 MiB per request), and answers one result per
    /// message, in order. A message is `Ok` only if SQS accepted it; failed
    /// entries are retried when the failure is transient.
    pub async fn send_batch<I>(&self, messages: I) -> Vec<Result<Sent, SendError>>
    where
        I: IntoIterator,
        I::Item: Into<Outgoing>,
    {
        let messages = messages.into_iter();
        let mut results: Vec<Option<Result<Sent, SendError>>> =
            Vec::with_capacity(messages.size_hint().0);
        let mut prepared = Vec::with_capacity(messages.size_hint().0);
        let trace = crate::trace::current();
        for (index, message) in messages.enumerate() {
            results.push(None);
            let mut msg = message.into();
            let entry = match self.check(index, &mut msg, &trace) {
                Ok(()) => self.offload(index, &mut msg).await,
                Err(e) => Err(e),
            };
            match entry.and_then(|()| self.prepare(index, msg, &trace)) {
                Ok(p) => prepared.push(p),
                Err(e) => results[index] = Some(Err(e)),
            }
        }
        // FIFO: one request at a time, in order. Standard: up to 8 in flight.
        let parallel = if self.inner.fifo {
            1
        } else {
            PARALLEL_REQUESTS
        };
        self.send_chunks(chunk(prepared), parallel, &mut results)
            .await;
        let queue = &self.inner.queue_url;
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(SendError::Closed {
                        queue: queue.clone(),
                    })
                })
            })
            .collect()
    }

    /// Sends `chunks` with `parallel` requests in flight, as a plain loop of
    /// that many tasks does: each worker task takes the next request when
    /// its last one is answered, so the caller's task is woken once per
    /// worker, not once per request. (A task spawned per request and joined
    /// by the caller cost about 1.16x a plain loop's CPU per message, from
    /// the extra thread wake-ups; polling the requests in the caller's task
    /// about 1.25x: BENCHMARKS.md.) Dropping the future aborts the workers.
    async fn send_chunks(
        &self,
        chunks: Vec<Vec<Prepared>>,
        parallel: usize,
        results: &mut [Option<Result<Sent, SendError>>],
    ) {
        let workers = parallel.min(chunks.len());
        let todo = Arc::new(Mutex::new(chunks.into_iter()));
        // Answers are handed over per request, so a worker's panic loses only
        // the request it was sending.
        let answers = Arc::new(Mutex::new(Vec::with_capacity(results.len())));
        let worker = || {
            let (inner, todo, answers) = (self.inner.clone(), todo.clone(), answers.clone());
            async move {
                loop {
                    let next = lock(&todo).next();
                    let Some(c) = next else { break };
                    let done = send_chunk(&inner.client, &inner.queue_url, inner.attempts, c).await;
                    lock(&answers).extend(done);
                }
            }
        };
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            tasks.spawn(worker());
        }
        while let Some(joined) = tasks.join_next().await {
            // A panic in the SDK: the messages of the request that worker
            // was sending stay without a result, reported as not sent; a new
            // worker takes its place for the requests left.
            if let Err(e) = joined {
                tracing::error!(error = %e, "a SendMessageBatch task failed");
                if lock(&todo).len() > 0 {
                    tasks.spawn(worker());
                }
            }
        }
        for (index, r) in lock(&answers).drain(..) {
            results[index] = Some(r);
        }
    }

    /// Checks a message's options and adds the trace context's
    /// `traceparent` attribute (when there is room for it).
    fn check(
        &self,
        index: usize,
        msg: &mut Outgoing,
        trace: &crate::trace::TraceContext,
    ) -> Result<(), SendError> {
        let inner = &self.inner;
        let queue = || inner.queue_url.clone();
        if inner.fifo && msg.group_id.is_none() {
            return Err(SendError::MissingGroupId {
                queue: queue(),
                index,
            });
        }
        if let Some(delay) = msg.delay {
            if delay > MAX_DELAY {
                return Err(SendError::DelayTooLong {
                    index,
                    seconds: delay.as_secs(),
                });
            }
            if inner.fifo {
                return Err(SendError::DelayOnFifo {
                    queue: queue(),
                    index,
                });
            }
        }
        if let Some(tp) = &trace.traceparent
            && !msg.attributes.contains_key("traceparent")
            && msg.attributes.len() < 10
        {
            msg.attributes
                .insert("traceparent", MessageAttribute::string(tp.clone()));
        }
        Ok(())
    }

    /// Stores the body in S3 when it is over the threshold (feature
    /// `large-payloads`, when configured); otherwise nothing.
    #[allow(clippy::unused_async)]
    async fn offload(&self, index: usize, msg: &mut Outgoing) -> Result<(), SendError> {
        #[cfg(feature = "large-payloads")]
        if let Some(store) = &self.inner.offload {
            store
                .offload(index, msg, self.inner.max_message_size)
                .await?;
        }
        let _ = (index, msg);
        Ok(())
    }

    /// Checks a message's size and attributes and turns it into a batch
    /// entry (its id is set per request).
    fn prepare(
        &self,
        index: usize,
        msg: Outgoing,
        trace: &crate::trace::TraceContext,
    ) -> Result<Prepared, SendError> {
        let inner = &self.inner;
        let queue = || inner.queue_url.clone();
        if msg.attributes.len() > 10 {
            let count = msg.attributes.len();
            return Err(SendError::TooManyAttributes { index, count });
        }
        let size = msg.size();
        if size > inner.max_message_size {
            let limit = inner.max_message_size;
            return Err(SendError::TooLarge { index, size, limit });
        }
        let dedup = if inner.fifo {
            deduplication_id(&msg, inner.content_based_dedup)
        } else {
            None
        };
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(String::new())
            .set_message_group_id(msg.group_id)
            .set_message_deduplication_id(dedup)
            .set_delay_seconds(msg.delay.map(|d| d.as_secs() as i32))
            .set_message_attributes(sdk_attributes(msg.attributes));
        if let Some(x) = &trace.xray {
            let value = MessageSystemAttributeValue::builder()
                .data_type("String")
                .string_value(x)
                .build();
            if let Ok(value) = value {
                entry = entry.message_system_attributes(
                    MessageSystemAttributeNameForSends::AwsTraceHeader,
                    value,
                );
            }
        }
        let entry = entry
            .message_body(msg.body)
            .build()
            .map_err(|e| SendError::Request {
                queue: queue(),
                source: e.into(),
            })?;
        Ok(Prepared { index, size, entry })
    }
}

/// Core message attributes as the SDK's.
fn sdk_attributes(attrs: MessageAttributes) -> Option<HashMap<String, MessageAttributeValue>> {
    if attrs.is_empty() {
        return None;
    }
    let map = attrs
        .into_iter()
        .filter_map(|(name, a)| {
            let b = MessageAttributeValue::builder().data_type(a.data_type);
            let b = match a.value {
                AttributeValue::String(s) | AttributeValue::Number(s) => b.string_value(s),
                AttributeValue::Binary(v) => b.binary_value(Blob::new(v)),
            };
            b.build().ok().map(|v| (name, v))
        })
        .collect();
    Some(map)
}

/// Locks a mutex held only across plain code, never across an await: a
/// poisoned one (a panic while holding it) is used as it is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A variable's trimmed value: `None` when unset or blank (blank counts as
/// unset, as for every variable in the README's table), an error when not
/// Unicode.
pub(crate) fn env(name: &'static str) -> Result<Option<String>, SetupError> {
    value_of(name, std::env::var(name))
}

fn value_of(
    name: &'static str,
    value: Result<String, std::env::VarError>,
) -> Result<Option<String>, SetupError> {
    match value {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v.trim().to_owned())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(SetupError::BadVariable { name }),
    }
}

#[cfg(test)]
mod tests {
    use std::env::VarError;

    use super::*;

    #[test]
    fn a_variable_is_trimmed_blank_is_unset_and_not_unicode_is_an_error() {
        let v = |value| value_of(var::QUEUE_URL, value);
        assert_eq!(
            v(Ok(" https://q ".into())).unwrap().as_deref(),
            Some("https://q")
        );
        assert_eq!(v(Ok(" \t".into())).unwrap(), None);
        assert_eq!(v(Err(VarError::NotPresent)).unwrap(), None);
        let bad = v(Err(VarError::NotUnicode("\u{fffd}".into()))).unwrap_err();
        assert_eq!(
            bad.to_string(),
            "environment variable SQS_QUEUE_URL is not valid Unicode"
        );
    }
}
