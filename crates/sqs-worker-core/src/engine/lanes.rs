//! FIFO lanes: the order in which a batch's messages may start.
//!
//! Messages without a FIFO group id ([`Message::fifo_group_id`]: a group id on
//! a standard queue is a fair-queue tenant label and orders nothing) are each
//! their own lane. Messages of one FIFO group form a lane in batch order,
//! linked by `next`. Only lane heads are ready at
//! first; a success readies the lane's next message, a failure blocks the rest
//! of the lane. No allocation beyond two vectors, and none at all for a batch
//! without FIFO group ids.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;

use crate::message::Message;

pub(crate) const NONE: u32 = u32::MAX;

pub(crate) struct Lanes {
    /// `next[i]`: the index of the next message in i's group, or `NONE`.
    /// Empty for a batch without group ids (every lane is one message).
    next: Vec<u32>,
    /// Lane heads not started yet, for a batch without group ids: they start
    /// in batch order, and nothing else ever becomes ready.
    heads: Range<u32>,
    /// Indices ready to start, in order (batches with group ids).
    ready: VecDeque<u32>,
}

impl Lanes {
    pub(crate) fn plan(batch: &[Message]) -> Self {
        let n = batch.len();
        if batch.iter().all(|m| m.fifo_group_id().is_none()) {
            return Self {
                next: Vec::new(),
                heads: 0..n as u32,
                ready: VecDeque::new(),
            };
        }
        let mut next = vec![NONE; n];
        let mut ready = VecDeque::with_capacity(n);
        let mut last: HashMap<&str, u32> = HashMap::new();
        for (i, m) in batch.iter().enumerate() {
            let i = i as u32;
            match m.fifo_group_id() {
                None => ready.push_back(i),
                Some(g) => match last.insert(g, i) {
                    Some(prev) => next[prev as usize] = i,
                    None => ready.push_back(i),
                },
            }
        }
        Self {
            next,
            heads: 0..0,
            ready,
        }
    }

    /// The message after `i` in its lane, or `NONE`.
    pub(crate) fn next(&self, i: u32) -> u32 {
        self.next.get(i as usize).copied().unwrap_or(NONE)
    }

    /// Whether a message is ready to start.
    pub(crate) fn has_ready(&self) -> bool {
        !self.heads.is_empty() || !self.ready.is_empty()
    }

    /// The next message to start, in order.
    pub(crate) fn pop_ready(&mut self) -> Option<u32> {
        self.heads.next().or_else(|| self.ready.pop_front())
    }

    /// `i` may start (its predecessor in the lane succeeded).
    pub(crate) fn push_ready(&mut self, i: u32) {
        self.ready.push_back(i);
    }

    /// Nothing more starts.
    pub(crate) fn clear_ready(&mut self) {
        self.heads = 0..0;
        self.ready.clear();
    }

    /// The rest of `i`'s lane after it, in order.
    pub(crate) fn rest_of_lane(&self, i: u32) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors(Some(self.next(i)), |&j| (j != NONE).then(|| self.next(j)))
            .take_while(|&j| j != NONE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_groups_as_linked_lanes() {
        let b: Vec<Message> = ["A", "B", "A", "", "B", "A"]
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let m = Message::builder(i.to_string(), "");
                if g.is_empty() {
                    m.build()
                } else {
                    m.group_id(*g).sequence_number(i.to_string()).build()
                }
            })
            .collect();
        let mut l = Lanes::plan(&b);
        assert!(l.has_ready());
        let ready: Vec<u32> = std::iter::from_fn(|| l.pop_ready()).collect();
        assert_eq!(ready, vec![0, 1, 3]);
        assert!(!l.has_ready());
        l.push_ready(2);
        assert_eq!(l.pop_ready(), Some(2));
        assert_eq!(l.rest_of_lane(0).collect::<Vec<_>>(), vec![2, 5]);
        assert_eq!(l.rest_of_lane(1).collect::<Vec<_>>(), vec![4]);
        assert_eq!(l.rest_of_lane(3).count(), 0);
    }

    #[test]
    fn fair_queue_groups_form_no_lanes() {
        let b: Vec<Message> = (0..3)
            .map(|i| {
                Message::builder(i.to_string(), "")
                    .group_id("t1")
                    .source("https://sqs.eu-west-1.amazonaws.com/1/q")
                    .build()
            })
            .collect();
        let mut l = Lanes::plan(&b);
        assert!(l.next.is_empty(), "no lane map on a standard queue");
        let ready: Vec<u32> = std::iter::from_fn(|| l.pop_ready()).collect();
        assert_eq!(ready, vec![0, 1, 2]);
        assert_eq!(l.rest_of_lane(0).count(), 0);
    }

    #[test]
    fn a_batch_without_groups_starts_in_order() {
        let b: Vec<Message> = (0..3)
            .map(|i| Message::builder(i.to_string(), "").build())
            .collect();
        let mut l = Lanes::plan(&b);
        assert_eq!(l.next(1), NONE);
        assert_eq!(l.rest_of_lane(0).count(), 0);
        assert_eq!(l.pop_ready(), Some(0));
        l.clear_ready();
        assert!(!l.has_ready());
        assert_eq!(l.pop_ready(), None);
    }
}
