//! The background coalescing mode: [`Sender::coalescing`] gathers messages
//! enqueued one by one into batch requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::batch::{MAX_BATCH_ENTRIES, Sent};
use crate::error::SendError;
use crate::outgoing::Outgoing;
use crate::sender::Sender;

/// Messages waiting for the background task at most (then `enqueue` waits).
const QUEUE_CAPACITY: usize = 1024;
/// Batch requests in flight at once (1 for FIFO queues, to keep order).
const IN_FLIGHT: usize = 8;

type Reply = oneshot::Sender<Result<Sent, SendError>>;

/// Sends messages enqueued one at a time in batch requests: a request goes
/// out when 10 messages wait or when the oldest has waited `linger`.
/// Created by [`Sender::coalescing`]; [`close`](Self::close) sends what is
/// left and waits for it.
#[derive(Debug)]
pub struct Coalescer {
    tx: mpsc::Sender<(Outgoing, Reply)>,
    task: tokio::task::JoinHandle<()>,
    queue: String,
}

/// Resolves when SQS accepted (or finally refused) one enqueued message.
#[derive(Debug)]
#[must_use = "the handle says whether SQS accepted the message"]
pub struct Pending {
    rx: oneshot::Receiver<Result<Sent, SendError>>,
    queue: String,
}

impl Future for Pending {
    type Output = Result<Sent, SendError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(SendError::Closed {
                    queue: self.queue.clone(),
                })
            })
        })
    }
}

impl Sender {
    /// Starts the coalescing mode on the current tokio runtime: messages
    /// given to [`Coalescer::enqueue`] wait at most `linger` to share a
    /// request with others.
    pub fn coalescing(&self, linger: Duration) -> Coalescer {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(run(self.clone(), rx, linger));
        Coalescer {
            tx,
            task,
            queue: self.queue_url().to_owned(),
        }
    }
}

impl Coalescer {
    /// Queues a message; the handle resolves once SQS accepted it (or with
    /// the reason it did not). Waits while 1,024 messages are queued.
    pub async fn enqueue(&self, message: impl Into<Outgoing>) -> Pending {
        let (reply, rx) = oneshot::channel();
        // If the task is gone, the dropped reply resolves the handle as
        // `Closed`.
        let _ = self.tx.send((message.into(), reply)).await;
        Pending {
            rx,
            queue: self.queue.clone(),
        }
    }

    /// Sends everything queued and waits for the last request.
    pub async fn close(self) {
        drop(self.tx);
        if let Err(e) = self.task.await {
            tracing::error!(queue = self.queue, error = %e, "the coalescing sender's task failed");
        }
    }
}

async fn run(sender: Sender, mut rx: mpsc::Receiver<(Outgoing, Reply)>, linger: Duration) {
    let permits = Arc::new(Semaphore::new(if sender.is_fifo() { 1 } else { IN_FLIGHT }));
    let mut tasks = JoinSet::new();
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let wait = tokio::time::sleep(linger);
        tokio::pin!(wait);
        while jobs.len() < MAX_BATCH_ENTRIES {
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => jobs.push(job),
                    None => break,
                },
                () = &mut wait => break,
            }
        }
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let sender = sender.clone();
        tasks.spawn(async move {
            let (messages, replies): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
            let results = sender.send_batch(messages).await;
            drop(permit);
            for (reply, r) in replies.into_iter().zip(results) {
                let _ = reply.send(r);
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}
