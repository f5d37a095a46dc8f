//! Metric keys built once. The per-batch metrics register through these
//! rather than through the `metrics` macros, which build and hash a key on
//! every call and, for a label only known at run time (the queue name, the
//! failure kind), allocate the label set too. The keys are the same, so
//! recorders see no difference.

use std::sync::{Mutex, OnceLock};

use metrics::{Key, Label, SharedString};

use super::names::{self, attr};
use crate::engine::FailureKind;

pub(super) const KINDS: usize = FailureKind::ALL.len();

pub(super) static RECEIVED: Key = Key::from_static_name(names::RECEIVED);
pub(super) static SUCCEEDED: Key = Key::from_static_name(names::SUCCEEDED);
pub(super) static HANDLER_DURATION: Key = Key::from_static_name(names::HANDLER_DURATION);
pub(super) static MESSAGE_AGE: Key = Key::from_static_name(names::MESSAGE_AGE);
pub(super) static RECEIVE_COUNT: Key = Key::from_static_name(names::RECEIVE_COUNT);

/// `kind` labels, in the order of [`FailureKind::ALL`] (a test checks it).
static KIND_LABELS: [[Label; 1]; KINDS] = [
    [Label::from_static_parts("kind", "retry")],
    [Label::from_static_parts("kind", "permanent")],
    [Label::from_static_parts("kind", "panicked")],
    [Label::from_static_parts("kind", "timed_out")],
    [Label::from_static_parts("kind", "deadline_exceeded")],
    [Label::from_static_parts("kind", "unstarted")],
    [Label::from_static_parts("kind", "group_blocked")],
    [Label::from_static_parts("kind", "missing")],
];

/// [`names::FAILED`] by failure kind, in the order of [`FailureKind::ALL`].
pub(super) static FAILED: [Key; KINDS] = [
    Key::from_static_parts(names::FAILED, &KIND_LABELS[0]),
    Key::from_static_parts(names::FAILED, &KIND_LABELS[1]),
    Key::from_static_parts(names::FAILED, &KIND_LABELS[2]),
    Key::from_static_parts(names::FAILED, &KIND_LABELS[3]),
    Key::from_static_parts(names::FAILED, &KIND_LABELS[4]),
    Key::from_static_parts(names::FAILED, &KIND_LABELS[5]),
    Key::from_static_parts(names::FAILED, &KIND_LABELS[6]),
    Key::from_static_parts(names::FAILED, &KIND_LABELS[7]),
];

/// The OpenTelemetry metric keys of one queue.
pub(super) struct OtelKeys {
    /// The queue name (`messaging.destination.name`), when known.
    destination: Option<Box<str>>,
    /// [`names::CONSUMED_MESSAGES`].
    pub(super) consumed: Key,
    /// [`names::PROCESS_DURATION`] by outcome: slot 0 succeeded, `1 + kind` failed.
    pub(super) process: [Key; KINDS + 1],
}

/// The labels of an OpenTelemetry messaging metric.
fn otel_labels(
    operation: &'static str,
    destination: Option<&str>,
    error: Option<&'static str>,
) -> Vec<Label> {
    let mut labels = Vec::with_capacity(4);
    labels.push(Label::from_static_parts(attr::SYSTEM, attr::AWS_SQS));
    labels.push(Label::from_static_parts(attr::OPERATION_NAME, operation));
    if let Some(d) = destination {
        labels.push(Label::new(
            attr::DESTINATION_NAME,
            SharedString::from(d.to_owned()),
        ));
    }
    if let Some(e) = error {
        labels.push(Label::from_static_parts(attr::ERROR_TYPE, e));
    }
    labels
}

impl OtelKeys {
    fn new(destination: Option<&str>) -> Self {
        Self {
            destination: destination.map(Into::into),
            consumed: Key::from_parts(
                names::CONSUMED_MESSAGES,
                otel_labels("receive", destination, None),
            ),
            process: std::array::from_fn(|slot| {
                let error = slot.checked_sub(1).map(|k| FailureKind::ALL[k].as_str());
                Key::from_parts(
                    names::PROCESS_DURATION,
                    otel_labels("process", destination, error),
                )
            }),
        }
    }
}

/// The OpenTelemetry keys of a queue: kept for the process (the first
/// [`KEPT_QUEUES`] queues seen; a process reads from one or a few), else made
/// for the batch.
pub(super) enum QueueKeys {
    Kept(&'static OtelKeys),
    Made(Box<OtelKeys>),
}

impl std::ops::Deref for QueueKeys {
    type Target = OtelKeys;
    fn deref(&self) -> &OtelKeys {
        match self {
            Self::Kept(k) => k,
            Self::Made(k) => k,
        }
    }
}

/// How many queues' keys are kept (leaked: a few hundred bytes each).
const KEPT_QUEUES: usize = 64;

/// The keys of the first queue asked for, so a process reading from one
/// queue takes no lock.
static FIRST: OnceLock<&'static OtelKeys> = OnceLock::new();
/// The keys of the other queues.
static KEPT: Mutex<Vec<&'static OtelKeys>> = Mutex::new(Vec::new());

/// The keys of the queue `destination` (a queue name, as
/// [`names::destination_name`] gives it).
pub(super) fn otel_keys(destination: Option<&str>) -> QueueKeys {
    let first = *FIRST.get_or_init(|| Box::leak(Box::new(OtelKeys::new(destination))));
    if first.destination.as_deref() == destination {
        return QueueKeys::Kept(first);
    }
    let Ok(mut kept) = KEPT.lock() else {
        return QueueKeys::Made(Box::new(OtelKeys::new(destination)));
    };
    if let Some(k) = kept
        .iter()
        .find(|k| k.destination.as_deref() == destination)
    {
        return QueueKeys::Kept(k);
    }
    if kept.len() + 1 >= KEPT_QUEUES {
        return QueueKeys::Made(Box::new(OtelKeys::new(destination)));
    }
    let k: &'static OtelKeys = Box::leak(Box::new(OtelKeys::new(destination)));
    kept.push(k);
    QueueKeys::Kept(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failed_keys_follow_the_failure_kinds() {
        for (key, kind) in FAILED.iter().zip(FailureKind::ALL) {
            let labels: Vec<_> = key.labels().map(|l| (l.key(), l.value())).collect();
            assert_eq!(labels, [("kind", kind.as_str())]);
            assert_eq!(key.name(), names::FAILED);
        }
    }

    #[test]
    fn queue_keys_are_kept_and_equal_to_fresh_ones() {
        for d in [Some("orders"), None, Some("other"), Some("orders")] {
            let k = otel_keys(d);
            assert!(matches!(k, QueueKeys::Kept(_)));
            let fresh = OtelKeys::new(d);
            assert_eq!(k.consumed, fresh.consumed);
            assert_eq!(k.process, fresh.process);
            assert_eq!(k.destination.as_deref(), d);
        }
    }
}
