//! Time left and visibility extension, from inside a handler.
//!
//! Each [`Message`] carries a [`Visibility`]: the instant its delivery runs out (the
//! visibility deadline in the poller, the invocation deadline in Lambda) and,
//! when the runner can, a [`VisibilityControl`] that changes the message's
//! visibility timeout. With no control, [`Visibility::extend`] fails with
//! [`VisibilityError::Unsupported`] rather than pretending.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::error::BoxError;
use crate::message::Message;

/// SQS's upper bound on a visibility timeout: 12 hours.
pub const MAX_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(12 * 60 * 60);

/// A boxed, sendable future (for object-safe traits).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A runner's way to change a message's visibility timeout.
///
/// The poller backs it with `ChangeMessageVisibility` (and keeps its heartbeat
/// in step); Lambda with an SQS client, when one is configured.
pub trait VisibilityControl: Send + Sync + 'static {
    /// Makes `message` invisible for `timeout` from now.
    fn change_visibility<'a>(
        &'a self,
        message: &'a Message,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), VisibilityError>>;
}

/// Why a visibility change failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VisibilityError {
    /// The runner cannot change visibility.
    #[error("this runner cannot change message visibility ({0})")]
    Unsupported(&'static str),
    /// The timeout is beyond SQS's 12-hour limit.
    #[error("visibility timeout {0:?} is beyond SQS's 12-hour limit")]
    TooLong(Duration),
    /// The message is already settled (deleted or released); it can no longer be extended.
    #[error("message {0} is already settled")]
    Settled(String),
    /// The SQS call failed.
    #[error("changing the visibility of message {message_id} failed")]
    Failed {
        /// The message.
        message_id: String,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
}

/// The visibility of one delivery, as its handler sees it: the deadline,
/// the time left, and [`extend`](Self::extend). [`Message::visibility`] returns it.
pub struct Visibility {
    /// Deadline in nanoseconds since [`epoch`], 0 for unknown.
    deadline: AtomicU64,
    /// When the message's handler started, in nanoseconds since [`epoch`];
    /// 0 while it has not.
    started: AtomicU64,
    /// The latest the deadline may move to (nanoseconds since [`epoch`]),
    /// 0 for none: a Lambda invocation's end, whatever SQS's visibility.
    ceiling: u64,
    control: Option<Arc<dyn VisibilityControl>>,
    unsupported_reason: &'static str,
}

impl std::fmt::Debug for Visibility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Visibility")
            .field("deadline", &self.deadline())
            .field("extendable", &self.control.is_some())
            .finish()
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| Instant::now() - Duration::from_secs(1))
}

fn to_nanos(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A handler start as [`Visibility`] stores it.
#[derive(Clone, Copy)]
pub(crate) struct StartMark(u64);

impl StartMark {
    pub(crate) fn of(at: Instant) -> Self {
        Self(to_nanos(at))
    }
}

impl Clone for Visibility {
    /// A handle with this one's current deadline and control, from then on
    /// independent of it (runners make one per invocation and clone it per
    /// message).
    fn clone(&self) -> Self {
        Self {
            deadline: AtomicU64::new(self.deadline.load(Ordering::Acquire)),
            started: AtomicU64::new(self.started.load(Ordering::Acquire)),
            ceiling: self.ceiling,
            control: self.control.clone(),
            unsupported_reason: self.unsupported_reason,
        }
    }
}

impl Visibility {
    /// A handle with no deadline and no way to extend it.
    pub fn unbacked() -> Self {
        Self {
            deadline: AtomicU64::new(0),
            started: AtomicU64::new(0),
            ceiling: 0,
            control: None,
            unsupported_reason: "no visibility control configured",
        }
    }

    /// A handle with a deadline the runner cannot extend; `reason` says why in
    /// the error a handler gets when it asks.
    pub fn fixed(deadline: Instant, reason: &'static str) -> Self {
        Self {
            deadline: AtomicU64::new(to_nanos(deadline)),
            started: AtomicU64::new(0),
            ceiling: 0,
            control: None,
            unsupported_reason: reason,
        }
    }

    /// A handle the runner can extend through `control`.
    pub fn extendable(deadline: Option<Instant>, control: Arc<dyn VisibilityControl>) -> Self {
        Self {
            deadline: AtomicU64::new(deadline.map_or(0, to_nanos)),
            started: AtomicU64::new(0),
            ceiling: 0,
            control: Some(control),
            unsupported_reason: "",
        }
    }

    /// This handle with a ceiling: however far [`extend`](Self::extend) or
    /// [`set_deadline`](Self::set_deadline) move the visibility, the
    /// deadline (and so [`time_left`](Self::time_left)) never passes
    /// `ceiling`. Lambda caps every record at its invocation's end (less
    /// the safety margin), when the handler is stopped whatever SQS's
    /// visibility says.
    #[must_use]
    pub fn capped_at(mut self, ceiling: Instant) -> Self {
        self.ceiling = to_nanos(ceiling);
        let d = self.deadline.get_mut();
        if *d == 0 || *d > self.ceiling {
            *d = self.ceiling;
        }
        self
    }

    /// The deadline, if known.
    pub fn deadline(&self) -> Option<Instant> {
        match self.deadline.load(Ordering::Acquire) {
            0 => None,
            n => Some(epoch() + Duration::from_nanos(n)),
        }
    }

    /// Time left before the [`deadline`](Self::deadline), if known.
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Moves the deadline (runners call this after an extension).
    /// Never past the [ceiling](Self::capped_at), if any.
    pub fn set_deadline(&self, deadline: Instant) {
        let mut n = to_nanos(deadline);
        if self.ceiling != 0 {
            n = n.min(self.ceiling);
        }
        self.deadline.store(n, Ordering::Release);
    }

    /// Records that the message's handler started at `at`. The engines call
    /// it as each handler starts (a [`Processor`](crate::runner::Processor)
    /// of your own should too): the poller counts a message's maximum
    /// processing time from then, and keeps a message that has not started
    /// (one waiting behind others of its FIFO group) invisible meanwhile.
    pub fn mark_started(&self, at: Instant) {
        self.mark_started_at(StartMark::of(at));
    }

    /// [`mark_started`](Self::mark_started) with the instant converted
    /// already (the engine converts a round's start once for all its messages).
    pub(crate) fn mark_started_at(&self, mark: StartMark) {
        self.started.store(mark.0, Ordering::Release);
    }

    /// When the message's handler (last) started, if it has.
    pub fn started_at(&self) -> Option<Instant> {
        match self.started.load(Ordering::Acquire) {
            0 => None,
            n => Some(epoch() + Duration::from_nanos(n)),
        }
    }

    /// Whether [`extend`](Self::extend) can work.
    pub fn is_extendable(&self) -> bool {
        self.control.is_some()
    }

    /// Makes `message` invisible for `timeout` from now; on success the
    /// deadline moves.
    pub async fn extend(
        &self,
        message: &Message,
        timeout: Duration,
    ) -> Result<(), VisibilityError> {
        if timeout > MAX_VISIBILITY_TIMEOUT {
            return Err(VisibilityError::TooLong(timeout));
        }
        let Some(control) = &self.control else {
            return Err(VisibilityError::Unsupported(self.unsupported_reason));
        };
        let asked = Instant::now();
        control.change_visibility(message, timeout).await?;
        self.set_deadline(asked + timeout);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_cloned_visibility_starts_equal_then_moves_on_its_own() {
        let t0 = Instant::now() + Duration::from_secs(30);
        let template = Visibility::fixed(t0, "fixed for the test");
        let copy = template.clone();
        assert_eq!(copy.deadline(), template.deadline());
        copy.set_deadline(t0 + Duration::from_secs(60));
        assert!(
            copy.deadline() > template.deadline(),
            "independent after the clone"
        );
        assert!(
            template
                .deadline()
                .is_some_and(|d| d.duration_since(t0) < Duration::from_millis(1))
        );
    }

    #[test]
    fn the_start_mark_is_shared_by_clones_of_a_message() {
        let m = Message::builder("m", "").build();
        let handler_copy = m.clone();
        assert!(m.visibility().started_at().is_none());
        let at = Instant::now();
        handler_copy.visibility().mark_started(at);
        let seen = m.visibility().started_at().unwrap();
        assert!(seen.max(at) - seen.min(at) < Duration::from_micros(1));
        assert_eq!(m.visibility().clone().started_at(), Some(seen));
    }

    struct Recorder(Mutex<Vec<(String, Duration)>>);
    impl VisibilityControl for Recorder {
        fn change_visibility<'a>(
            &'a self,
            message: &'a Message,
            timeout: Duration,
        ) -> BoxFuture<'a, Result<(), VisibilityError>> {
            Box::pin(async move {
                self.0
                    .lock()
                    .unwrap()
                    .push((message.id().to_owned(), timeout));
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn unbacked_visibility_says_so() {
        let m = Message::builder("m", "").build();
        let e = m
            .extend_visibility(Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, VisibilityError::Unsupported(_)), "{e}");
        assert!(m.deadline().is_none());
    }

    #[tokio::test]
    async fn a_capped_deadline_never_passes_its_ceiling() {
        let rec = Arc::new(Recorder(Mutex::new(vec![])));
        let end = Instant::now() + Duration::from_secs(5);
        let m = Message::builder("m", "")
            .visibility(Visibility::extendable(None, rec.clone()).capped_at(end))
            .build();
        let d = m.deadline().expect("the ceiling is the deadline");
        assert!(d <= end && end - d < Duration::from_micros(1));
        m.extend_visibility(Duration::from_secs(60)).await.unwrap();
        assert_eq!(rec.0.lock().unwrap().len(), 1, "SQS still asked");
        assert!(m.deadline().unwrap() <= end);
        assert!(m.time_left().unwrap() <= Duration::from_secs(5));
    }

    #[tokio::test]
    async fn extension_moves_the_deadline() {
        let rec = Arc::new(Recorder(Mutex::new(vec![])));
        let start = Instant::now();
        let m = Message::builder("m", "")
            .visibility(Visibility::extendable(
                Some(start + Duration::from_secs(1)),
                rec.clone(),
            ))
            .build();
        assert!(m.time_left().unwrap() <= Duration::from_secs(1));
        m.extend_visibility(Duration::from_secs(60)).await.unwrap();
        assert!(m.deadline().unwrap() >= start + Duration::from_secs(60));
        assert_eq!(
            rec.0.lock().unwrap().as_slice(),
            &[("m".into(), Duration::from_secs(60))]
        );
        let e = m
            .extend_visibility(Duration::from_secs(13 * 3600))
            .await
            .unwrap_err();
        assert!(matches!(e, VisibilityError::TooLong(_)));
    }
}
