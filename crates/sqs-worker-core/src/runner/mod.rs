//! The runner interface: what the long-poll consumer, the Lambda adapter, or
//! a runner of your own uses to drive handlers. Handler authors need none of
//! it; everything they use is at the crate root.
//!
//! A runner only translates and settles; it never decides what success means.
//! It must:
//!
//! 1. **Build each delivery as a [`Message`]** in one move, with
//!    [`MessageParts::into_message`]: id, body, receipt handle, typed
//!    [`SystemAttributes`](crate::SystemAttributes), message attributes, the
//!    [`Source`] queue, and a [`Visibility`](crate::Visibility) handle (backed
//!    by the runner's [`VisibilityControl`] when it can change visibility).
//! 2. **Hand batches to a [`Processor`]** ([`Engine`] for a per-message
//!    [`Handler`](crate::Handler), [`BatchEngine`] for a
//!    [`BatchHandler`](crate::BatchHandler)) with the batch deadline, if any.
//! 3. **Settle every message exactly once**, as the engine reports it
//!    ([`Settled`]): delete on [`Outcome::Succeeded`]; on
//!    [`Outcome::Failed`], apply the [`Failure`]'s retry delay (a visibility
//!    change) or dead-letter a [`FailureKind::Permanent`] failure. A message
//!    is deleted only after its handler succeeded.
//! 4. **Report** through [`observe`]: [`observe::received`] for each batch,
//!    the engine's spans and metrics, [`observe::log_failure`] for failures.
//!
//! A runner keys its in-flight table by [`MessageKey`] (a message's identity,
//! hashed with [`MessageKeyHasher`]), not by the receipt handle.
//!
//! ```
//! use sqs_worker_core::runner::{Engine, MessageParts, Outcome, Processor};
//! use sqs_worker_core::{Error, Message};
//!
//! async fn handle(msg: Message) -> Result<(), Error> {
//!     if msg.body().is_empty() { return Err(Error::msg("empty body")); }
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let engine = Engine::new(handle);
//! let batch = vec![
//!     MessageParts::new("a".into(), "hello".into()).into_message(),
//!     MessageParts::new("b".into(), String::new()).into_message(),
//! ];
//! engine
//!     .process(batch, None, |settled| match settled.outcome {
//!         Outcome::Succeeded => { /* delete settled.message */ }
//!         Outcome::Failed(f) => { /* change visibility by f.retry_delay, or dead-letter */ }
//!     })
//!     .await;
//! # }
//! ```
//!
//! [`Message`]: crate::Message

pub mod observe;

pub use crate::batch::BatchEngine;
pub use crate::engine::{BatchReport, Engine, Failure, FailureKind, Outcome, Processor, Settled};
pub use crate::message::{MessageKey, MessageKeyHasher, MessageParts, Source};
pub use crate::visibility::{BoxFuture, VisibilityControl};
