//! Whole-batch handlers, for work that writes in bulk.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;

use crate::engine::{EngineConfig, FailureKind, Outcome, Processor, Settled, panic_text};
use crate::error::Error;
use crate::message::Message;
use crate::runner::observe;

/// Handles a whole batch at once and says, per message id, what happened.
///
/// A message the handler gives no result for counts as **failed**
/// ([`FailureKind::Missing`]), never as succeeded.
///
/// On FIFO queues the handler receives the batch in order; keeping a group's
/// order after a failure (not succeeding a later message of a failed group) is
/// the batch handler's responsibility.
pub trait BatchHandler: Send + Sync + 'static {
    /// Handles `batch`.
    fn handle_batch(&self, batch: Vec<Message>) -> impl Future<Output = BatchResults> + Send;
}

impl<F, Fut> BatchHandler for F
where
    F: Fn(Vec<Message>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = BatchResults> + Send,
{
    fn handle_batch(&self, batch: Vec<Message>) -> impl Future<Output = BatchResults> + Send {
        self(batch)
    }
}

/// The per-message results of a [`BatchHandler`].
#[derive(Debug, Default)]
pub struct BatchResults {
    results: HashMap<String, Result<(), Error>>,
}

impl BatchResults {
    /// No results yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `msg` succeeded.
    pub fn succeed(&mut self, msg: &Message) -> &mut Self {
        self.results.insert(msg.id().to_owned(), Ok(()));
        self
    }

    /// Marks `msg` failed.
    pub fn fail(&mut self, msg: &Message, error: impl Into<Error>) -> &mut Self {
        self.results.insert(msg.id().to_owned(), Err(error.into()));
        self
    }

    /// Sets the result for a message id.
    pub fn set(&mut self, id: impl Into<String>, result: Result<(), Error>) -> &mut Self {
        self.results.insert(id.into(), result);
        self
    }

    /// The result set for a message id, if any.
    pub fn get(&self, id: &str) -> Option<&Result<(), Error>> {
        self.results.get(id)
    }

    /// Every message of `batch` succeeded.
    pub fn all_succeeded(batch: &[Message]) -> Self {
        let mut r = Self::new();
        for m in batch {
            r.succeed(m);
        }
        r
    }
}

/// Runs a [`BatchHandler`] over batches; a [`Processor`] like
/// [`Engine`](crate::runner::Engine).
pub struct BatchEngine<B> {
    handler: Arc<B>,
    config: Arc<EngineConfig>,
}

impl<B> Clone for BatchEngine<B> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            config: self.config.clone(),
        }
    }
}

impl<B> std::fmt::Debug for BatchEngine<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEngine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<B: BatchHandler> BatchEngine<B> {
    /// A batch engine with default settings.
    pub fn new(handler: B) -> Self {
        Self::with_config(handler, EngineConfig::default())
    }

    /// A batch engine with `config` (its concurrency does not apply).
    pub fn with_config(handler: B, config: EngineConfig) -> Self {
        Self {
            handler: Arc::new(handler),
            config: Arc::new(config),
        }
    }
}

impl<B: BatchHandler> Processor for BatchEngine<B> {
    fn time_limit(&self) -> Option<std::time::Duration> {
        self.config.handler_timeout
    }

    async fn process<S>(&self, batch: Vec<Message>, deadline: Option<Instant>, mut settle: S)
    where
        S: FnMut(Settled) + Send,
    {
        {
            let cfg = &*self.config;
            let mut tally = observe::Tally::default();
            let mut fail_all =
                |kind: FailureKind, text: String, batch: Vec<Message>, settle: &mut S| {
                    for m in batch {
                        let outcome = Outcome::Failed(cfg.failure(&m, kind, Error::msg(&text)));
                        tally.record(&m, &outcome, None);
                        settle(Settled {
                            message: m,
                            outcome,
                        });
                    }
                };
            let deadline = deadline.map(tokio::time::Instant::from_std);
            let start_by = deadline.map(|d| d.checked_sub(cfg.start_margin).unwrap_or(d));
            if start_by.is_some_and(|s| tokio::time::Instant::now() >= s) {
                let text = "not started: too close to the batch deadline".to_owned();
                return fail_all(FailureKind::Unstarted, text, batch, &mut settle);
            }
            let started = tokio::time::Instant::now();
            for m in &batch {
                m.visibility().mark_started(started.into_std());
            }
            let run = AssertUnwindSafe(self.handler.handle_batch(batch.clone())).catch_unwind();
            let limit = match (deadline, cfg.handler_timeout) {
                (Some(d), Some(t)) => Some(d.min(started + t)),
                (d, t) => d.or_else(|| t.map(|t| started + t)),
            };
            let result = match limit {
                None => run.await,
                Some(at) => match tokio::time::timeout_at(at, run).await {
                    Ok(r) => r,
                    Err(_) => {
                        let kind = if deadline.is_some_and(|d| at >= d) {
                            FailureKind::DeadlineExceeded
                        } else {
                            FailureKind::TimedOut
                        };
                        let text = "batch handler still running at its time limit; stopped";
                        return fail_all(kind, text.to_owned(), batch, &mut settle);
                    }
                },
            };
            let mut results = match result {
                Ok(r) => r.results,
                Err(payload) => {
                    let text = format!("batch handler panicked: {}", panic_text(&*payload));
                    return fail_all(FailureKind::Panicked, text, batch, &mut settle);
                }
            };
            let elapsed = started.elapsed();
            for m in batch {
                let outcome = match results.remove(m.id()) {
                    Some(Ok(())) => Outcome::Succeeded,
                    Some(Err(e)) => {
                        let kind = crate::engine::outcome_kind(&e);
                        Outcome::Failed(cfg.failure(&m, kind, e))
                    }
                    None => Outcome::Failed(cfg.failure(
                        &m,
                        FailureKind::Missing,
                        Error::msg("the batch handler returned no result for this message"),
                    )),
                };
                tally.record(&m, &outcome, Some(elapsed));
                settle(Settled {
                    message: m,
                    outcome,
                });
            }
        }
    }
}
