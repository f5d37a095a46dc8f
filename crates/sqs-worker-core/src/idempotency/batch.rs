//! [`Idempotent`] around a [`BatchHandler`]: each message is begun before the
//! batch, the batch handler sees only the messages to run, and each result
//! completes or releases its key.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use futures_util::future::join_all;

use super::{Held, Idempotent, Plan};
use crate::batch::{BatchHandler, BatchResults};
use crate::message::Message;

/// Per message: `begin` (all at once); completed and in-progress keys, bad
/// payloads and missing keys get their result without reaching the batch
/// handler; the others run as one (smaller) batch while all their claims are
/// renewed; then each key is completed (success) or released (failure, no
/// result, panic). Two messages with the same key in one batch: the second is
/// retried later, as "in progress". [`set_result`](super::set_result) is not
/// available to batch handlers.
impl<B: BatchHandler> BatchHandler for Idempotent<B> {
    async fn handle_batch(&self, batch: Vec<Message>) -> BatchResults {
        let cfg = &*self.config;
        let plans = join_all(batch.iter().map(|m| cfg.plan(m))).await;
        let mut decided = Vec::new();
        let mut run = Vec::with_capacity(batch.len());
        let mut held: Vec<(String, Held)> = Vec::new();
        for (msg, plan) in batch.into_iter().zip(plans) {
            match plan {
                Plan::Done(result) => decided.push((msg.id().to_owned(), result)),
                Plan::Without => run.push(msg),
                Plan::Run(h) => {
                    held.push((msg.id().to_owned(), h));
                    run.push(msg);
                }
            }
        }
        let mut results = if run.is_empty() {
            BatchResults::new()
        } else {
            let claims: Vec<_> = held
                .iter()
                .map(|(_, h)| (h.key.clone(), h.token.clone()))
                .collect();
            let fut = AssertUnwindSafe(self.inner.handle_batch(run)).catch_unwind();
            let out = tokio::select! {
                biased;
                out = fut => out,
                never = cfg.keep_renewed(&claims) => match never {},
            };
            match out {
                Ok(results) => results,
                Err(panic) => {
                    join_all(
                        held.iter_mut()
                            .map(|(id, h)| cfg.settle(id, h, false, None)),
                    )
                    .await;
                    std::panic::resume_unwind(panic)
                }
            }
        };
        join_all(held.iter_mut().map(|(id, h)| {
            let success = matches!(results.get(id), Some(Ok(())));
            cfg.settle(id, h, success, None)
        }))
        .await;
        for (id, result) in decided {
            results.set(id, result);
        }
        results
    }
}
