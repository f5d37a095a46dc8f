//! What each receive may ask for: free handler slots (gathered briefly into
//! a full receive while there is a backlog), or with receive ahead the room
//! `crate::ahead` gives; a lease per message; the breaker's, the adaptive
//! limit's and the rate limit's cuts.

use std::time::Duration;

use sqs_worker_core::flow::Reservation;
use sqs_worker_core::runner::Processor;
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::receive::Receiver;
use crate::stop::stopped;

/// While the queue has a backlog, how long a receive loop waits for enough
/// free capacity to ask for a full receive (rather than sending one
/// `ReceiveMessage` per freed slot, which costs a request each and keeps the
/// second receive loop from ever seeing a full receive).
const FILL_WAIT: Duration = Duration::from_millis(10);

/// A receive's grant: handler slots (none with receive ahead: taken as the
/// messages start), leases (none: try again) and rate-limit tokens.
pub(crate) type Grant = (
    Option<OwnedSemaphorePermit>,
    Option<OwnedSemaphorePermit>,
    Option<Reservation>,
);

impl<P: Processor> Receiver<P> {
    /// What the next receive may ask for: its handler slots (without
    /// receive ahead: at least one free slot), a lease per message, and the
    /// rate limit's tokens. `None` when stopped; no leases: try again.
    pub(crate) async fn grant(&self, stop: &mut watch::Receiver<bool>) -> Option<Grant> {
        if let Some(a) = &self.ahead {
            let ask = a.room(stop).await?;
            let Some(leases) = self.lease(ask, stop).await else {
                a.answered(ask, 0, Duration::ZERO);
                return None;
            };
            return match self.admit(leases) {
                Ok(leases) => {
                    // The breaker's probe asks for fewer: the rest is not on its way.
                    let cut = ask - leases.num_permits();
                    if cut > 0 {
                        a.answered(cut, 0, Duration::ZERO);
                    }
                    Some((None, Some(leases), None))
                }
                Err(wait) => {
                    a.answered(ask, 0, Duration::ZERO);
                    self.pause(wait, stop).await?;
                    Some((None, None, None))
                }
            };
        }
        let slots = self.gather(stop).await?;
        let Some(slots) = self.adapt(slots) else {
            return Some((None, None, None));
        };
        let slots = match self.admit(slots) {
            Ok(slots) => slots,
            Err(wait) => {
                self.pause(wait, stop).await?;
                return Some((None, None, None));
            }
        };
        let (slots, tokens) = self.pace(slots, stop).await?;
        let leases = self.lease(slots.num_permits(), stop).await?;
        Some((Some(slots), Some(leases), tokens))
    }

    /// Sleeps `wait`; `None` when stopped meanwhile.
    async fn pause(&self, wait: Duration, stop: &mut watch::Receiver<bool>) -> Option<()> {
        tokio::select! {
            biased;
            () = stopped(stop) => None,
            () = tokio::time::sleep(wait) => Some(()),
        }
    }

    /// Leases for `n` messages: waits while settlement is behind. `None`
    /// when stopped meanwhile.
    async fn lease(
        &self,
        n: usize,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.leases.clone().try_acquire_many_owned(n as u32) {
            return Some(p);
        }
        tokio::select! {
            biased;
            () = stopped(stop) => None,
            p = self.leases.clone().acquire_many_owned(n as u32) => p.ok(),
        }
    }

    /// Free handler slots for the next receive (without receive ahead): at
    /// least one, up to a full receive. `None` when stopped meanwhile.
    async fn gather(&self, stop: &mut watch::Receiver<bool>) -> Option<OwnedSemaphorePermit> {
        let first = tokio::select! {
            biased;
            () = stopped(stop) => return None,
            p = self.slots.clone().acquire_owned() => p,
        };
        let mut permits = first.ok()?;
        // With a backlog and room for at least two full receives, gather
        // a full receive's capacity first (briefly). Below that, waiting
        // for slots would leave capacity idle behind slow messages, so
        // the loop receives whatever is free.
        let fill = self.max_messages - 1;
        if self.concurrency >= 2 * self.max_messages
            && fill > 0
            && *self.backlog.borrow()
            && self.slots.available_permits() < fill
            && let Ok(Ok(more)) = tokio::time::timeout(
                FILL_WAIT,
                self.slots.clone().acquire_many_owned(fill as u32),
            )
            .await
        {
            permits.merge(more);
        }
        let extra = self
            .slots
            .available_permits()
            .min(self.max_messages - permits.num_permits());
        if extra > 0
            && let Ok(more) = self.slots.clone().try_acquire_many_owned(extra as u32)
        {
            permits.merge(more);
        }
        Some(permits)
    }
}
