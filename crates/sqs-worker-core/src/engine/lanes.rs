//! FIFO lanes: the order in which a batch's messages may start.
//!
//! Messages without a group id are each their own lane. Messages of one group
//! form a lane in batch order, linked by `next`. Only lane heads are ready at
//! first; a success readies the lane's next message, a failure blocks the rest
//! of the lane. No allocation beyond two vectors, and no map at all for a
//! batch without group ids.

use std::collections::{HashMap, VecDeque};

use crate::message::Message;

pub(crate) const NONE: u32 = u32::MAX;

pub(crate) struct Lanes {
    /// `next[i]`: the index of the next message in i's group, or `NONE`.
    pub(crate) next: Vec<u32>,
    /// Indices ready to start, in batch order.
    pub(crate) ready: VecDeque<u32>,
}

impl Lanes {
    pub(crate) fn plan(batch: &[Message]) -> Self {
        let n = batch.len();
        let mut next = vec![NONE; n];
        let mut ready = VecDeque::with_capacity(n);
        if batch.iter().all(|m| m.group_id().is_none()) {
            ready.extend(0..n as u32);
            return Self { next, ready };
        }
        let mut last: HashMap<&str, u32> = HashMap::new();
        for (i, m) in batch.iter().enumerate() {
            let i = i as u32;
            match m.group_id() {
                None => ready.push_back(i),
                Some(g) => match last.insert(g, i) {
                    Some(prev) => next[prev as usize] = i,
                    None => ready.push_back(i),
                },
            }
        }
        Self { next, ready }
    }

    /// The rest of `i`'s lane after it, in order.
    pub(crate) fn rest_of_lane(&self, i: u32) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors(Some(self.next[i as usize]), |&j| {
            (j != NONE).then(|| self.next[j as usize])
        })
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
                    m.group_id(*g).build()
                }
            })
            .collect();
        let l = Lanes::plan(&b);
        assert_eq!(l.ready, VecDeque::from(vec![0, 1, 3]));
        assert_eq!(l.rest_of_lane(0).collect::<Vec<_>>(), vec![2, 5]);
        assert_eq!(l.rest_of_lane(1).collect::<Vec<_>>(), vec![4]);
        assert_eq!(l.rest_of_lane(3).count(), 0);
    }
}
