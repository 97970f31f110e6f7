//! Runs of admitted writes: when one may start, what it holds (everything
//! consecutive after the applied seq), and what its end settles.

use super::{Effect, InFlight, Level, ReplicaCore, Token};
use crate::model::wire::SyncMessage;

impl ReplicaCore {
    /// Whether a run may start: none is in flight, no snapshot is about to
    /// replace the store, the store has not diverged, and the replica is
    /// caught up, catching up from the master's log, or draining (a drain applies even before a first
    /// snapshot: an elected replica may have had none).
    fn may_apply(&self) -> bool {
        self.applying.is_none()
            && !self.snapshot.replaces_store()
            && !self.diverged
            && !self.closing
            && (self.ready
                || self.snapshot.catching_up()
                || self.drain.as_ref().is_some_and(|d| d.applies()))
    }

    /// Starts the run of pending writes that follows the applied seq, if
    /// one may start; reads go on being served meanwhile.
    pub(super) fn pump(&mut self) {
        if !self.may_apply() {
            return;
        }
        let (writes, tokens) = self.next_run();
        let Some(through) = writes.last().map(|m| m.seq) else {
            return;
        };
        let owners = writes.iter().map(|m| (m.seq, m.epoch)).collect();
        self.applying = Some(InFlight {
            through,
            owners,
            tokens,
        });
        let lineage = self.lineage.clone();
        self.fx.push(Effect::Apply { writes, lineage });
    }

    /// Takes the pending writes that follow the applied seq without a
    /// gap, and their tokens; acks those wholly applied already.
    fn next_run(&mut self) -> (Vec<SyncMessage>, Vec<Token>) {
        let mut next = self.applied.saturating_add(1);
        let (mut writes, mut tokens, mut settled) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > next {
                break; // a gap: wait for what fills it
            }
            let run = entry.remove();
            if run.last() < next {
                settled.extend(run.token);
                continue;
            }
            let from = next;
            // A restore is not applied as a write: the run stops before it.
            let run = match self.hold_restore(run, from, &mut settled) {
                Ok(before) => {
                    writes.extend(before);
                    break;
                }
                Err(run) => run,
            };
            next = run.last().saturating_add(1);
            // Batches may overlap, and one may start below what a snapshot
            // already holds.
            writes.extend(run.writes.into_iter().filter(|m| m.seq >= from));
            tokens.extend(run.token);
        }
        self.ack(settled);
        (writes, tokens)
    }

    /// The run in flight ended with the store at `seq`.
    pub(super) fn applied(&mut self, seq: u64, error: Option<String>) {
        let Some(run) = self.applying.take() else {
            let msg = format!("an apply result nobody waited for dropped (seq {seq})");
            return self.log(Level::Warn, msg);
        };
        // A sync that failed to apply is not asked for again: the resync's
        // snapshot holds it.
        self.ack(run.tokens);
        if seq > self.applied {
            self.behind_since = None;
        }
        self.applied = self.applied.max(seq);
        if let Some(e) = error {
            self.resync(&format!("a sync failed to apply: {e}"));
        }
    }
}
