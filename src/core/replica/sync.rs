//! Sync deliveries in: a drain's fence, the lineage followed, and the
//! admitted writes kept by their first seq until they can be applied.

use super::{Delivered, Level, ReplicaCore, Run, Token};
use crate::model::wire::{Stamp, SyncBatch, SyncItem, SyncMessage};
use crate::model::{Follow, Lineage};

use super::Mutation;

/// What one group of sync deliveries came to, said once for the group.
#[derive(Default)]
struct Tally {
    foreign: u64,
    stale: u64,
    diverged: bool,
}

impl ReplicaCore {
    pub(super) fn syncs(&mut self, batch: Vec<Delivered<SyncItem>>) {
        let mut tally = Tally::default();
        for Delivered { token, item } in batch {
            self.sync_item(token, item, &mut tally);
        }
        self.tallied(tally);
    }

    /// The writes of a catch-up part: judged and kept as a sync's are,
    /// with no delivery to settle (the part was acknowledged as it came).
    pub(super) fn caught_up_writes(&mut self, batch: SyncBatch) {
        let mut tally = Tally::default();
        self.writes(None, batch, &mut tally);
        self.tallied(tally);
    }

    fn tallied(&mut self, tally: Tally) {
        if tally.foreign + tally.stale > 0 {
            let (foreign, stale) = (tally.foreign, tally.stale);
            self.log(
                Level::Warn,
                format!(
                    "sync messages of another cluster ({foreign}) or a deposed master ({stale}) dropped"
                ),
            );
        }
        if tally.diverged {
            self.resync("it holds writes the new master's history does not");
        }
    }

    fn sync_item(&mut self, token: Token, item: Result<(Stamp, SyncItem), String>, t: &mut Tally) {
        let (stamp, item) = match item {
            Ok(m) => m,
            Err(e) => {
                self.log(Level::Warn, format!("bad sync message dropped: {e}"));
                return self.ack(vec![token]);
            }
        };
        if stamp.cluster != self.cluster {
            t.foreign += 1;
            return self.ack(vec![token]);
        }
        match item {
            SyncItem::Fence { worker, nonce } => {
                self.fence_seen(worker, nonce);
                self.ack(vec![token]);
            }
            SyncItem::Writes(batch) => self.writes(Some(token), batch, t),
        }
    }

    fn writes(&mut self, token: Option<Token>, batch: SyncBatch, t: &mut Tally) {
        t.diverged |= self.follow(&batch.lineage);
        let run = Run {
            writes: admitted(&self.lineage, batch.writes),
            token,
        };
        let Some(first) = run.writes.first().map(|m| m.seq) else {
            t.stale += 1;
            return self.ack(token.into_iter().collect());
        };
        let known = self.pending.get(&first).map_or(0, Run::last);
        if run.last() <= self.horizon().max(known) {
            return self.ack(token.into_iter().collect()); // a duplicate
        }
        // A longer batch from the same seq replaces a shorter one.
        if let Some(shorter) = self.pending.insert(first, run) {
            self.ack(shorter.token.into_iter().collect());
        }
    }

    /// Follows the sender's lineage if it is newer; true if this replica
    /// holds, or is applying, writes the new lineage does not admit.
    fn follow(&mut self, sender: &Lineage) -> bool {
        let judged = match self.mutation {
            Some(Mutation::JudgeAgainstApplied) => self.applied,
            _ => self.horizon(),
        };
        match self.lineage.follow(sender, judged) {
            Follow::Kept => false,
            Follow::Adopted => {
                self.refilter();
                !self.in_flight_admitted()
            }
            Follow::Diverged => {
                self.refilter();
                true
            }
        }
    }

    /// Whether the lineage admits every write of the run being applied
    /// (it was admitted under the lineage of the time it began).
    fn in_flight_admitted(&self) -> bool {
        if self.mutation == Some(Mutation::JudgeAgainstApplied) {
            return true;
        }
        self.applying.as_ref().is_none_or(|run| {
            run.owners
                .iter()
                .all(|&(seq, epoch)| self.lineage.admits(epoch, seq))
        })
    }

    /// Drops what the lineage no longer admits from the pending runs.
    pub(super) fn refilter(&mut self) {
        let mut dropped = Vec::new();
        for (_, run) in std::mem::take(&mut self.pending) {
            let writes = admitted(&self.lineage, run.writes);
            match writes.first().map(|m| m.seq) {
                Some(first) => {
                    let token = run.token;
                    self.pending.insert(first, Run { writes, token });
                }
                None => dropped.extend(run.token),
            }
        }
        if !dropped.is_empty() {
            let n = dropped.len();
            self.log(
                Level::Debug,
                format!("{n} pending syncs of a deposed master dropped"),
            );
            self.ack(dropped);
        }
    }
}

/// The writes of a batch that `lineage` admits: the longest such prefix
/// (past a write it refuses, the sender's history is not this one).
fn admitted(lineage: &Lineage, writes: Vec<SyncMessage>) -> Vec<SyncMessage> {
    writes
        .into_iter()
        .take_while(|m| lineage.admits(m.epoch, m.seq))
        .collect()
}
