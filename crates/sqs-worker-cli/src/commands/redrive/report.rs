//! What a redrive did, and its summary.

use std::collections::BTreeMap;

use crate::format;

/// Counts of a redrive run.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Moved (sent and deleted; in a dry run: would be sent), by destination.
    moved_to: BTreeMap<String, u64>,
    /// Left: not matching the filters.
    pub(super) filtered: u64,
    /// Dead-lettered by SQS itself (no `SqsWorker.*` attributes).
    pub(super) by_sqs: u64,
    /// Left: no source queue, by reason.
    unroutable: BTreeMap<String, u64>,
    /// Left: the send failed, by destination and reason.
    send_failed: BTreeMap<String, u64>,
    /// Sent but not deleted from the DLQ: now in both queues.
    pub(super) not_deleted: u64,
    /// Held messages that could not be released (they reappear on their own).
    pub(super) not_released: usize,
    /// The scan stopped early: held messages reappeared (see `Scan::incomplete`).
    pub(super) incomplete: bool,
    /// The `StartMessageMoveTask` handle, when one was started.
    pub(super) move_task: Option<String>,
}

impl Tally {
    pub(super) fn moved(&mut self, dest: &str, n: usize) {
        *self.moved_to.entry(dest.to_owned()).or_default() += n as u64;
    }

    pub(super) fn unroutable(&mut self, why: String) {
        *self.unroutable.entry(why).or_default() += 1;
    }

    pub(super) fn send_failed(&mut self, dest: &str, why: String) {
        *self
            .send_failed
            .entry(format!("{dest}: {why}"))
            .or_default() += 1;
    }

    /// Whether some message that should have moved did not.
    pub(super) fn failed(&self) -> bool {
        !self.unroutable.is_empty()
            || !self.send_failed.is_empty()
            || self.not_deleted > 0
            || self.incomplete
    }

    pub(super) fn print(&self, dlq: &str, dry_run: bool) {
        let moved: u64 = self.moved_to.values().sum();
        let mut t = format::table(&["outcome", "messages"]);
        let verb = if dry_run { "would move" } else { "moved" };
        for (dest, n) in &self.moved_to {
            t.add_row(vec![format!("{verb} to {dest}"), n.to_string()]);
        }
        t.add_row(vec![format!("{verb} (total)"), moved.to_string()]);
        t.add_row(vec![
            "left: not matching the filter".to_owned(),
            self.filtered.to_string(),
        ]);
        let by_sqs = match (&self.move_task, dry_run) {
            (Some(_), _) => "dead-lettered by SQS: handed to StartMessageMoveTask",
            (None, true) => "dead-lettered by SQS: would go to StartMessageMoveTask",
            (None, false) => "left: dead-lettered by SQS",
        };
        t.add_row(vec![by_sqs.to_owned(), self.by_sqs.to_string()]);
        for (why, n) in &self.unroutable {
            t.add_row(vec![
                format!("left: {}", format::clip(why, 70)),
                n.to_string(),
            ]);
        }
        for (why, n) in &self.send_failed {
            t.add_row(vec![
                format!("left, send failed: {}", format::clip(why, 60)),
                n.to_string(),
            ]);
        }
        t.add_row(vec![
            "sent but not deleted (now in both queues)".to_owned(),
            self.not_deleted.to_string(),
        ]);
        let title = if dry_run {
            format!("Redrive of {dlq} (dry run: nothing was changed)")
        } else {
            format!("Redrive of {dlq}")
        };
        println!("{title}\n{t}");
        if let Some(handle) = &self.move_task {
            println!(
                "SQS moves the {} message(s) it dead-lettered itself back to their sources \
                 (task {handle}); follow it with `sqs-worker stats`.",
                self.by_sqs
            );
        }
        if self.incomplete {
            eprintln!(
                "The scan stopped early: held messages reappeared before their hold was \
                 renewed, so some dead letters may not have been read. Run it again, with a \
                 larger --visibility-timeout."
            );
        }
        if self.not_released > 0 {
            eprintln!(
                "{} message(s) could not be released; they reappear when their visibility \
                 timeout ends.",
                self.not_released
            );
        }
    }
}
