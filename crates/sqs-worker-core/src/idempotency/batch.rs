//! [`Idempotent`] around a [`BatchHandler`]: each message is begun before the
//! batch, the batch handler sees only the messages to run, and each result
//! completes or releases its key.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use futures_util::future::join_all;

use super::{Held, Idempotent, Plan};
use crate::batch::{BatchHandler, BatchResults};
use crate::error::Error;
use crate::message::Message;

/// At most this many store calls of one batch at once: a 10,000-record
/// batch opens no more than this many connections.
pub(super) const STORE_CONCURRENCY: usize = 32;

/// Per message: `begin` (all at once); completed and in-progress keys, bad
/// payloads and missing keys get their result without reaching the batch
/// handler; the others run as one (smaller) batch while all their claims are
/// renewed; then each key is completed (success) or released (failure, no
/// result, panic). Two messages with the same key in one batch: the second is
/// retried later, as "in progress". On a FIFO queue, once a message of a
/// group gets no claim (in progress elsewhere, a store error, a missing key)
/// the rest of its group in the batch is not passed to the batch handler
/// either: it comes back, in order, at once (claims it got are released).
/// Store calls run at most 32 at a time (`STORE_CONCURRENCY`).
/// [`set_result`](super::set_result) is not available to batch handlers.
impl<B: BatchHandler> BatchHandler for Idempotent<B> {
    async fn handle_batch(&self, batch: Vec<Message>) -> BatchResults {
        let cfg = &*self.config;
        // In batch order, so a group's messages are met in order.
        let mut plans: Vec<Plan> = Vec::with_capacity(batch.len());
        for chunk in batch.chunks(STORE_CONCURRENCY) {
            plans.extend(join_all(chunk.iter().map(|m| cfg.plan(m))).await);
        }
        let mut decided = Vec::new();
        let mut run = Vec::with_capacity(batch.len());
        let mut held: Vec<(String, Held)> = Vec::new();
        let mut unclaimed = Vec::new();
        let mut blocked: Vec<String> = Vec::new();
        for (msg, plan) in batch.into_iter().zip(plans) {
            let group = msg.fifo_group_id();
            if let Some(g) = group.filter(|g| blocked.iter().any(|b| b == g)) {
                let e = Error::retry_after(
                    std::time::Duration::ZERO,
                    Error::msg(format_args!(
                        "message {}: an earlier message of its FIFO group {g:?} could not be \
                         claimed; not run",
                        msg.id()
                    )),
                );
                if let Plan::Run(h) = plan {
                    unclaimed.push((msg.id().to_owned(), h));
                }
                decided.push((msg.id().to_owned(), Err(e)));
                continue;
            }
            match plan {
                Plan::Done(result) => {
                    if let (Err(_), Some(g)) = (&result, group) {
                        blocked.push(g.to_owned());
                    }
                    decided.push((msg.id().to_owned(), result));
                }
                Plan::Without => run.push(msg),
                Plan::Run(h) => {
                    held.push((msg.id().to_owned(), h));
                    run.push(msg);
                }
            }
        }
        settle_all(cfg, &mut unclaimed, |_| false).await;
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
                    settle_all(cfg, &mut held, |_| false).await;
                    std::panic::resume_unwind(panic)
                }
            }
        };
        settle_all(cfg, &mut held, |id| matches!(results.get(id), Some(Ok(())))).await;
        for (id, result) in decided {
            results.set(id, result);
        }
        results
    }
}

/// Completes (where `success`) or releases every claim in `held`, at most
/// [`STORE_CONCURRENCY`] at once.
async fn settle_all(
    cfg: &super::Config,
    held: &mut [(String, Held)],
    success: impl Fn(&str) -> bool,
) {
    for chunk in held.chunks_mut(STORE_CONCURRENCY) {
        join_all(chunk.iter_mut().map(|(id, h)| {
            let ok = success(id);
            cfg.settle(id, h, ok, None)
        }))
        .await;
    }
}
