//! The simulated broker's queues: first in, first out, at least once. A
//! consumer holds what it took until it acknowledges or gives it back; a
//! consumer that dies gives back everything it held, at the head. A
//! capped queue drops its oldest ready message past the cap (what a
//! consumer holds does not count, as in RabbitMQ).

use std::collections::{BTreeMap, VecDeque};

use dbaas::model::wire::SyncItem;

/// One durable sync queue.
#[derive(Clone, Debug, Default)]
pub struct Queue {
    ready: VecDeque<(u64, SyncItem)>,
    held: BTreeMap<u64, SyncItem>,
    next_token: u64,
    /// The next message is confirmed to its publisher, then lost.
    pub lose_next: bool,
}

impl Queue {
    /// Appends `item`, dropping the oldest ready ones past `cap`.
    pub fn push(&mut self, item: SyncItem, cap: usize) {
        if std::mem::take(&mut self.lose_next) {
            return;
        }
        self.next_token += 1;
        self.ready.push_back((self.next_token, item));
        while self.ready.len() > cap {
            self.ready.pop_front();
        }
    }

    /// Hands up to `n` messages to the consumer.
    pub fn take(&mut self, n: usize) -> Vec<(u64, SyncItem)> {
        let n = n.min(self.ready.len());
        let taken: Vec<(u64, SyncItem)> = self.ready.drain(..n).collect();
        for (token, item) in &taken {
            self.held.insert(*token, item.clone());
        }
        taken
    }

    pub fn ack(&mut self, tokens: &[u64]) {
        for t in tokens {
            self.held.remove(t);
        }
    }

    /// Puts these held messages back at the head, in their order.
    pub fn requeue(&mut self, tokens: &[u64]) {
        let mut back: Vec<(u64, SyncItem)> = tokens
            .iter()
            .filter_map(|t| self.held.remove(t).map(|item| (*t, item)))
            .collect();
        back.sort_by_key(|(t, _)| *t);
        for entry in back.into_iter().rev() {
            self.ready.push_front(entry);
        }
    }

    /// The consumer died: everything it held goes back.
    pub fn consumer_died(&mut self) {
        let tokens: Vec<u64> = self.held.keys().copied().collect();
        self.requeue(&tokens);
    }
}
